"""Which entries of a batch could hold something to redact: a few C passes per batch.

The full redaction walk (decode, visit every key and string, encode) costs
microseconds a row, so the writer first asks, for a whole batch at once, which
raw parameter documents *could* need it. A "no" must be certain; a "yes" only
costs a walk. The batch is joined into one buffer (entries separated by NUL)
and searched:

* **Words** (the roots of every secret key, of the secret-shaped values, of the
  user's extra keys and HMAC fields) with one Aho-Corasick automaton
  (``ahocorasick_rs``; a ``bytes.find`` per word where it is not installed)
  over a *scan text*: the buffer lower-cased, with every separator, digit,
  control byte, backslash and non-ASCII byte deleted. The key rule
  (:mod:`finops_audit._secret_keys`) only ever joins words across separators,
  digits and case changes, so a secret key's root survives intact, also in
  ``api2key``, ``api\\u00a0key`` (a no-break space) or ``api\\tkey``. The
  characters whose case folding gives an ASCII letter (Kelvin sign, dotted
  and dotless i, long s) are mapped first.
* Where the buffer holds a backslash, a second scan text reads JSON escapes as
  JSON does (``\\t`` is a separator, not a ``t``), and an entry with a
  ``\\uXXXX`` escape is walked outright.
* **Shapes** that are not words: a run of 40 base64 characters (an AWS secret
  key), and with pseudonyms on, ``arn:`` and a run of 12 digits.

**Parameter names known at decoration time.** A tool's top-level parameter
names are declared once by the decorator (:func:`declare_parameters`). A
declared name that contains a root but is not secret (``max_tokens``,
``author``, ``passenger_count``) would make every call of its tool a walk; the
entries that hit are scanned once more with such keys (``"max_tokens":``)
blanked. Whether a name is secret is a property of the name alone (the same
rule at every depth), so blanking it anywhere is safe. Nothing is added to the
per-call path.
"""

from __future__ import annotations

import bisect
import inspect
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

__all__ = ["Prescan", "declare_parameters", "declared_parameters", "scan_text"]

#: Bytes deleted from the scan text: controls, separators, digits, backslash, non-ASCII.
_DELETE = bytes(range(1, 0x21)) + b"_-.:/\\0123456789" + bytes(range(0x80, 0x100))
#: Non-ASCII characters whose ``str.lower()`` or ``re.IGNORECASE`` give an ASCII letter.
_FOLDS = ((b"\xe2\x84\xaa", b"k"), (b"\xc4\xb0", b"i"))
#: Only ``re.IGNORECASE`` folds these (dotless i, long s): the key rule keeps them.
_IGNORECASE_FOLDS = ((b"\xc4\xb1", b"i"), (b"\xc5\xbf", b"s"))
#: The case-insensitive value roots those two can complete (``basic`` with a long s).
_IGNORECASE_ROOTS = (b"basic",)
_JSON_ESCAPE = re.compile(rb"\\[bfnrt]")
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+"
_B64_TO_A = bytes(b"a"[0] if i in _B64 else b" "[0] for i in range(256))
_B64_RUN = b"a" * 40
_DIGITS = bytes(b"0"[0] if i in b"0123456789" else b" "[0] for i in range(256))
_DIGIT_RUN = b"0" * 12
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEP = b"\x00"


def scan_text(text: bytes) -> bytes:
    """``text`` as the word search sees it (lower case, deletions); NUL kept."""
    return _squeeze(text.lower())


def _squeeze(text: bytes) -> bytes:
    """:func:`scan_text` of text already in lower case."""
    if not text.isascii():
        for old, new in _FOLDS:
            text = text.replace(old, new)
    return text.translate(None, _DELETE)


class _Matcher(Protocol):
    def find_matches_as_indexes(
        self, haystack: bytes, overlapping: bool = False
    ) -> list[tuple[int, int, int]]: ...


class _FindEach:
    """The fallback matcher: one ``bytes.find`` pass per word."""

    def __init__(self, words: list[bytes]) -> None:
        self._words = words

    def find_matches_as_indexes(
        self, haystack: bytes, overlapping: bool = False
    ) -> list[tuple[int, int, int]]:
        out = []
        for i, word in enumerate(self._words):
            at = haystack.find(word)
            while at != -1:
                out.append((i, at, at + len(word)))
                at = haystack.find(word, at + 1)
        return out


def _automaton(words: list[bytes]) -> _Matcher:
    try:
        from ahocorasick_rs import BytesAhoCorasick
    except ImportError:  # pragma: no cover - a declared dependency; kept working anyway
        return _FindEach(words)
    return BytesAhoCorasick(words)


# ------------------------------------------------------------------ declared names

_declared_lock = threading.Lock()
_declared: frozenset[str] = frozenset()


def declare_parameters(fn: Callable[..., Any]) -> None:
    """Record ``fn``'s parameter names (decoration time; never raises)."""
    global _declared
    try:
        names = set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return
    names = {n for n in names if _IDENTIFIER.fullmatch(n)}
    if names <= _declared:
        return
    with _declared_lock:
        _declared = _declared | names


def declared_parameters() -> frozenset[str]:
    """Every parameter name declared so far in this process."""
    return _declared


# ------------------------------------------------------------------ the scan


class Prescan:
    """The batch pre-check for one set of redaction rules, built once."""

    __slots__ = (
        "_always",
        "_benign",
        "_benign_from",
        "_ids",
        "_is_plain",
        "_matcher",
    )

    def __init__(
        self,
        roots: Iterable[str],
        *,
        ids: bool = False,
        is_plain: Callable[[str], bool] | None = None,
    ) -> None:
        words = {scan_text(r.encode("utf-8", "surrogatepass")) for r in roots}
        #: A root with no letters left matches everything: every entry is walked.
        self._always = b"" in words
        # A word that contains a shorter one can never be the only hit.
        kept = sorted(w for w in words if w and not any(o != w and o in w for o in words))
        self._matcher = _automaton(kept)
        self._ids = ids
        #: ``name -> True`` when a name is neither secret nor an HMAC field.
        self._is_plain = is_plain
        self._benign_from: frozenset[str] | None = None
        self._benign: re.Pattern[bytes] | None = None

    def flags(self, raws: list[bytes]) -> list[bool]:
        """For each raw document: could the walk change it? (Never a false "no".)"""
        if self._always:
            return [True] * len(raws)
        flags = self._scan(raws)
        if self._is_plain is not None and True in flags:
            self._recheck(raws, flags)
        return flags

    def _scan(self, raws: list[bytes]) -> list[bool]:
        n = len(raws)
        joined = _SEP.join(raws)
        if n > 1 and joined.count(_SEP) != n - 1:  # a NUL inside a document: one at a time
            return [self._flags(raw, 1)[0] for raw in raws]
        return self._flags(joined, n)

    def _flags(self, joined: bytes, n: int) -> list[bool]:
        flags = [False] * n
        lowered = joined.lower()
        text = _squeeze(lowered)
        _mark(flags, text, [m[1] for m in self._matcher.find_matches_as_indexes(text)])
        if not lowered.isascii() and any(old in lowered for old, _ in _IGNORECASE_FOLDS):
            folded = lowered
            for old, new in _IGNORECASE_FOLDS:
                folded = folded.replace(old, new)
            folded = _squeeze(folded)
            for root in _IGNORECASE_ROOTS:
                _mark(flags, folded, _finds(folded, root))
        if b"\\" in lowered:
            # JSON's reading: an escaped backslash is a character, \t a separator.
            unescaped = lowered.replace(b"\\\\", b"")
            _mark(flags, unescaped, _finds(unescaped, b"\\u"))
            slashes = unescaped.replace(b"\\/", b"/")  # "\/" is a "/", a base64 character
            _mark(flags, slashes, _finds(slashes.translate(_B64_TO_A), _B64_RUN))
            text = _squeeze(_JSON_ESCAPE.sub(b"", unescaped))
            _mark(flags, text, [m[1] for m in self._matcher.find_matches_as_indexes(text)])
        _mark(flags, joined, _finds(joined.translate(_B64_TO_A), _B64_RUN))
        if self._ids:
            _mark(flags, joined, _finds(joined, b"arn:"))
            _mark(flags, joined, _finds(joined.translate(_DIGITS), _DIGIT_RUN))
        return flags

    def _recheck(self, raws: list[bytes], flags: list[bool]) -> None:
        """Scan the entries that hit again, with declared plain keys blanked."""
        benign = self._benign_keys()
        if benign is None:
            return
        hits = [i for i, flag in enumerate(flags) if flag]
        blanked = [benign.sub(b'"":', raws[i]) for i in hits]
        again = self._scan(blanked)
        for i, flag in zip(hits, again, strict=True):
            flags[i] = flag

    def _benign_keys(self) -> re.Pattern[bytes] | None:
        declared = _declared
        if declared is not self._benign_from:
            assert self._is_plain is not None
            plain = sorted(
                (n for n in declared if self._is_plain(n) and self._hits(n.encode())),
                key=len,
                reverse=True,
            )
            alternation = b"|".join(re.escape(n.encode()) for n in plain)
            self._benign = re.compile(b'"(?:' + alternation + b')":') if plain else None
            self._benign_from = declared
        return self._benign

    def _hits(self, name: bytes) -> bool:
        return bool(self._matcher.find_matches_as_indexes(scan_text(name)))


def _finds(text: bytes, needle: bytes) -> list[int]:
    out = []
    at = text.find(needle)
    while at != -1:
        out.append(at)
        at = text.find(needle, at + 1)
    return out


def _mark(flags: list[bool], text: bytes, positions: list[int]) -> None:
    """Flag the entry (NUL-separated in ``text``) holding each position."""
    if not positions:
        return
    if len(flags) == 1:
        flags[0] = True
        return
    nuls = _finds(text, _SEP)
    for at in positions:
        flags[bisect.bisect_right(nuls, at)] = True
