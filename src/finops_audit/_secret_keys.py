"""Which parameter and label names hold secrets: a rule on the name's words.

Exact names miss ``db_password`` and ``stripe_secret_key``; substrings flag
``author`` and ``max_tokens``. So a key is split into words, on separators
(space ``_ - . : /``) and case changes (``dbPassword``, ``HTTPAuthorization``),
digits dropped, lower-cased, and it is **secret** when:

1. its **last word** is a secret noun: ``password``, ``passwd``, ``pwd``,
   ``passphrase``, ``passcode``, ``secret``, ``secrets``, ``token``,
   ``credential``, ``credentials``, ``creds``, ``cookie``, ``cookies``,
   ``authorization``, ``auth``, ``apikey``, ``jwt``, ``bearer``, ``pin``,
   ``otp``, ``dsn``; or a run-together word ending in one of the long ones
   (``clientsecret``, ``accesstoken``, ``xapikey``, ``setcookie``,
   ``dbpassword``);
2. or its last word is ``key`` after ``api``, ``private``, ``secret``,
   ``access``, ``signing``, ``encryption``, ``ssh``, ``master``, ``client``,
   ``shared``, ``hmac``, ``session``, ``app``, ``auth``, ``license``,
   ``subscription``, ``account``, ``storage``, ``webhook``, ``x``
   (``x-api-key``, ``stripe_secret_key``, ``aws_secret_access_key``);
3. or its last two words are ``connection string``, ``conn str``, a
   ``password``/``passwd`` followed by ``hash`` or ``salt``, or ``code`` after
   ``mfa``, ``otp``, ``totp``, ``auth``, ``authorization``, ``verification``,
   ``security``, ``recovery``;
4. or it ends with the words of a name given in ``AUDIT_REDACT_KEYS``
   (``badge`` also covers ``employee_badge``), or equals one of those or of
   :data:`~finops_audit.redaction.DEFAULT_SENSITIVE_KEYS` once separators and
   case are dropped (``sshkey``, ``mfacode``).

So the last word decides: ``max_tokens`` (plural: counts of LLM tokens),
``token_count``, ``password_policy_name``, ``secret_santa_budget``,
``secret_name``, ``api_key_id``, ``public_key``, ``author`` stay readable.
The rule is decided once per distinct key (cached), so the writer pays a
dictionary look-up per key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["KeyRule", "key_words"]

#: Last words that make a key secret.
SECRET_NOUNS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "passcode",
        "secret",
        "secrets",
        "token",
        "credential",
        "credentials",
        "creds",
        "cookie",
        "cookies",
        "authorization",
        "auth",
        "apikey",
        "jwt",
        "bearer",
        "pin",
        "otp",
        "dsn",
    }
)
#: Long nouns that also make a run-together last word secret (``clientsecret``).
_SUFFIX_NOUNS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "credentials",
    "cookie",
    "authorization",
    "apikey",
    "privatekey",
    "secretkey",
    "accesskey",
    "signingkey",
    "encryptionkey",
    "connectionstring",
)
#: Words that make a following ``key`` secret.
KEY_QUALIFIERS = frozenset(
    {
        "api",
        "private",
        "secret",
        "access",
        "signing",
        "encryption",
        "ssh",
        "master",
        "client",
        "shared",
        "hmac",
        "session",
        "app",
        "auth",
        "license",
        "subscription",
        "account",
        "storage",
        "webhook",
        "x",
    }
)
_CODE_QUALIFIERS = frozenset(
    {"mfa", "otp", "totp", "auth", "authorization", "verification", "security", "recovery"}
)
_PAIRS = frozenset(
    {
        ("connection", "string"),
        ("conn", "str"),
        ("connection", "str"),
        ("password", "hash"),
        ("password", "salt"),
        ("passwd", "hash"),
    }
)
#: Squashed (lower case, no separators) texts every secret key contains: a
#: cheap "could this entry hold one?" pre-check on raw bytes uses them.
ROOTS = frozenset(
    {
        "pass",
        "pwd",
        "secret",
        "token",
        "credential",
        "creds",
        "cookie",
        "auth",
        "apikey",
        "jwt",
        "bearer",
        "pin",
        "otp",
        "dsn",
        "connectionstring",
        "connstr",
        "connectionstr",
        "mfacode",
        "verificationcode",
        "securitycode",
        "recoverycode",
        *(q + "key" for q in KEY_QUALIFIERS),
    }
)

_SPLIT = re.compile(r"[\s_\-.:/]+")
# aB -> a|B, ABc -> A|Bc, letter|digit, digit|letter
_CASE = re.compile(
    r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])"
)


def key_words(key: str) -> tuple[str, ...]:
    """``"DB-PASSWORD2"`` -> ``("db", "password")``: separators, case changes; digits dropped."""
    words: list[str] = []
    for part in _SPLIT.split(key):
        for word in _CASE.split(part):
            if word and not word.isdigit():
                words.append(word.lower())
    return tuple(words)


def _secret_words(words: tuple[str, ...]) -> bool:
    if not words:
        return False
    last = words[-1]
    if last in SECRET_NOUNS or last.endswith(_SUFFIX_NOUNS):
        return True
    if len(words) < 2:
        return False
    before = words[-2]
    if last == "key":
        return before in KEY_QUALIFIERS
    if last == "code":
        return before in _CODE_QUALIFIERS
    return (before, last) in _PAIRS


class KeyRule:
    """The secret-key rule plus a user's extra names; :meth:`secret` is cached per key."""

    __slots__ = ("_extra_squashed", "_extra_words", "secret")

    def __init__(
        self, extra_keys: Iterable[str] = (), exact: Iterable[str] = (), cache_size: int = 8192
    ) -> None:
        extra = [k for k in extra_keys if k.strip()]
        self._extra_words = tuple(w for w in (key_words(k) for k in extra) if w)
        self._extra_squashed = frozenset("".join(w) for w in self._extra_words) | frozenset(
            "".join(key_words(k)) for k in exact
        )
        self.secret = lru_cache(maxsize=cache_size)(self._classify)

    @property
    def roots(self) -> frozenset[str]:
        """:data:`ROOTS` plus the squashed extra names."""
        return ROOTS | self._extra_squashed

    def _classify(self, key: str) -> bool:
        try:
            words = key_words(key)
        except Exception:  # a key that cannot even be split is treated as secret
            return True
        if _secret_words(words):
            return True
        if "".join(words) in self._extra_squashed:
            return True
        if not self._extra_words:
            return False
        n = len(words)
        return any(n >= len(e) and words[n - len(e) :] == e for e in self._extra_words)
