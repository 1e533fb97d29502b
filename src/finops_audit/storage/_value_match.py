"""``parameter_value``: which entries hold a value containing this text, in either store.

The promise (``get_logs`` and ``finops-audit logs --value``): an entry matches
when one of its parameter *values*, at any depth (nested objects and lists
included), contains the text, ignoring the case of ASCII letters only. Keys
never match: searching ``"account"`` must not return every call that merely
has an ``account`` parameter. String values match by their text (``%``,
``_`` and ``\\`` are literal); integers (64-bit) match by their decimal
digits; fractions, booleans and ``null`` never match. A document that is not
valid JSON (hand-edited or very old rows) is one value: its raw text.

How, cheaply: a needle made only of printable ASCII other than ``"`` and
``\\`` appears verbatim in any JSON text that holds it, so a fast ``LIKE``
over the stored text filters first and the JSON walk
(SQLite ``json_tree``, PostgreSQL ``jsonb_path_query``) only confirms the
candidates. Other needles (quotes, escapes, non-ASCII, which encoders may
write as ``\\uXXXX``) are matched by the walk alone.
"""

from __future__ import annotations

from typing import Any

__all__ = ["like_pattern", "pg_value_match", "plain", "sqlite_value_match", "value_matches"]

_INT64 = "-9223372036854775808 AND 9223372036854775807"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _is_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def value_matches(parameters: Any, needle: str) -> bool:
    """The same test in Python, on decoded parameters (for rows already in memory)."""
    folded = needle.translate(_ASCII_LOWER)
    stack = [parameters]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            if folded in value.translate(_ASCII_LOWER):
                return True
        elif _is_int64(value) and folded in str(value):
            return True
    return False


def like_pattern(needle: str) -> str:
    """``%needle%`` for ``LIKE ... ESCAPE '\\'``, with ``\\``, ``%`` and ``_`` literal."""
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def plain(needle: str) -> bool:
    """True if every JSON encoder writes ``needle`` verbatim (so a text prefilter is exact)."""
    return all(" " <= ch <= "~" and ch not in '"\\' for ch in needle)


def sqlite_value_match(needle: str) -> tuple[str, list[Any]]:
    """SQL (SQLite) true when a value of ``parameters`` contains ``needle``, and its parameters."""
    pattern = like_pattern(needle)
    walk = (
        "EXISTS (SELECT 1 FROM json_tree(parameters) AS j WHERE "  # pragma: no mutate
        "(j.type = 'text' OR (j.type = 'integer' AND typeof(j.atom) = 'integer')) "
        "AND j.atom LIKE ? ESCAPE '\\')"  # pragma: no mutate
    )
    sql = f"CASE WHEN json_valid(parameters) THEN {walk} ELSE parameters LIKE ? ESCAPE '\\' END"
    params: list[Any] = [pattern, pattern]
    if plain(needle):
        sql = f"parameters LIKE ? ESCAPE '\\' AND {sql}"
        params.insert(0, pattern)  # pragma: no mutate
    return f"({sql})", params


def pg_value_match(needle: str, text_column: str) -> tuple[str, list[Any]]:
    """SQL (PostgreSQL) for the same test on ``parameters`` (``jsonb``).

    ``text_column`` is the stored JSON text, for the prefilter. ``ILIKE``
    under the ``"C"`` collation folds ASCII letters only, as SQLite's ``LIKE``.
    Integers: a JSON number whose text is at most 19 digits within 64 bits,
    which is what SQLite's ``json_tree`` calls an integer.
    """
    pattern = like_pattern(needle)
    sql = (
        "EXISTS (SELECT 1 FROM jsonb_path_query(parameters, 'strict $.**') AS j(v) WHERE "
        "CASE jsonb_typeof(j.v) "  # pragma: no mutate
        "WHEN 'string' THEN (j.v #>> '{}') COLLATE \"C\" ILIKE %s ESCAPE '\\' "
        "WHEN 'number' THEN (j.v::text ~ '^-?[0-9]{1,19}$' "  # pragma: no mutate
        f"AND j.v::text::numeric BETWEEN {_INT64} "
        "AND j.v::text ILIKE %s ESCAPE '\\') "  # pragma: no mutate
        "ELSE false END)"  # pragma: no mutate
    )
    params: list[Any] = [pattern, pattern]
    if plain(needle):
        sql = f"{text_column} ILIKE %s ESCAPE '\\' AND {sql}"
        params.insert(0, pattern)  # pragma: no mutate
    return f"({sql})", params
