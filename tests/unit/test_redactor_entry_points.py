"""``Redactor``: one entry at a time redacts exactly what the writer's batch path does.

Why: ``Redactor.parameters``/``entry`` decide per entry, with a cheap byte
prefilter, whether to walk the document; the writer's ``entries`` decides for
a whole batch with another prefilter. A prefilter that misses a shape lets that
secret through unredacted on one path only, so every shape is checked on both
paths, next to a near miss that must be stored unchanged.
"""

from __future__ import annotations

import orjson
import pytest

from finops_audit.redaction import REDACTED, Redactor

KEY = "k" * 32
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # 40 base64, mixed case
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"

#: (parameters, whether something in them must be redacted or pseudonymised)
CASES = [
    ({"pass_word": "hunter2"}, True),  # a sensitive key, separators ignored
    ({"Client-Secret": "s3cr3t"}, True),
    ({"note": "Authorization: Bearer abcdefgh12345678"}, True),
    ({"note": "Basic dXNlcjpwYXNzd29yZA=="}, True),
    ({"note": "key AKIAIOSFODNN7EXAMPLE here"}, True),
    ({"note": AWS_SECRET}, True),
    ({"note": JWT}, True),
    ({"note": "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----"}, True),
    ({"account": "123456789012"}, True),  # pseudonymised with a key
    ({"resource": "arn:aws:s3:::my-bucket"}, True),
    ({"region": "eu-west-1", "n": 3}, False),
    ({"digest": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}, False),  # 40 hex: not a secret
    ({"note": "a" * 39}, False),
    ({"note": "12345678901"}, False),  # 11 digits: not an account id
    ({"x_api_key": 5}, True),  # a sensitive key, whatever its value
]


def _ids(case: tuple[dict[str, object], bool]) -> str:
    return ",".join(case[0])


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "unkeyed"])
def test_one_entry_and_a_batch_redact_the_same(
    case: tuple[dict[str, object], bool], keyed: bool
) -> None:
    params, sensitive = case
    redactor = Redactor(hmac_key=KEY if keyed else None)
    raw = orjson.dumps(params)
    plain = orjson.dumps({"filler": "nothing to see"})
    alone = redactor.parameters(raw)
    entry, _ = redactor.entry(raw, None)
    batch = redactor.entries([(plain, None), (raw, None), (plain, None)])
    assert alone == entry == batch[1][0]
    assert batch[0][0] == batch[2][0] == plain
    ids_only = "account" in params or "resource" in params
    if sensitive and (keyed or not ids_only):
        assert alone != raw, f"{params} was stored unchanged"
        assert REDACTED.encode() in alone or b"hmac:" in alone
        for value in params.values():
            if isinstance(value, str):
                assert value not in alone.decode(), "the secret or id itself is still there"
    else:
        assert alone == raw


def test_a_40_character_secret_is_told_from_a_digest_by_mixed_case() -> None:
    redactor = Redactor()
    for value, secret in [
        (AWS_SECRET, True),
        (AWS_SECRET.lower(), False),
        ("ABCDEFGHIJKLMNOPQRST" * 2, False),  # upper case only
        (AWS_SECRET[:39], False),  # 39 characters
    ]:
        out = orjson.loads(redactor.parameters(orjson.dumps({"note": value})))["note"]
        assert (out == REDACTED) is secret or (REDACTED in out) is secret, value


def test_extra_patterns_are_found_one_entry_at_a_time_and_in_a_batch() -> None:
    redactor = Redactor(extra_patterns=[r"TICKET-\d{3}"])
    raw = orjson.dumps({"note": "see TICKET-123"})
    other = orjson.dumps({"note": "see TICKET-12"})
    assert REDACTED.encode() in redactor.parameters(raw)
    assert redactor.parameters(other) == other
    [(one, _), (two, _)] = redactor.entries([(raw, None), (other, None)])
    assert REDACTED.encode() in one
    assert two == other


def test_pseudonyms_are_stable_distinct_and_need_the_key() -> None:
    redactor = Redactor(hmac_key=KEY)
    first = redactor.pseudonym("123456789012")
    assert first == redactor.pseudonym("123456789012")
    assert first != redactor.pseudonym("123456789013")
    assert first != Redactor(hmac_key="j" * 32).pseudonym("123456789012")
    assert first.startswith("hmac:")
    assert len(first) == len("hmac:") + 32
    with pytest.raises(ValueError, match="AUDIT_HMAC_KEY"):
        Redactor().pseudonym("123456789012")
