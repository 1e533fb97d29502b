"""Field-level encryption at rest: AES-256-GCM (``cryptography``'s AESGCM), writer side.

Why this shape:

* **Writer side only.** The caller hands over the same tuple as without
  encryption; the writer encrypts after redaction (secrets are removed, not
  encrypted), pseudonyms and the size caps, so previews and caps see
  plaintext that is never stored.
* **Envelope encryption.** Each writer batch draws a random 256-bit data key;
  every value is encrypted under it, and the data key is stored wrapped under
  the keyring's first key (``kid``). Rotation re-wraps data keys and never
  touches a value's ciphertext, which is what the hash chain covers
  (:mod:`finops_audit._envelope`), so ``verify`` needs no key and keeps
  passing through a rotation.
* **Binding.** A value's associated data is its row's event id, its column
  and its key path; the wrap's is the key id. A ciphertext moved to another
  row, column or key, or relabelled with another key id, fails to decrypt.
* **Nonces.** A data key encrypts one batch only, so a counter is a unique
  96-bit nonce per key with no random draw per value.

Costs (see ``benchmarks/test_bench_encryption.py``): one AES-GCM call, a
base64 and a small JSON per encrypted value; one key wrap per batch.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ._envelope import ENVELOPE_KEY, ERROR_PREFIX, OPENING, VERSION, is_envelope, marker
from ._keyring import Keyring
from ._secret_keys import key_words

if TYPE_CHECKING:
    from .config import AuditSettings
    from .redaction import Redactor

__all__ = [
    "ALL_PARAMETERS",
    "ERROR_FIELD",
    "FieldCipher",
    "FieldOpener",
    "build_cipher",
    "key_ids",
    "keyring_from_settings",
]

logger = logging.getLogger("finops_audit")

#: ``AUDIT_ENCRYPT_FIELDS`` entry meaning every parameter value.
ALL_PARAMETERS = "*"
#: ``AUDIT_ENCRYPT_FIELDS`` entry meaning the error message.
ERROR_FIELD = "error_message"
#: The writer's gap rows (``_writer.GAP_TOOL_NAME``) hold counts, never call data.
_GAP_TOOL = "__audit_gap__"
_NONCE = 12
_WRAP_AD = b"finops-audit/v1/wrap\x00"
_VALUE_AD = "finops-audit/v1\x00{}\x00{}\x00"
#: ``_value_ad(event_id, "parameters", ())`` in two constant halves (the whole document).
_DOC_AD = b"finops-audit/v1\x00"
_DOC_AD_TAIL = b"\x00parameters\x00[]"
_B64 = base64.b64encode
_WRAP_RE = re.compile(r'"\$enc":"v1","kid":"([^"\\]*)","k":"([^"\\]*)"')
_ERROR_RE = re.compile(r"\$enc:v1:([^:]*):([^:]*):")


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # config refuses a keyring without the extra
        raise RuntimeError(
            "encryption needs the crypto extra: pip install 'finops-audit[crypto]'"
        ) from exc
    return AESGCM


def keyring_from_settings(settings: AuditSettings) -> Keyring | None:
    """The keyring the settings name (already validated at start-up), or None."""
    from ._keyring import parse_keyring, read_keyring_file

    if settings.encryption_keys is not None:
        return parse_keyring(settings.encryption_keys.get_secret_value())
    if settings.encryption_keys_file is not None:
        return read_keyring_file(settings.encryption_keys_file)
    return None


def build_cipher(settings: AuditSettings, redactor: Redactor | None = None) -> FieldCipher | None:
    """The writer's cipher for these settings; None (no cost at all) without a keyring."""
    keyring = keyring_from_settings(settings)
    if keyring is None:
        return None
    hmac_names = frozenset(key_words(k) for k in settings.hmac_fields)
    has_key = settings.hmac_key is not None and redactor is not None and redactor.enabled
    return FieldCipher(keyring, settings.encrypt_fields, hmac_names if has_key else frozenset())


def _value_ad(event_id: str, column: str, path: Sequence[Any]) -> bytes:
    return _VALUE_AD.format(event_id, column).encode() + orjson.dumps(list(path))


def _escape_lookalikes(value: Any, depth: int = 0) -> Any:
    """A caller's own ``{"$enc": ...}`` dict gets ``$enc`` moved last: never read as ours."""
    if isinstance(value, dict):
        if ENVELOPE_KEY in value and next(iter(value)) == ENVELOPE_KEY and len(value) > 1:
            rest = {k: v for k, v in value.items() if k != ENVELOPE_KEY}
            value = {**rest, ENVELOPE_KEY: value[ENVELOPE_KEY]}
        if depth < 64:
            return {k: _escape_lookalikes(v, depth + 1) for k, v in value.items()}
    elif isinstance(value, list) and depth < 64:
        return [_escape_lookalikes(v, depth + 1) for v in value]
    return value


class _Batch:
    """One batch's data key: the AESGCM object, its wrap, and the nonce counter."""

    __slots__ = ("aes", "count", "kid", "wrap")

    def __init__(self, keyring: Keyring, aesgcm: Any) -> None:
        kid = keyring.primary
        kek = keyring.get(kid)
        dek = os.urandom(32)
        nonce = os.urandom(_NONCE)
        wrapped = nonce + aesgcm(kek).encrypt(nonce, dek, _WRAP_AD + kid.encode())
        self.aes = aesgcm(dek)
        self.kid = kid
        self.wrap = _B64(wrapped).decode()
        self.count = 0

    def seal(self, plain: bytes, ad: bytes) -> str:
        self.count += 1
        nonce = self.count.to_bytes(_NONCE, "big")
        return binascii.b2a_base64(
            nonce + self.aes.encrypt(nonce, plain, ad), newline=False
        ).decode()


class FieldCipher:
    """Encrypts the configured fields of formatted rows; adds each row's event id."""

    __slots__ = ("_aesgcm", "_all", "_errors", "_hmac_names", "_keyring", "_names")

    def __init__(
        self,
        keyring: Keyring,
        fields: Iterable[str] = (),
        hmac_names: frozenset[tuple[str, ...]] = frozenset(),
    ) -> None:
        chosen = [f.strip() for f in fields if f.strip()]
        self._keyring = keyring
        self._all = not chosen or ALL_PARAMETERS in chosen
        self._errors = not chosen or ERROR_FIELD in chosen
        self._names = tuple(
            w for w in (key_words(f) for f in chosen if f not in (ALL_PARAMETERS, ERROR_FIELD)) if w
        )
        self._hmac_names = hmac_names
        self._aesgcm = _aesgcm()

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def _named(self, key: str) -> bool:
        words = key_words(key)
        n = len(words)
        return any(n >= len(e) and words[n - len(e) :] == e for e in self._names)

    def rows(
        self, rows: list[tuple[Any, ...]], raws: Sequence[bytes | None]
    ) -> list[tuple[Any, ...]]:
        """``rows`` (15 columns) with fields encrypted and an event id appended (16th)."""
        batch = _Batch(self._keyring, self._aesgcm)
        ids = os.urandom(16 * len(rows)).hex()
        out = []
        for index, (row, raw) in enumerate(zip(rows, raws, strict=True)):
            event_id = ids[32 * index : 32 * index + 32]
            if row[1] == _GAP_TOOL:
                out.append((*row, event_id))
                continue
            params = self._parameters(batch, row[2], raw, event_id)
            error = row[4]
            if error is not None and self._errors:
                ad = _value_ad(event_id, "error_message", ())
                error = f"{ERROR_PREFIX}{batch.kid}:{batch.wrap}:{batch.seal(error.encode(), ad)}"
            out.append((row[0], row[1], params, row[3], error, *row[5:], event_id))
        return out

    def _parameters(self, batch: _Batch, text: str, raw: bytes | None, event_id: str) -> str:
        if self._all and text.startswith("{") and text != "{}":
            # Everything is encrypted: the whole document is one envelope (one AES-GCM
            # call a row, no JSON work); names are hidden too.
            if not self._hmac_names or "hmac:" not in text:
                return self._whole(batch, text, event_id, None)
            return self._whole_with_index(batch, text, raw, event_id)
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            doc = {"$unparsed": text}
        if not isinstance(doc, dict):
            doc = {"$value": doc}
        if not doc:
            return text
        if ENVELOPE_KEY in text:
            doc = _escape_lookalikes(doc)
        plain = self._plain_pseudonyms(doc, raw) if self._hmac_names else {}
        if self._all:
            sealed = {
                k: self._seal(batch, v, event_id, (k,), plain.get((k,))) for k, v in doc.items()
            }
        else:
            sealed = self._walk(batch, doc, event_id, (), plain)
        return orjson.dumps(sealed).decode()

    @staticmethod
    def _whole(batch: _Batch, text: str, event_id: str, index: dict[str, Any] | None) -> str:
        ct = batch.seal(text.encode(), _DOC_AD + event_id.encode() + _DOC_AD_TAIL)
        head = f'{{"$enc":"v1","kid":"{batch.kid}","k":"{batch.wrap}","ct":"{ct}"'
        if index:
            return head + ',"bi":' + orjson.dumps(index).decode() + "}"
        return head + "}"

    def _whole_with_index(self, batch: _Batch, text: str, raw: bytes | None, event_id: str) -> str:
        """The whole document sealed with the caller's originals of pseudonymised values,
        their pseudonyms kept beside it (``bi``): equality search still finds them."""
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self._whole(batch, text, event_id, None)
        plain = self._plain_pseudonyms(doc, raw) if isinstance(doc, dict) else {}
        if not plain:
            return self._whole(batch, text, event_id, None)
        index: dict[str, Any] = {}
        for path, original in plain.items():
            node = doc
            for key in path[:-1]:
                node = node[key]
            index[".".join(map(str, path))] = node[path[-1]]
            node[path[-1]] = original
        return self._whole(batch, orjson.dumps(doc).decode(), event_id, index)

    def _walk(
        self,
        batch: _Batch,
        value: Any,
        event_id: str,
        path: tuple[Any, ...],
        plain: dict[tuple[Any, ...], Any],
    ) -> Any:
        if isinstance(value, dict) and len(path) < 64:
            out = {}
            for k, v in value.items():
                here = (*path, k)
                if self._named(k):
                    out[k] = self._seal(batch, v, event_id, here, plain.get(here))
                else:
                    out[k] = self._walk(batch, v, event_id, here, plain)
            return out
        if isinstance(value, list) and len(path) < 64:
            return [self._walk(batch, v, event_id, (*path, i), plain) for i, v in enumerate(value)]
        return value

    def _seal(
        self, batch: _Batch, value: Any, event_id: str, path: tuple[Any, ...], original: Any
    ) -> dict[str, Any]:
        """One value's envelope; a pseudonymised value keeps its pseudonym as the blind index."""
        env: dict[str, Any] = {ENVELOPE_KEY: VERSION, "kid": batch.kid, "k": batch.wrap}
        if original is not None:
            env["ct"] = batch.seal(orjson.dumps(original), _value_ad(event_id, "parameters", path))
            env["bi"] = value
        else:
            env["ct"] = batch.seal(orjson.dumps(value), _value_ad(event_id, "parameters", path))
        return env

    def _plain_pseudonyms(
        self, doc: dict[str, Any], raw: bytes | None
    ) -> dict[tuple[Any, ...], Any]:
        """Path -> the caller's original scalar, for values the redactor made pseudonyms."""
        found: dict[tuple[Any, ...], Any] = {}
        if raw is None or "hmac:" not in orjson.dumps(doc).decode():
            return found
        try:
            original = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return found
        self._pair(doc, original, (), found)
        return found

    def _pair(
        self, stored: Any, original: Any, path: tuple[Any, ...], found: dict[tuple[Any, ...], Any]
    ) -> None:
        if not (isinstance(stored, dict) and isinstance(original, dict)) or len(path) > 64:
            return
        for k, v in stored.items():
            if k not in original:
                continue
            orig = original[k]
            if (
                isinstance(v, str)
                and v.startswith("hmac:")
                and key_words(k) in self._hmac_names
                and isinstance(orig, (str, int, float))
                and not isinstance(orig, bool)
            ):
                here = (*path, k)
                found[here] = orig
            else:
                self._pair(v, orig, (*path, k), found)


class FieldOpener:
    """Reader side: plaintext with the keyring, a marker without it; one warning per key id."""

    def __init__(self, keyring: Keyring | None) -> None:
        self.keyring = keyring
        self._aesgcm: Any = _aesgcm() if keyring is not None else None
        self._deks: dict[tuple[str, str], tuple[Any, str | None]] = {}
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ keys
    def _dek(self, kid: str, wrap: str) -> tuple[Any, str | None]:
        """The data key's AESGCM for (kid, wrap), or None and why not."""
        if self.keyring is None:
            return None, None
        cache_key = (kid, wrap)
        if cache_key in self._deks:
            return self._deks[cache_key]
        kek = self.keyring.get(kid)
        if kek is None:
            result: tuple[Any, str | None] = (None, f"key {kid} is not in the keyring")
        else:
            try:
                blob = base64.b64decode(wrap, validate=True)
                dek = self._aesgcm(kek).decrypt(
                    blob[:_NONCE], blob[_NONCE:], _WRAP_AD + kid.encode()
                )
                result = (self._aesgcm(dek), None)
            except Exception:
                result = (None, f"the data key does not open under key {kid} (altered or moved)")
        if len(self._deks) > 4096:
            self._deks.clear()
        self._deks[cache_key] = result
        return result

    def _warn(self, kid: str, problem: str | None) -> None:
        if kid in self._warned:
            return
        self._warned.add(kid)
        if problem is None:
            logger.warning(
                "finops_audit: entries hold values encrypted with key id %r and no keyring is "
                "set (AUDIT_ENCRYPTION_KEYS or AUDIT_ENCRYPTION_KEYS_FILE); they read as "
                '{"$encrypted": true, "kid": "%s"}',
                kid,
                kid,
            )
        else:
            logger.warning(
                "finops_audit cannot decrypt values encrypted with key id %r: %s; they read as "
                '{"$encrypted": true, "kid": "%s", "error": ...}',
                kid,
                problem,
                kid,
            )

    def _open(self, kid: str, wrap: str, ct: str, ad: bytes) -> tuple[bytes | None, str | None]:
        aes, problem = self._dek(kid, wrap)
        if aes is None:
            return None, problem
        try:
            blob = base64.b64decode(ct, validate=True)
            return aes.decrypt(blob[:_NONCE], blob[_NONCE:], ad), None
        except (binascii.Error, ValueError, Exception):
            return None, "does not decrypt (altered, or moved from another row, column or key)"

    # ------------------------------------------------------------------ values
    def parameters(self, value: Any, event_id: str | None, strict: bool = False) -> Any:
        """Decoded parameters with each envelope opened, or its marker."""
        return self._walk(value, event_id or "", (), strict)

    def _walk(self, value: Any, event_id: str, path: tuple[Any, ...], strict: bool) -> Any:
        if isinstance(value, dict):
            if is_envelope(value) and next(iter(value)) == ENVELOPE_KEY:
                return self._envelope(value, event_id, path, strict)
            if len(path) >= 64:
                return value
            return {k: self._walk(v, event_id, (*path, k), strict) for k, v in value.items()}
        if isinstance(value, list) and len(path) < 64:
            return [self._walk(v, event_id, (*path, i), strict) for i, v in enumerate(value)]
        return value

    def _envelope(
        self, env: dict[str, Any], event_id: str, path: tuple[Any, ...], strict: bool
    ) -> Any:
        kid = str(env.get("kid"))
        plain, problem = self._open(
            kid, str(env.get("k")), str(env.get("ct")), _value_ad(event_id, "parameters", path)
        )
        if plain is not None:
            try:
                return orjson.loads(plain)
            except orjson.JSONDecodeError:
                problem = "does not decrypt to JSON"
        if strict:
            raise ValueError(f"value {list(path)!r} with key {kid}: {problem or 'no keyring'}")
        self._warn(kid, problem)
        return marker(env, problem)

    def error(self, text: str | None, event_id: str | None, strict: bool = False) -> str | None:
        """An error message opened, or ``[encrypted with key k1...]``."""
        if text is None or not text.startswith(ERROR_PREFIX):
            return text
        match = _ERROR_RE.match(text)
        if match is None:
            problem: str | None = "not a valid envelope"
            kid = "?"
        else:
            kid, wrap = match.group(1), match.group(2)
            ad = _value_ad(event_id or "", "error_message", ())
            plain, problem = self._open(kid, wrap, text[match.end() :], ad)
            if plain is not None:
                return plain.decode("utf-8", "replace")
        if strict:
            raise ValueError(f"the error message with key {kid}: {problem or 'no keyring'}")
        self._warn(kid, problem)
        return (
            f"[encrypted with key {kid}: {problem}]" if problem else f"[encrypted with key {kid}]"
        )

    # ------------------------------------------------------------------ rotation
    def rewrap_text(self, text: str | None, cache: dict[tuple[str, str], str]) -> str | None:
        """``text`` with every wrap under a key that is not the first re-wrapped under it.

        Only ``kid`` and ``k`` change, never a ciphertext: the chain's view of
        the row (:func:`~finops_audit._envelope.chain_view`) stays the same.
        Raises :class:`ValueError` if a data key does not open.
        """
        if text is None or (OPENING not in text and not text.startswith(ERROR_PREFIX)):
            return text
        assert self.keyring is not None
        primary = self.keyring.primary

        def new_wrap(kid: str, wrap: str) -> str:
            if (kid, wrap) not in cache:
                aes, problem = self._dek(kid, wrap)
                if aes is None:
                    raise ValueError(problem or "no keyring")
                cache[(kid, wrap)] = self._wrap_again(kid, wrap)
            return cache[(kid, wrap)]

        def params_sub(m: re.Match[str]) -> str:
            if m.group(1) == primary:
                return m.group(0)
            return f'"$enc":"v1","kid":"{primary}","k":"{new_wrap(m.group(1), m.group(2))}"'

        def error_sub(m: re.Match[str]) -> str:
            if m.group(1) == primary:
                return m.group(0)
            return f"{ERROR_PREFIX}{primary}:{new_wrap(m.group(1), m.group(2))}:"

        if text.startswith(ERROR_PREFIX):
            return _ERROR_RE.sub(error_sub, text, count=1)
        return _WRAP_RE.sub(params_sub, text)

    def _wrap_again(self, kid: str, wrap: str) -> str:
        assert self.keyring is not None
        old = self.keyring.get(kid)
        blob = base64.b64decode(wrap, validate=True)
        dek = self._aesgcm(old).decrypt(blob[:_NONCE], blob[_NONCE:], _WRAP_AD + kid.encode())
        primary = self.keyring.primary
        nonce = os.urandom(_NONCE)
        sealed = self._aesgcm(self.keyring.get(primary)).encrypt(
            nonce, dek, _WRAP_AD + primary.encode()
        )
        return _B64(nonce + sealed).decode()


def key_ids(text: str | None) -> set[str]:
    """Key ids a stored text's envelopes name."""
    if not text:
        return set()
    if text.startswith(ERROR_PREFIX):
        match = _ERROR_RE.match(text)
        return {match.group(1)} if match else set()
    return {m.group(1) for m in _WRAP_RE.finditer(text)}
