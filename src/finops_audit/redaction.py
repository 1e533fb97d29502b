"""Keep secrets off the disk: redaction and keyed pseudonyms, applied by the writer.

Runs on the writer's side, never in the tool call, and before any size cap
(a preview is made from the redacted form). For each entry:

1. **Sensitive keys**, decided by the key's words (:mod:`finops_audit._secret_keys`:
   ``db_password``, ``x-api-key``, ``stripe_secret_key`` are secret;
   ``max_tokens``, ``token_count``, ``author`` are not), plus ``extra_keys``,
   at any depth: the whole value becomes ``"[REDACTED]"``. Every string or
   number inside it (nested ones too) is also removed from the error message.
2. **Secret-shaped values** anywhere in parameters, error messages, caller
   fields (user, client, session, request and auth client ids) and
   ``audit_context`` labels (keys and values): AWS secret access keys, AWS
   access key ids, bearer/basic credentials, JWTs, private key blocks, plus
   ``extra_patterns``: the match becomes ``"[REDACTED]"``. A label under a
   sensitive key is redacted whole.
3. **Pseudonyms**: with an HMAC key, AWS account ids, ARNs and the values of
   ``hmac_keys`` become ``"hmac:<first 32 hex digits of HMAC-SHA256>"``: private
   on disk, yet :meth:`pseudonym` of the original finds the rows again. The
   HMAC key is the key's pseudonym subkey (HKDF, ``_chain.pseudonym_key``),
   so no pseudonym is ever a valid row hash or signature.
4. A ``custom`` callable gets the decoded parameters last; if it raises, the
   parameters are stored as ``{"$redaction_failed": "<ExceptionType>"}``.

A pre-check over the whole batch's raw bytes (:mod:`finops_audit._prescan`)
skips the JSON walk for the common entry that has no candidate key or value:
a few C passes per batch, not per row or per word.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from ._capping import dumps, loads
from ._chain import pseudonym_key
from ._prescan import Prescan
from ._secret_keys import KeyRule

if TYPE_CHECKING:
    from ._mcp_context import Caller

__all__ = ["DEFAULT_SENSITIVE_KEYS", "REDACTED", "Redactor"]

REDACTED = "[REDACTED]"
FAILED_KEY = "$redaction_failed"

#: Normalised (lower case, no separators) key names whose values are never stored.
DEFAULT_SENSITIVE_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "clientsecret",
        "secretkey",
        "secretaccesskey",
        "awssecretaccesskey",
        "token",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "sessiontoken",
        "authtoken",
        "apikey",
        "xapikey",
        "apitoken",
        "authorization",
        "proxyauthorization",
        "auth",
        "cookie",
        "setcookie",
        "credentials",
        "credential",
        "privatekey",
        "sshkey",
        "signingkey",
        "encryptionkey",
        "connectionstring",
        "dsn",
        "pin",
        "otp",
        "mfacode",
    }
)

_SEPARATORS = re.compile(r"[\s_\-.:/]")
_UPPER = re.compile(r"[A-Z]")
_LOWER = re.compile(r"[a-z]")
# Literal roots that any sensitive key or secret-shaped value contains once
# lower-cased and stripped of separators; a hit only means "walk this entry".
# Value roots; the key roots come from :data:`finops_audit._secret_keys.ROOTS`.
_ROOTS = frozenset(
    {
        "bearer",
        "basic",
        "eyj",
        "akia",
        "asia",
        "aida",
        "aroa",
        "anpa",
        "anva",
        "agpa",
    }
)
# Extra patterns that can match a decoded string but not the same text inside
# its JSON quotes (anchors, lookarounds): with one, every entry is walked.
_CONTEXT_SENSITIVE = re.compile(r"\^|\$|\\[AZ]|\(\?<?[=!]")

_VALUE_PATTERNS = (
    # PEM private key blocks (RSA, EC, OPENSSH, encrypted, ...)
    r"-----BEGIN[A-Z ]*PRIVATE KEY-----.*?(?:-----END[A-Z ]*PRIVATE KEY-----|\Z)",
    # Authorization: Bearer <token> / Basic <credentials>
    r"(?i:\b(?:bearer|basic)\s+)[A-Za-z0-9\-._~+/]{8,}=*",
    # AWS access key ids
    r"\b(?:AKIA|ASIA|AIDA|AROA|ANPA|ANVA|AGPA)[A-Z0-9]{16}\b",
    # AWS secret access keys: 40 base64 characters (mixed case checked in _secret_or_keep)
    r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
    # JWTs
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
)
_ACCOUNT_ID = r"(?<![0-9])[0-9]{12}(?![0-9])"
_ARN = r"\barn:aws[a-zA-Z-]*:[a-zA-Z0-9-]*:[a-z0-9-]*:[0-9]{0,12}:[^\s\"',]+"


def normalise_key(key: str) -> str:
    return _SEPARATORS.sub("", key).lower()


class Redactor:
    """Redaction rules, compiled once; :meth:`parameters` and :meth:`message` apply them."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        extra_keys: Iterable[str] = (),
        extra_patterns: Iterable[str] = (),
        hmac_key: str | bytes | None = None,
        hmac_keys: Iterable[str] = (),
        pseudonymize_aws_ids: bool = True,
        custom: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.enabled = enabled
        extra_keys = list(extra_keys)
        extra_patterns = list(extra_patterns)
        hmac_keys = list(hmac_keys)
        self._rule = KeyRule(extra_keys, exact=DEFAULT_SENSITIVE_KEYS)
        self._secret_key = self._rule.secret
        patterns = [*_VALUE_PATTERNS, *extra_patterns]
        for p in extra_patterns:
            re.compile(p)  # fail at start-up on a bad pattern, naming it
        self._values = re.compile("|".join(f"(?:{p})" for p in patterns), re.DOTALL)
        key = hmac_key.encode() if isinstance(hmac_key, str) else hmac_key
        # pseudonyms use their own HKDF subkey of AUDIT_HMAC_KEY, never the chain's
        self._hmac_key = pseudonym_key(key)
        self._hmac_names = {normalise_key(k) for k in hmac_keys}
        ids = [_ACCOUNT_ID, _ARN] if (self._hmac_key and pseudonymize_aws_ids) else []
        self._ids = re.compile("|".join(f"(?:{p})" for p in ids)) if ids else None
        self._custom = custom
        self._extra_values = [re.compile(p) for p in extra_patterns]
        # Names with a quote or backslash could end in a declared plain name
        # (``a"max_tokens``): then no declared key is blanked in the pre-check.
        odd = any(c in k for k in [*extra_keys, *hmac_keys] for c in '"\\')
        self._prescan = Prescan(
            _ROOTS | self._rule.roots | self._hmac_names,
            ids=self._ids is not None,
            is_plain=None if odd else self._plain,
        )
        self._walk_all = custom is not None or any(
            _CONTEXT_SENSITIVE.search(p) for p in extra_patterns
        )
        # Caller fields repeat (one user, one session): decide each text once.
        self._field = lru_cache(maxsize=4096)(self._scrub_field)
        # An audit_context's labels repeat call after call: decide each set once.
        self._labels = lru_cache(maxsize=1024)(self._scrub_labels)
        self._short = 0 if extra_patterns else _SHORTEST_SECRET
        #: Parameter values shorter than this match no pattern (12: an account id).
        self._min_text = 0 if extra_patterns else 12 if self._ids is not None else _SHORTEST_SECRET

    def _plain(self, name: str) -> bool:
        """Would the walk leave a key of this name (and its place) as it is?"""
        return not self._secret_key(name) and normalise_key(name) not in self._hmac_names

    @staticmethod
    def _secret_or_keep(match: re.Match[str]) -> str:
        found = match.group(0)
        # 40 base64 characters are an AWS secret only if mixed case (not a hex digest).
        if (
            len(found) == 40
            and not found.startswith(("-", "eyJ"))
            and not (_UPPER.search(found) and _LOWER.search(found))
        ):
            return found
        return REDACTED

    def pseudonym(self, value: str) -> str:
        """The stored stand-in for ``value`` (requires an HMAC key)."""
        if self._hmac_key is None:
            raise ValueError("no HMAC key is configured (AUDIT_HMAC_KEY)")
        digest = hmac.new(self._hmac_key, value.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"hmac:{digest[:32]}"

    def _scrub_text(self, text: str) -> str:
        text = self._values.sub(self._secret_or_keep, text)
        if self._ids is not None:
            text = self._ids.sub(lambda m: self.pseudonym(m.group(0)), text)
        return text

    def message(self, text: str | None) -> str | None:
        """Redact secret-shaped values (and pseudonymise ids) in an error message."""
        if text is None or not self.enabled:
            return text
        try:
            return self._scrub_text(text)
        except Exception:
            return REDACTED

    def parameters(self, raw: bytes) -> bytes:
        """Redact an encoded parameters document; never raises."""
        return self.entry(raw, None)[0]

    def candidates(self, raws: list[bytes]) -> list[bool]:
        """For each raw parameters document of a batch: does it need the walk?

        A few C passes over the whole batch (:mod:`finops_audit._prescan`); a
        ``False`` is certain, a ``True`` only costs a walk. Extra patterns are
        searched per document, on its decoded text.
        """
        if self._walk_all:
            return [True] * len(raws)
        flags = self._prescan.flags(raws)
        if self._extra_values:
            extra = self._extra_values
            for i, raw in enumerate(raws):
                if not flags[i] and (
                    b"\\" in raw or any(p.search(raw.decode("utf-8", "replace")) for p in extra)
                ):
                    flags[i] = True
        return flags

    def entries(self, batch: list[tuple[bytes, str | None]]) -> list[tuple[bytes, str | None]]:
        """Redact a batch of (parameters, error message) pairs; never raises."""
        if not self.enabled:
            return batch
        try:
            flags = self.candidates([raw for raw, _ in batch])
        except Exception:
            flags = [True] * len(batch)
        message = self.message
        return [
            self.entry(raw, error, candidate=True)
            if flag
            else (raw, message(error) if error is not None else None)
            for (raw, error), flag in zip(batch, flags, strict=True)
        ]

    def entry(
        self, raw: bytes, error: str | None, *, candidate: bool | None = None
    ) -> tuple[bytes, str | None]:
        """Redact one entry's parameters and error message; never raises.

        Values found under sensitive keys are also removed from the error
        message: ``ValueError: bad password hunter2`` must not keep it either.
        """
        if not self.enabled:
            return raw, error
        if candidate is None:
            candidate = self.candidates([raw])[0]
        if not candidate:
            return raw, self.message(error) if error is not None else None
        found: list[tuple[str, str]] = []
        try:
            value = loads(raw)  # an integer beyond 64 bits stays exact, not a float
        except ValueError:
            cleaned_raw = self._scrub_text(raw.decode("utf-8", "replace")).encode("utf-8")
            return cleaned_raw, self.message(error)
        try:
            cleaned = self._walk(value, found)
            if self._custom is not None and isinstance(cleaned, dict):
                cleaned = self._custom(cleaned)
            out = dumps(cleaned)
        except Exception as exc:
            out = orjson.dumps({FAILED_KEY: type(exc).__name__})
        if error is not None:
            try:
                for secret, stand_in in sorted(found, key=lambda f: len(f[0]), reverse=True):
                    error = error.replace(secret, stand_in)
            except Exception:
                error = REDACTED
            error = self.message(error)
        return out, error

    def _walk(self, value: Any, found: list[tuple[str, str]]) -> Any:
        cls = value.__class__
        if cls is str:  # JSON's own types first, by exact type: no ABC checks per value
            # No pattern matches fewer characters: most values skip the regex.
            return value if len(value) < self._min_text else self._scrub_text(value)
        if cls in _SCALARS:
            return value
        if cls is dict:
            return self._walk_dict(value, found)
        if cls is list or isinstance(value, list):
            return [self._walk(v, found) for v in value]
        if isinstance(value, str):
            return self._scrub_text(value)
        if isinstance(value, Mapping):
            return self._walk_dict(value, found)
        return value

    def _walk_dict(self, value: Mapping[str, Any], found: list[tuple[str, str]]) -> Any:
        secret = self._secret_key
        keyed = self._hmac_key is not None
        out: dict[str, Any] = {}
        for k, v in value.items():
            if secret(k):
                out[k] = REDACTED
                _leaves(v, found, 0)
            elif keyed and v is not None and normalise_key(k) in self._hmac_names:
                text = v if isinstance(v, str) else dumps(v).decode()
                out[k] = stand_in = self.pseudonym(text)
                if len(text) >= _MIN_SECRET:
                    found.append((text, stand_in))
            else:
                out[k] = self._walk(v, found)
        return out

    # ------------------------------------------------------------------ caller fields

    def _scrub_field(self, text: str) -> str:
        """Secret-shaped values in a caller field or label (no pseudonyms: ids stay ids)."""
        try:
            return self._values.sub(self._secret_or_keep, text)
        except Exception:
            return REDACTED

    def _scrub_labels(self, items: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        """Labels as stored: a value under a sensitive key whole, the rest scrubbed."""
        field = self._field
        secret = self._secret_key
        return tuple((field(k), REDACTED if secret(k) else field(v)) for k, v in items)

    def caller(self, caller: Caller | None) -> Caller | None:
        """Redact a caller's user, client, session, request and auth client ids and labels.

        trace and span ids are hex digits this library formats itself. A label
        under a sensitive key is redacted whole; label keys are scrubbed too.
        """
        if caller is None or not self.enabled:
            return caller
        field = self._field
        # No built-in pattern matches fewer characters (short request ids skip the cache).
        n = self._short
        user, name, version, session, request, auth, trace, span, labels = caller
        if labels:
            try:
                labels = dict(self._labels(tuple(labels.items())))
            except Exception:
                labels = {FAILED_KEY: REDACTED}
        return (
            user if user is None or len(user) < n else field(user),
            name if name is None or len(name) < n else field(name),
            version if version is None or len(version) < n else field(version),
            session if session is None or len(session) < n else field(session),
            request if request is None or len(request) < n else field(request),
            auth if auth is None or len(auth) < n else field(auth),
            trace,
            span,
            labels,
        )

    def safe_caller(self, caller: Caller | None) -> Caller | None:
        """:meth:`caller` that never raises: a caller it cannot redact is stored redacted."""
        try:
            return self.caller(caller)
        except Exception:
            return None if caller is None else _FAILED_CALLER

    def callers(self, callers: Sequence[Caller | None]) -> list[Caller | None]:
        """:meth:`caller` for a batch; never raises."""
        if not self.enabled:
            return list(callers)
        return [self.safe_caller(c) for c in callers]


#: The shortest text a built-in value pattern matches ("Basic " and 8 characters).
_SHORTEST_SECRET = 14
_SCALARS = frozenset({int, float, bool, type(None)})
#: Values shorter than this are not removed from error messages (too likely to
#: be ordinary words or numbers of the message itself).
_MIN_SECRET = 4
_FAILED_CALLER: Caller = (
    REDACTED,
    REDACTED,
    REDACTED,
    REDACTED,
    REDACTED,
    REDACTED,
    None,
    None,
    {FAILED_KEY: REDACTED},
)


def _leaves(value: Any, found: list[tuple[str, str]], depth: int) -> None:
    """Every string and number inside a sensitive value, to remove from the error message."""
    if depth > 64:
        return
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = value if isinstance(value, str) else str(value)
        if len(text) >= _MIN_SECRET:
            found.append((text, REDACTED))
    elif isinstance(value, list):
        for v in value:
            _leaves(v, found, depth + 1)
    elif isinstance(value, Mapping):
        for v in value.values():
            _leaves(v, found, depth + 1)
