"""Bad keyrings are start-up errors naming the variable, never a byte of a key.

Not 32 bytes, bad base64, a duplicate key id, a keyring file others can read,
both variables at once, and a keyring without the ``crypto`` extra (a real
interpreter in which ``cryptography`` cannot be imported).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finops_audit import AuditService
from finops_audit.config import load_settings
from finops_audit.exceptions import AuditConfigError

from ._crypto import NEW, OLD, RING_BOTH, RING_OLD

SHORT = base64.b64encode(os.urandom(16)).decode()
LONG = base64.b64encode(os.urandom(48)).decode()


@pytest.mark.parametrize(
    ("ring", "says"),
    [
        (f"k1:{SHORT}", "16 bytes"),
        (f"k1:{LONG}", "48 bytes"),
        ("k1:not*base64!", "not valid base64"),
        (f"k1:{OLD[:-3]}", "not valid base64"),
        (f"k1:{OLD},k1:{NEW}", "appears twice"),
        (f"k1{OLD}", "key_id:base64key"),
        (f"bad id:{OLD}", "key_id:base64key"),
        (f"k/1:{OLD}", "key id"),
        ("", "empty"),
        ("   ,  ", "empty"),
    ],
)
def test_a_bad_keyring_names_the_variable_and_no_key(
    monkeypatch: pytest.MonkeyPatch, ring: str, says: str
) -> None:
    monkeypatch.setenv("AUDIT_ENCRYPTION_KEYS", ring)
    with pytest.raises(AuditConfigError) as err:
        load_settings()
    text = str(err.value)
    assert "AUDIT_ENCRYPTION_KEYS" in text
    assert says in text
    for key in (OLD, NEW, SHORT, LONG):
        assert key not in text
    with pytest.raises(AuditConfigError, match="encryption_keys"):
        AuditService(Path("x.db"), encryption_keys=ring) if ring.strip(" ,") else load_settings(
            encryption_keys=ring + "x"
        )


def test_good_keyrings_in_either_alphabet_and_with_newlines(tmp_path: Path) -> None:
    urlsafe = base64.urlsafe_b64encode(bytes([251] * 32)).decode()
    assert "-" in urlsafe or "_" in urlsafe
    settings = load_settings(encryption_keys=f"a:{urlsafe}\n b:{OLD} , c:{NEW}")
    assert settings.encryption_keys is not None
    assert OLD not in repr(settings)
    assert OLD not in str(settings.model_dump())


def _key_file(tmp_path: Path, mode: int, text: str = RING_BOTH) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"# finops-audit keyring\n{text.replace(',', chr(10))}\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_a_keyring_file_others_can_read_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: int
) -> None:
    monkeypatch.setenv("AUDIT_ENCRYPTION_KEYS_FILE", str(_key_file(tmp_path, mode)))
    with pytest.raises(AuditConfigError) as err:
        load_settings()
    assert "AUDIT_ENCRYPTION_KEYS_FILE" in str(err.value)
    assert "chmod 600" in str(err.value)
    assert OLD not in str(err.value)


def test_a_private_keyring_file_works_and_its_errors_name_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _key_file(tmp_path, 0o600)
    monkeypatch.setenv("AUDIT_ENCRYPTION_KEYS_FILE", str(path))
    with AuditService(tmp_path / "a.db") as service:
        from ._crypto import record

        record(service)
        assert service.get_logs()[0].error_message is not None
    path.chmod(0o600)
    path.write_text(f"k1:{SHORT}\n")
    with pytest.raises(AuditConfigError, match=r"AUDIT_ENCRYPTION_KEYS_FILE.*16 bytes"):
        load_settings()
    monkeypatch.setenv("AUDIT_ENCRYPTION_KEYS_FILE", str(tmp_path / "missing"))
    with pytest.raises(AuditConfigError, match=r"AUDIT_ENCRYPTION_KEYS_FILE.*cannot read"):
        load_settings()
    monkeypatch.setenv("AUDIT_ENCRYPTION_KEYS_FILE", str(tmp_path))
    with pytest.raises(AuditConfigError, match="AUDIT_ENCRYPTION_KEYS_FILE"):
        load_settings()


def test_a_symlinked_keyring_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = _key_file(tmp_path, 0o600)
    link = tmp_path / "link"
    link.symlink_to(target)
    monkeypatch.setenv("AUDIT_ENCRYPTION_KEYS_FILE", str(link))
    with pytest.raises(AuditConfigError, match="AUDIT_ENCRYPTION_KEYS_FILE"):
        load_settings()


def test_both_variables_at_once_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AUDIT_ENCRYPTION_KEYS", RING_OLD)
    monkeypatch.setenv("AUDIT_ENCRYPTION_KEYS_FILE", str(_key_file(tmp_path, 0o600)))
    with pytest.raises(AuditConfigError, match="not both"):
        load_settings()


def test_otlp_encrypted_fields_accepts_ciphertext_or_omit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().otlp_encrypted_fields == "ciphertext"
    assert load_settings(otlp_encrypted_fields="omit").otlp_encrypted_fields == "omit"
    monkeypatch.setenv("AUDIT_OTLP_ENCRYPTED_FIELDS", "plaintext")
    with pytest.raises(AuditConfigError, match="AUDIT_OTLP_ENCRYPTED_FIELDS"):
        load_settings()


_NO_CRYPTOGRAPHY = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "cryptography" or name.startswith("cryptography."):
            raise ImportError("blocked for the test")
        return None
sys.meta_path.insert(0, Block())
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "cryptography" else _find(name, *a)
from finops_audit import AuditService
from finops_audit.exceptions import AuditConfigError
try:
    AuditService("t.db")
    print("no keyring: ok")
    import os
    os.environ["AUDIT_ENCRYPTION_KEYS"] = sys.argv[1]
    AuditService("t.db")
except AuditConfigError as exc:
    print("error:", exc)
"""


def test_a_keyring_without_the_crypto_extra_names_the_extra(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
    done = subprocess.run(
        [sys.executable, "-c", _NO_CRYPTOGRAPHY, RING_OLD],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no keyring: ok" in done.stdout
    assert "AUDIT_ENCRYPTION_KEYS" in done.stdout
    assert "pip install 'finops-audit[crypto]'" in done.stdout
    assert OLD not in done.stdout + done.stderr
