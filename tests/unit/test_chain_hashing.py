"""The cheaper row hashing hashes exactly the bytes the documented recipe names.

Why: the writer now hashes each row with HMAC states precomputed once per key
and one loop that also splits rows without a caller (:meth:`Chainer.link_split`).
None of that may change a single hashed byte: every trail written before must
go on verifying, and an auditor recomputes a row hash with nothing but
``sha256``/``hmac`` and a JSON array. So each hash is recomputed here from
scratch with the standard library and compared, for every key scheme, key
length (HMAC hashes keys longer than its 64-byte block first), and row shape
(no caller, a caller, an encrypted value, an encrypted error message).
"""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from finops_audit._chain import GENESIS, Chainer, _hmac_sha256, hkdf_sha256

CALLER = ("alice", "claude", "1.0", "s1", "r1", "cid", "t" * 32, "s" * 16, '{"team":"a"}')
NONE9 = (None,) * 9
ENVELOPE = '{"$enc":"v1","kid":"k1","k":"d3JhcA==","ct":"Y2lwaGVy"}'


def _rows() -> list[tuple[object, ...]]:
    base = ("2026-01-01T00:00:00.000000+00:00", "tool", '{"a":1}', "SUCCESS", None, 0.5)
    return [
        (*base, *NONE9),
        (*base[:4], "boom", 1.25, *CALLER),
        (base[0], "tool", '{"secret":' + ENVELOPE + "}", "SUCCESS", None, 2.0, *NONE9),
        (*base[:3], "FAILURE", "$enc:v1:k1:d3JhcA==:Y2lwaGVy", None, *NONE9),
        (*base[:2], '{"ü":"\\u2028 ünïcode"}', "SUCCESS", None, 1e-9, *CALLER[:8], None),
        (*base, *NONE9),
    ]


def _view(value: object) -> object:
    """The recipe's view of an encrypted value: without its key id and wrapped key."""
    if isinstance(value, str) and value.startswith("$enc:v1:"):
        return "$enc:v1:" + value.split(":", 4)[4]
    if isinstance(value, str):
        return value.replace('"kid":"k1","k":"d3JhcA==",', "")
    return value


def _expected(key: bytes | None, scheme: int, rows: list[tuple[object, ...]]) -> list[str]:
    if key is None:
        mac = None
    else:
        mac = key if scheme == 1 else hkdf_sha256(key, b"finops-audit/v2/chain")
    prev, out = GENESIS, []
    for row_id, row in enumerate(rows, start=7):
        viewed = [row[0], row[1], _view(row[2]), row[3], _view(row[4]), *row[5:]]
        data = orjson.dumps([row_id, *viewed, prev])
        if mac is None:
            prev = hashlib.sha256(data).hexdigest()
        else:
            prev = hmac.new(mac, data, hashlib.sha256).hexdigest()
        out.append(prev)
    return out


KEYS = [None, b"k" * 32, b"q" * 64, b"z" * 65, bytes(range(200))]


SHAPES = {
    "mixed": [0, 1, 2, 3, 4, 5],
    "no envelope": [0, 1, 4, 5],  # the batch-level check skips chain_view
    "envelope only in an error": [0, 3],
    "envelope only in parameters": [1, 2],
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scheme", [1, 2])
@pytest.mark.parametrize("key", KEYS, ids=lambda k: "unkeyed" if k is None else f"{len(k)}B")
def test_link_hashes_the_documented_bytes(key: bytes | None, scheme: int, shape: str) -> None:
    rows = [_rows()[i] for i in SHAPES[shape]]
    chainer = Chainer(key, scheme=scheme)
    linked, last = chainer.link(7, GENESIS, rows)
    expected = _expected(key, scheme, rows)
    assert [r[-1] for r in linked] == expected
    assert last == expected[-1]
    assert [r[0] for r in linked] == list(range(7, 7 + len(rows)))
    assert [r[1:-1] for r in linked] == rows
    # row_hash (what verify uses) agrees row by row
    prev = GENESIS
    for r in linked:
        assert chainer.row_hash(r[0], r[1:-1], prev) == r[-1]
        prev = r[-1]


@pytest.mark.parametrize("key", [None, b"k" * 32], ids=["unkeyed", "keyed"])
def test_link_split_gives_rows_without_a_caller_apart_with_the_same_hashes(
    key: bytes | None,
) -> None:
    rows = _rows()
    chainer = Chainer(key)
    linked, last = chainer.link(7, GENESIS, rows)
    full, bare, split_last = chainer.link_split(7, GENESIS, rows)
    assert split_last == last
    assert sorted([*full, *[(*b[:7], *NONE9, b[7]) for b in bare]]) == sorted(linked)
    assert [b[0] for b in bare] == [7, 9, 10, 12]  # the rows whose caller is all None
    assert all(len(b) == 8 for b in bare)
    assert [f[0] for f in full] == [8, 11]


def test_lookalikes_and_values_that_are_not_text_hash_as_they_are() -> None:
    """Text that merely contains an envelope's opening, bytes and None are hashed
    unchanged (the batch-level check is conservative; chain_view decides)."""
    lookalike = '{"note":"{\\"$enc\\":\\"v1\\",\\"kid\\":\\"x"}'
    rows: list[tuple[object, ...]] = [
        ("t", "tool", lookalike, "SUCCESS", "$enc:v1:not-an-envelope", 0.5, *NONE9),
        ("t", "tool", None, "SUCCESS", None, 0.5, *NONE9),
        ("t", "tool", "{}", "FAILURE", "plain", None, *NONE9),
    ]
    linked, _ = Chainer().link(1, GENESIS, rows)
    prev = GENESIS
    for row_id, (row, out) in enumerate(zip(rows, linked, strict=True), start=1):
        prev = hashlib.sha256(orjson.dumps([row_id, *row, prev])).hexdigest()
        assert out[-1] == prev


def test_an_empty_batch_links_to_nothing_and_keeps_the_tail() -> None:
    assert Chainer().link_split(1, "ab" * 32, []) == ([], [], "ab" * 32)
    assert Chainer(b"k" * 32).link(1, GENESIS, []) == ([], GENESIS)


@pytest.mark.parametrize("length", [1, 31, 32, 63, 64, 65, 128, 1000])
def test_precomputed_hmac_is_hmac(length: int) -> None:
    key = bytes((i * 7 + length) % 256 for i in range(length))
    digest = _hmac_sha256(key)
    for data in (b"", b"x", b"[1]" * 40, bytes(range(256)) * 3):
        assert digest(data) == hmac.new(key, data, hashlib.sha256).hexdigest()
    # the precomputed states are copied, never consumed: the same input, the same hash
    assert digest(b"again") == digest(b"again")


def test_keyed_digest_uses_the_scheme_subkey_not_the_raw_key() -> None:
    key = b"k" * 32
    data = b'["meta","x","y",2]'
    subkey = hkdf_sha256(key, b"finops-audit/v2/chain")
    assert Chainer(key).digest(data) == hmac.new(subkey, data, hashlib.sha256).hexdigest()
    assert Chainer(key, scheme=1).digest(data) == hmac.new(key, data, hashlib.sha256).hexdigest()
    assert Chainer(None).digest(data) == hashlib.sha256(data).hexdigest()
