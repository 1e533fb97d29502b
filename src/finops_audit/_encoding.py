"""Turning a call's arguments and outcome into storable text, safely and cheaply.

Two halves with different budgets:

* The caller's side (:func:`make_param_snapshot`, :func:`describe_exception`)
  runs inside every tool call. It is decided once at decoration time and does
  one ``orjson.dumps`` per call, which both snapshots the arguments (a tool
  that mutates them later cannot rewrite history) and costs about 0.1-0.3 µs
  for typical MCP arguments. Anything orjson cannot encode goes to a slow but
  total fallback that never raises.
* The writer's side (:class:`RowFormatter`, in :mod:`finops_audit._rowformat`,
  re-exported here) turns nanosecond clocks into the ISO-8601 text of the
  design note's schema, redacts every field (parameters, error message, caller
  fields, labels) and only then applies the size caps
  (:mod:`finops_audit._capping`): a preview is always made from the redacted
  form. The caller cuts only documents above :func:`queue_bound` (a memory
  bound for the queue, four times the cap plus 8 KiB), and its cuts never end inside a
  token, so no half secret escapes the writer's patterns.
"""

from __future__ import annotations

import base64
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ._capping import TRUNCATED_KEY, cap_text, loads, shrink
from ._rowformat import RowFormatter

__all__ = [
    "TRUNCATED_KEY",
    "RowFormatter",
    "decode_parameters",
    "describe_exception",
    "make_param_snapshot",
    "queue_bound",
    "safe_dumps",
    "slow_dumps",
    "truncate_encoded",
]

# No OPT_NON_STR_KEYS: {1: .., "1": ..} would become a duplicate key. Non-string
# keys (never in MCP arguments, which are JSON) take the slow, exact path.
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_MAX_FALLBACK_DEPTH = 64
_MAX_REPR = 1000
#: Error messages longer than this are cut by the caller already (queue memory).
_MAX_CALLER_ERROR_CHARS = 1 << 20
_CONTEXT_RE = re.compile(r"(?<![A-Za-z0-9_])Context\b")
_LONG_INT = re.compile(r"[0-9]{19}")

ParamSnapshot = Callable[[tuple[Any, ...], dict[str, Any]], bytes]


def _safe_repr(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception:
        return f"<unrepresentable {type(obj).__qualname__} object>"
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + "…"


def _typed(obj: object, **fields: Any) -> dict[str, Any]:
    return {"$type": type(obj).__qualname__, **fields}


def _orjson_default(obj: Any) -> Any:
    """Give orjson a faithful, readable stand-in for a value it cannot encode."""
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(obj)
        except TypeError:
            return list(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _typed(obj, base64=base64.b64encode(bytes(obj)).decode("ascii"))
    dump = getattr(obj, "model_dump", None)
    if callable(dump) and not isinstance(obj, type):  # pydantic v2 models
        try:
            return dump(mode="json")
        except Exception:
            return _typed(obj, repr=_safe_repr(obj))
    if isinstance(obj, complex):
        return _typed(obj, value=str(obj))
    try:
        from decimal import Decimal

        if isinstance(obj, Decimal):
            return str(obj)
    except ImportError:  # pragma: no cover - decimal is stdlib
        pass
    if isinstance(obj, Mapping):
        return dict(obj)
    return _typed(obj, repr=_safe_repr(obj))


def _clean(text: str) -> str:
    """Lone surrogates cannot be stored as UTF-8: keep them as readable escapes."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _jsonable(obj: Any, depth: int, seen: set[int]) -> Any:
    """Total, bounded conversion to JSON-safe values (the slow path)."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return _clean(obj) if isinstance(obj, str) else obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if depth >= _MAX_FALLBACK_DEPTH:
        return {"$truncated": "max depth", "$type": type(obj).__qualname__}
    if isinstance(obj, (dict, list, tuple, set, frozenset, Mapping)):
        if id(obj) in seen:
            return {"$cycle": type(obj).__qualname__}
        seen.add(id(obj))
        try:
            if isinstance(obj, Mapping):
                out: dict[str, Any] = {}
                for k, v in list(obj.items()):
                    key = _clean(k) if isinstance(k, str) else _safe_repr(k)
                    if key in out:  # e.g. 1 and "1": keep both, say which is which
                        key = f"{key} ({type(k).__qualname__})"
                    out[key] = _jsonable(v, depth + 1, seen)
                return out
            return [_jsonable(v, depth + 1, seen) for v in list(obj)]
        finally:
            seen.discard(id(obj))
    try:
        converted = _orjson_default(obj)
    except Exception:
        return _typed(obj, repr=_safe_repr(obj))
    if converted is obj:
        return _safe_repr(obj)
    return _jsonable(converted, depth + 1, seen)


def safe_dumps(obj: Any) -> bytes:
    """Encode ``obj`` as JSON; never raises. orjson first, a total fallback second."""
    try:
        return orjson.dumps(obj, default=_orjson_default, option=_ORJSON_OPTIONS)
    except Exception:
        return slow_dumps(obj)


def slow_dumps(obj: Any) -> bytes:
    """The total fallback: cycles, deep nesting, surrogates, NaN, odd keys; never raises."""
    try:
        return json.dumps(
            _jsonable(obj, 0, set()), ensure_ascii=True, allow_nan=False, default=_safe_repr
        ).encode("ascii")
    except Exception as exc:  # pragma: no cover - _jsonable is total
        return orjson.dumps({"$unencodable": describe_exception(exc)})


def _is_context_annotation(annotation: Any) -> bool:
    if annotation is inspect.Parameter.empty:
        return False
    if isinstance(annotation, type):
        module = getattr(annotation, "__module__", "") or ""
        return annotation.__name__ == "Context" and module.split(".")[0] in {"mcp", "fastmcp"}
    return bool(_CONTEXT_RE.search(str(annotation)))


def _may_hold_float(annotation: Any) -> bool:
    if annotation is inspect.Parameter.empty:
        return True
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "float" in text or "Any" in text or "object" in text


def _has_nonfinite(values: Any) -> bool:
    for value in values:  # noqa: SIM110 - a plain loop is faster than any() on the hot path
        # x - x is 0.0 for every finite float and NaN for NaN and the infinities.
        if value.__class__ is float and value - value != 0.0:
            return True
    return False


def _nested_nonfinite(value: Any, depth: int) -> bool:
    if value.__class__ is float:
        return bool(value - value != 0.0)
    if depth > 32:
        return False
    if isinstance(value, dict):
        return any(_nested_nonfinite(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_nested_nonfinite(v, depth + 1) for v in value)
    return False


def queue_bound(max_bytes: int) -> int:
    """Largest parameters document a caller hands over whole: four times the stored cap
    plus 8 KiB.

    Redaction must see the whole document before the cap cuts it, so the
    caller does not apply the cap; it only bounds the queue's memory. The
    8 KiB leave room for the cut-off token a caller-side cut drops, so the
    writer still has a preview to store.
    """
    return 4 * max_bytes + 8192


def truncate_encoded(encoded: bytes, max_bytes: int) -> bytes:
    """Cut oversized encoded parameters to ``max_bytes``, largest values first, before
    redaction: cut values never end inside a token (see :mod:`finops_audit._capping`)."""
    try:
        try:
            doc = loads(encoded)
        except ValueError:
            doc = encoded.decode("utf-8", "replace")
        return shrink(doc, max_bytes, trim=True, original=len(encoded))
    except Exception:  # never fail the call: keep the size, not the content
        return orjson.dumps({TRUNCATED_KEY: True, "original_bytes": len(encoded), "preview": ""})


def make_param_snapshot(fn: Callable[..., Any], max_bytes: int = 1 << 62) -> ParamSnapshot:
    """Build, once, the function that records a call's arguments by parameter name.

    MCP SDKs call tools with keyword arguments only, so the common case is a
    single ``orjson.dumps(kwargs)``. Positional arguments are named from the
    signature; extras beyond it land under the ``*args`` parameter's name.
    Parameters annotated as an MCP ``Context`` are left out. Encodings larger
    than :func:`queue_bound` of ``max_bytes`` have their largest values cut
    right away, so the queue's memory stays bounded; the writer redacts, then
    applies ``max_bytes`` itself. orjson writes NaN and the infinities as
    ``null``; where a parameter may hold a float, such values at the top level
    take the slow path and are stored as ``"nan"``, ``"inf"``, ``"-inf"``.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    positional: list[str] = []
    var_positional: str | None = None
    skip: set[str] = set()
    check_floats = sig is None
    if sig is not None:
        for p in sig.parameters.values():
            if _is_context_annotation(p.annotation):
                skip.add(p.name)
            elif _may_hold_float(p.annotation):
                check_floats = True
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                positional.append(p.name)
            elif p.kind is p.VAR_POSITIONAL:
                var_positional = p.name
    excluded = frozenset(skip)
    bound = queue_bound(max_bytes) if max_bytes < 1 << 60 else max_bytes
    names = tuple(positional)
    extra_name = var_positional or "*args"
    n_names = len(names)

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        params = dict(zip(names, args, strict=False))
        if len(args) > n_names:
            params[extra_name] = list(args[n_names:])
        params.update(kwargs)
        return params

    def snapshot(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        params = bind(args, kwargs) if args else kwargs
        if excluded:
            params = {k: v for k, v in params.items() if k not in excluded}
        if check_floats and _has_nonfinite(params.values()):
            out = slow_dumps(params)
        else:
            try:
                out = orjson.dumps(params, default=_orjson_default, option=_ORJSON_OPTIONS)
            except Exception:
                out = slow_dumps(params)
            else:
                # orjson writes nested NaN/inf as null too: only where a null
                # appears at all and a parameter may hold floats, look deeper.
                if check_floats and b"null" in out and _nested_nonfinite(params, 0):
                    out = slow_dumps(params)
        if len(out) > bound:
            return truncate_encoded(out, bound)
        # orjson's result keeps a ~4 KiB buffer: 100,000 queued entries would
        # hold 400 MB during a database fault. An exact-size copy costs ~0.3 µs.
        return bytes(memoryview(out))

    return snapshot


def describe_exception(exc: BaseException) -> str:
    """``"ValueError: bad region"``; survives exceptions whose ``__str__`` raises."""
    name = type(exc).__qualname__
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {name} object>"
    text = f"{name}: {message}" if message else name
    if not text.isascii():  # lone surrogates cannot be stored as UTF-8
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > _MAX_CALLER_ERROR_CHARS:  # bound the queue; the writer caps for real
        text = cap_text(text, _MAX_CALLER_ERROR_CHARS, trim=True)
    return text


def decode_parameters(text: str | bytes | None) -> dict[str, Any]:
    """Parse a stored ``parameters`` column back into a dict, whatever wrote it."""
    if text is None or text == "":
        return {}
    try:
        # orjson reads integers beyond 64 bits as floats; json keeps them exact.
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        value = json.loads(text) if _LONG_INT.search(text) else orjson.loads(text)
    except (orjson.JSONDecodeError, ValueError):
        try:
            value = json.loads(text)
        except (ValueError, TypeError):
            return {"$unparsed": text if isinstance(text, str) else text.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"$value": value}
