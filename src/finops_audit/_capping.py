"""Size caps that cut the biggest values and keep their neighbours.

A 10 MB ``blob`` next to ``region="eu-west-1"`` must not take the region with
it: :func:`shrink` cuts string values, largest first and down to one common
size ("water filling"), each into a marker ``{"$truncated": true,
"original_bytes": N, "preview": "..."}``, and keeps every key and every small
value. Only when keys and small values alone exceed the cap are whole
top-level values, and at last the whole document, replaced by a marker.
Sizes are those of the encoded JSON (a backslash costs two bytes), and the
result is measured again, so the stored document never exceeds the cap.

Two users:

* the writer (``trim=False``), on the **redacted** document: secrets are
  already gone, so a preview can be any prefix;
* the caller (``trim=True``), only for documents above the queue's memory
  bound, before redaction: a cut can split a secret so that no pattern
  recognises the rest, so a preview never ends in a cut-off token (a run of
  ``[A-Za-z0-9-._~+/=]``): that tail, up to its last 4,096 characters, is
  dropped, and the writer redacts what is left. (A longer run is no token a
  pattern finds whole anyway, except a bearer credential, which its pattern
  finds from any 8 characters on.)
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["TRUNCATED_KEY", "cap_text", "dumps", "loads", "shrink"]

TRUNCATED_KEY = "$truncated"
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9\-._~+/=]+\Z")
_TOKEN_CHAR = re.compile(r"[A-Za-z0-9\-._~+/=]")
# 19 digits in a row (a translate and a find: a third of a regex's cost)
_DIGITS = bytes(b"0"[0] if i in b"0123456789" else b" "[0] for i in range(256))
_LONG_INT = b"0" * 19
#: Strings at most this long (encoded) are never cut: "every small value".
_SMALL = 96
#: Longest cut-off token tail a caller-side cut drops.
_MAX_TOKEN = 4096
_MAX_DEPTH = 200
_CUT_SUFFIX = re.compile(r"… \[truncated, ([0-9]{1,15}) bytes\]\Z")


def dumps(value: Any) -> bytes:
    """Compact JSON; integers beyond 64 bits (which orjson refuses) through ``json``."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "backslashreplace"
        )


def loads(raw: bytes) -> Any:
    """Parse JSON; integers beyond 64 bits stay exact (orjson would make them floats)."""
    if _LONG_INT in raw.translate(_DIGITS):
        return json.loads(raw)
    return orjson.loads(raw)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _drop_cut_token(cut: str, text: str) -> str:
    """``cut`` (a prefix of ``text``) without a token the cut went through."""
    if len(cut) >= len(text) or not _TOKEN_CHAR.match(text, len(cut)):
        return cut
    tail = cut[-_MAX_TOKEN:]
    found = _TOKEN_TAIL.search(tail)
    return cut if found is None else cut[: len(cut) - len(tail) + found.start()]


def _prefix(text: str, budget: int, trim: bool) -> str:
    """The longest prefix of ``text`` whose JSON string body fits ``budget`` bytes."""
    if budget <= 0:
        return ""
    keep = min(len(text), budget)
    while keep > 0:
        size = len(dumps(text[:keep])) - 2
        if size <= budget:
            break
        keep = max(0, min(keep - 1, keep * budget // size))
    out = text[:keep]
    return _drop_cut_token(out, text) if trim else out


def _marker(original: int, preview: str) -> dict[str, Any]:
    return {TRUNCATED_KEY: True, "original_bytes": original, "preview": preview}


def _fit_marker(text: str, size: int, original: int, trim: bool) -> dict[str, Any]:
    """A marker for ``text`` whose encoding takes at most ``size`` bytes (if possible)."""
    empty = len(dumps(_marker(original, "")))
    return _marker(original, _prefix(text, size - empty, trim))


# A leaf: [encoded size, holder (dict or list), key or index, text, is a marker's preview]
_Leaf = list[Any]


def _collect(value: Any, leaves: list[_Leaf], depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, dict):
        if value.get(TRUNCATED_KEY) is True and isinstance(value.get("preview"), str):
            text = value["preview"]
            size = len(dumps(text))
            if size > 2:
                leaves.append([size, value, "preview", text, True])
            return
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, item in items:
        if isinstance(item, str):
            size = len(dumps(item))
            if size > _SMALL:
                leaves.append([size, value, key, item, False])
        elif isinstance(item, (dict, list)):
            _collect(item, leaves, depth + 1)


def _level(sizes: list[int], excess: int) -> int:
    """The common size ``t`` such that cutting every size above ``t`` to ``t`` frees ``excess``."""
    total = 0
    for k, size in enumerate(sizes, 1):
        total += size
        level = (total - excess) // k
        nxt = sizes[k] if k < len(sizes) else 0
        if level >= nxt:
            return level
    return 0


def _cut_leaves(doc: Any, total: int, limit: int, trim: bool) -> int:
    leaves: list[_Leaf] = []
    _collect(doc, leaves, 0)
    if not leaves:
        return total
    leaves.sort(key=lambda leaf: leaf[0], reverse=True)
    # A marker costs more than its preview; aim lower by that much per cut value.
    overhead = len(dumps(_marker(0, ""))) + 12
    level = _level([leaf[0] for leaf in leaves], total - limit)
    level = max(level - overhead, 2)
    for size, holder, key, text, is_preview in leaves:
        if size <= level:
            break
        if is_preview:
            holder[key] = _prefix(text, level - 2, trim)
            new = len(dumps(holder[key]))
        else:
            holder[key] = marker = _fit_marker(text, level, _utf8_len(text), trim)
            new = len(dumps(marker))
        total -= size - new
    return total


def _cut_top_level(doc: dict[str, Any], limit: int, trim: bool) -> bytes:
    sized = sorted(((len(dumps(v)), k) for k, v in doc.items()), reverse=True)
    for size, key in sized:
        encoded = dumps(doc)
        if len(encoded) <= limit:
            return encoded
        if size <= _SMALL:
            break
        text = dumps(doc[key]).decode("utf-8", "replace")
        room = max(2, size - (len(encoded) - limit))
        doc[key] = _fit_marker(text, room, size, trim)
    return dumps(doc)


def shrink(doc: Any, limit: int, *, trim: bool = False, original: int | None = None) -> bytes:
    """``doc`` encoded in at most ``limit`` bytes, cutting the largest values first.

    ``original`` is the size reported if the whole document must be replaced.
    """
    encoded = dumps(doc)
    if len(encoded) <= limit:
        return encoded
    full = original if original is not None else len(encoded)
    _cut_leaves(doc, len(encoded), limit, trim)
    encoded = dumps(doc)
    if len(encoded) > limit and isinstance(doc, dict):
        encoded = _cut_top_level(doc, limit, trim)
    if len(encoded) <= limit:
        return encoded
    # Keys and small values alone are too big: one marker for the whole document.
    whole = _fit_marker(encoded.decode("utf-8", "replace"), limit, full, trim)
    return dumps(whole)


def cap_text(text: str, limit: int, *, trim: bool = False) -> str:
    """``text`` within ``limit`` UTF-8 bytes, ending in ``… [truncated, N bytes]`` if cut.

    N is the size of the original text, also when the caller cut it first.
    """
    size = _utf8_len(text)
    if size <= limit:
        return text
    earlier = _CUT_SUFFIX.search(text)
    if earlier is not None:
        text, size = text[: earlier.start()], int(earlier.group(1))
    suffix = f"… [truncated, {size} bytes]"
    room = max(0, limit - _utf8_len(suffix))
    cut = text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
    if trim:
        cut = _drop_cut_token(cut, text)
    return cut + suffix
