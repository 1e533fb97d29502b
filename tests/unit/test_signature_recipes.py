"""The documented signature recipes, recomputed from scratch, and HKDF's output bound.

Why: without a key anyone must be able to check a trail's signed records with
``sha256`` and a JSON array, so the recipe (labels included) is a promise to
auditors and to older anchor files, not an implementation detail: changing a
label would silently make every anchor written so far fail. HKDF-SHA256 yields
at most 255 blocks (RFC 5869); asking for more is a clear error.
"""

from __future__ import annotations

import hashlib

import orjson
import pytest

from finops_audit._chain import Chainer, hkdf_sha256


def _sha(value: list[object]) -> str:
    return hashlib.sha256(orjson.dumps(value)).hexdigest()


def test_an_unkeyed_anchor_signature_is_sha256_of_its_labelled_fields() -> None:
    fields = [42, "ab" * 32, 42, "2026-01-01T00:00:00.000000+00:00"]
    assert Chainer(None).anchor_signature(fields) == "sha256:" + _sha(["anchor", *fields])


def test_a_keyed_anchor_signature_is_not_the_unkeyed_one() -> None:
    fields = [1, "0" * 64, 1, "t"]
    keyed = Chainer(b"k" * 32).anchor_signature(fields)
    assert keyed.startswith("hmac-sha256:")
    assert keyed != Chainer(b"j" * 32).anchor_signature(fields)


def test_unkeyed_checkpoint_and_meta_signatures_follow_their_recipes() -> None:
    chainer = Chainer(None)
    assert chainer.checkpoint_signature(5, "h", 5, "t") == _sha(["checkpoint", 5, "h", 5, "t"])
    assert chainer.meta_signature("legacy_through", "0") == _sha(
        ["meta", "legacy_through", "0", chainer.scheme]
    )
    assert chainer.for_scheme(1).meta_signature("legacy_through", "0") == _sha(
        ["meta", "legacy_through", "0"]
    )


def test_hkdf_yields_up_to_255_blocks_and_refuses_more() -> None:
    longest = hkdf_sha256(b"key", b"info", 255 * 32)
    assert len(longest) == 8160
    assert longest[:32] == hkdf_sha256(b"key", b"info")
    with pytest.raises(ValueError, match=r"^HKDF-SHA256 yields at most 8160 bytes$"):
        hkdf_sha256(b"key", b"info", 255 * 32 + 1)
