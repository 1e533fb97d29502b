"""Every knob of finops_audit, declared once: name, environment variable, default, bounds.

:class:`AuditSettings` reads ``AUDIT_*`` environment variables (pydantic-settings);
explicit arguments win over the environment. :func:`load_settings` turns
pydantic's validation error into an :class:`~finops_audit.AuditConfigError`
whose message names the variable and the accepted values, so a typo in a
server's environment fails at start-up, not at the thousandth call.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ._chain import MIN_KEY_BYTES
from ._envcheck import warn_unknown_variables
from ._keyring import parse_keyring, read_keyring_file
from .exceptions import AuditConfigError

__all__ = [
    "ENV_PREFIX",
    "AuditSettings",
    "Durability",
    "OverflowPolicy",
    "SynchronousMode",
    "load_settings",
]

ENV_PREFIX = "AUDIT_"

SynchronousMode = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
OverflowPolicy = Literal["block", "drop", "raise"]
Durability = Literal["off", "commit"]


class AuditSettings(BaseSettings):
    """All settings, each also an ``AUDIT_<NAME>`` environment variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
        validate_default=True,
        # nan and inf are never a meaningful interval, timeout, rate or age
        # (AUDIT_RETENTION_DAYS=inf made every hourly purge fail).
        allow_inf_nan=False,
    )

    db_path: Path = Field(
        default=Path("audit_logs.db"),
        description="SQLite file of the trail; missing parent folders are created.",
    )
    logging_enabled: bool = Field(
        default=True,
        description="false makes the decorators return the tool itself: zero overhead.",
    )
    batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Rows per SQLite transaction at most."
    )
    flush_interval: float = Field(
        default=0.05,
        gt=0,
        le=60,
        description="Seconds the writer waits before writing a partial batch.",
    )
    queue_size: int = Field(
        default=100_000, ge=1, le=10_000_000, description="Entries held in memory at most."
    )
    synchronous: SynchronousMode = Field(
        default="FULL", description="SQLite PRAGMA synchronous for the writer connection."
    )
    overflow_policy: OverflowPolicy = Field(
        default="block",
        description="When the queue is full: block (wait up to block_timeout, then drop), "
        "drop, or raise AuditQueueFullError.",
    )
    block_timeout: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="Seconds a caller waits for room under the block policy before dropping.",
    )
    max_unwritten_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="Seconds the writer may fall behind before the block policy paces callers "
        "(to that many seconds of writing): what a SIGKILL can lose, at most queue_size.",
    )
    durability: Durability = Field(
        default="off",
        description="commit: a decorated call returns only after its entry is committed "
        "(group commit, waits up to block_timeout); off: it returns after the hand-off.",
    )
    fail_closed: bool = Field(
        default=False,
        description="Durable mode: a call whose entry is not committed within block_timeout "
        "raises AuditUnavailableError instead of returning (the tool has already run).",
    )
    busy_timeout: float = Field(
        default=5.0, ge=0, le=3600, description="Seconds SQLite waits for another writer's lock."
    )
    close_timeout: float = Field(
        default=10.0, gt=0, le=3600, description="Seconds close() waits for the drain."
    )
    handle_signals: bool = Field(
        default=True,
        description="Flush on SIGTERM/SIGINT before the process's own handling goes on.",
    )
    redact: bool = Field(
        default=True,
        description="Redact sensitive keys and secret-shaped values before they are written.",
    )
    redact_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra sensitive key names (comma-separated), matched like the defaults.",
    )
    redact_patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra regular expressions (comma-separated) whose matches are redacted.",
    )
    hmac_key: SecretStr | None = Field(
        default=None,
        description="Key (at least 32 bytes) from which the subkeys of HMAC pseudonyms, the "
        "keyed hash chain and anchors are derived (HKDF). Unset: no key; empty: an error.",
    )
    hmac_fields: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Parameter names (comma-separated) whose values are stored as HMAC pseudonyms.",
    )
    hash_chain: bool = Field(
        default=True, description="Chain each row's hash to the previous row's (tamper evidence)."
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        le=36_500,
        description="Entries older than this many days are purged by the writer, hourly.",
    )
    max_param_bytes: int = Field(
        default=64 * 1024,
        ge=256,
        le=256 * 1024 * 1024,
        description="Largest stored parameters document, in encoded bytes. Above it the "
        "largest values are cut (after redaction), each to a $truncated marker with a "
        "preview; every key and small value is kept.",
    )
    max_error_bytes: int = Field(
        default=8192,
        ge=256,
        le=16 * 1024 * 1024,
        description="Largest stored error message, in UTF-8 bytes (after redaction); a "
        "longer one is cut and ends in '… [truncated, N bytes]'.",
    )
    db_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user@host:5432/db of a central store: the SQLite file "
        "becomes this replica's durable buffer and a forwarder ships it there.",
    )
    replica_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Name of this replica in a central store; default: host name plus a "
        "random suffix kept in the buffer. One buffer file per replica id.",
    )
    forward_batch_size: int = Field(
        default=5000, ge=1, le=100_000, description="Rows per forwarding transaction at most."
    )
    forward_max_rate: float = Field(
        default=50_000,
        ge=0,
        le=100_000_000,
        description="Rows per second a forwarder ships at most while draining a backlog "
        "(0: no limit), so a long outage's backlog does not starve the tools.",
    )
    forward_interval: float = Field(
        default=0.25,
        gt=0,
        le=60,
        description="Seconds between looks at the buffer when it has nothing new.",
    )
    forward_timeout: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="Seconds close() goes on forwarding; the rest waits in the buffer.",
    )
    buffer_retention_hours: float = Field(
        default=24.0,
        ge=0,
        le=876_000,
        description="Hours forwarded rows stay in the local buffer (never unforwarded ones).",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP endpoint (e.g. http://collector:4318): each entry is also "
        "exported as an OTLP log record, from the buffer, without loss.",
    )
    otlp_headers: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Extra HTTP headers for the OTLP endpoint: key=value,key2=value2.",
    )
    otlp_timeout: float = Field(
        default=10.0, gt=0, le=600, description="Seconds one OTLP export request may take."
    )
    otlp_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Log records per OTLP request at most."
    )
    anchor_path: Path | None = Field(
        default=None,
        description="Append-only file (another volume or a log shipper) where the writer "
        "appends signed anchors of the trail's end: verify --anchors then notices deleted "
        "newest rows.",
    )
    anchor_interval: float = Field(
        default=5.0,
        gt=0,
        le=86_400,
        description="Seconds of activity between two anchors (one more at close).",
    )
    encryption_keys: SecretStr | None = Field(
        default=None,
        description="Keyring of key_id:base64key pairs (comma-separated; 256-bit keys); the "
        "first encrypts, the others only decrypt. Needs finops-audit[crypto].",
    )
    encryption_keys_file: Path | None = Field(
        default=None,
        description="File holding the keyring (same format, one pair a line allowed); it "
        "must be mode 0600.",
    )
    encrypt_fields: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="What a keyring encrypts: parameter names (matched by their words, like "
        "redaction), '*' for every parameter value, 'error_message'. Empty: all of them.",
    )
    otlp_encrypted_fields: Literal["ciphertext", "omit"] = Field(
        default="ciphertext",
        description="What OTLP export sends for an encrypted field: its ciphertext envelope, "
        "or nothing (omit).",
    )

    @field_validator(
        "redact_keys", "redact_patterns", "hmac_fields", "encrypt_fields", mode="before"
    )
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("redact_patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern {pattern!r} is not a valid regular expression: {exc}"
                ) from None
        return value

    @field_validator("hmac_key")
    @classmethod
    def _a_long_key(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty value must never silently mean "no key".
        if value is None:
            return None
        size = len(value.get_secret_value().encode("utf-8"))
        if size < MIN_KEY_BYTES:
            raise ValueError(
                f"must be at least {MIN_KEY_BYTES} bytes (got {size}); generate one with "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`, or unset it "
                "for no key"
            )
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _a_keyring(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parse_keyring(value.get_secret_value())  # raises naming what is wrong, never a key
        _crypto_installed()
        return value

    @field_validator("encryption_keys_file")
    @classmethod
    def _a_keyring_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        if info.data.get("encryption_keys") is not None:
            raise ValueError("set AUDIT_ENCRYPTION_KEYS or AUDIT_ENCRYPTION_KEYS_FILE, not both")
        read_keyring_file(value)
        _crypto_installed()
        return value

    @field_validator("anchor_path")
    @classmethod
    def _an_anchor_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        if str(value).strip() in ("", "."):  # Path("") is "."
            raise ValueError("must be a file path (unset it for no anchors)")
        if info.data.get("hash_chain") is False:
            raise ValueError("anchors need the hash chain: unset AUDIT_HASH_CHAIN=false")
        return value

    @field_validator("db_url")
    @classmethod
    def _a_postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if not text:
            return None
        if not text.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (postgresql://user@host:5432/db)")
        return SecretStr(text)

    @field_validator("otlp_endpoint")
    @classmethod
    def _an_http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        text = value.strip()
        if not text.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (OTLP/HTTP, e.g. :4318)")
        return text

    @field_validator("otlp_headers", mode="before")
    @classmethod
    def _pairs(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return json.loads(text)
            out: dict[str, str] = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                key, sep, val = part.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"expected key=value pairs, got {part.split('=')[0]!r}")
                out[key.strip()] = val.strip()
            return out
        return value

    @field_validator("synchronous", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("overflow_policy", "durability", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _default_batch_fits_queue(cls, data: Any) -> Any:
        # A small queue alone is a valid choice: the default batch shrinks to fit.
        if isinstance(data, dict) and "batch_size" not in data and "queue_size" in data:
            try:
                queue = int(data["queue_size"])
            except (TypeError, ValueError):
                return data
            if 1 <= queue < 1000:
                data = {**data, "batch_size": queue}
        return data

    @field_validator("db_path", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        # Path("") is Path("."): an empty AUDIT_DB_PATH must not become the cwd.
        if isinstance(value, (str, Path)) and str(value).strip() in ("", "."):
            raise ValueError("must not be empty: name the SQLite file of the trail")
        return value

    @field_validator("db_path")
    @classmethod
    def _a_file(cls, value: Path) -> Path:
        text = str(value)
        if text == ":memory:" or text.startswith("file:") or text == "":
            raise ValueError(
                "must be a file path: an in-memory database would lose the trail "
                "(use a temporary file in tests)"
            )
        return value

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> AuditSettings:
        if self.batch_size > self.queue_size:
            raise ValueError(
                f"AUDIT_BATCH_SIZE / batch_size ({self.batch_size}) must not exceed "
                f"AUDIT_QUEUE_SIZE / queue_size ({self.queue_size})"
            )
        return self

    @model_validator(mode="after")
    def _durable_waits(self) -> AuditSettings:
        # In durable mode block_timeout is how long a call waits for its commit:
        # zero would make every call return (or fail closed) unconfirmed.
        if self.durability == "commit" and self.block_timeout == 0:
            raise ValueError(
                "AUDIT_BLOCK_TIMEOUT / block_timeout must be above 0 with "
                "AUDIT_DURABILITY=commit: it is how long a call waits for its commit"
            )
        return self

    # Secrets stay out of repr(), str(), model_dump() and logs: hmac_key and
    # db_url are SecretStr; the OTLP headers (an Authorization or API key
    # header, typically) keep their names and lose their values.
    @field_serializer("otlp_headers")
    def _masked_headers(self, headers: dict[str, str]) -> dict[str, str]:
        return dict.fromkeys(headers, MASK)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "otlp_headers" and isinstance(value, dict):
                yield name, dict.fromkeys(value, MASK)
            else:
                yield name, value


def _crypto_installed() -> None:
    if importlib.util.find_spec("cryptography") is None:
        raise ValueError(
            "a keyring needs the crypto extra (AES-256-GCM from the cryptography package): "
            "pip install 'finops-audit[crypto]'"
        )


#: What a secret setting's value shows as (pydantic's SecretStr mask).
MASK = "**********"

#: Settings whose values never appear in an error message.
_SECRET_FIELDS = frozenset({"hmac_key", "db_url", "otlp_headers", "encryption_keys"})


def load_settings(**overrides: Any) -> AuditSettings:
    """Build settings from explicit ``overrides`` (non-None) over the environment.

    Raises :class:`AuditConfigError` naming the argument or ``AUDIT_*`` variable.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    warn_unknown_variables(ENV_PREFIX, AuditSettings.model_fields)
    try:
        return AuditSettings(**given)
    except ValidationError as exc:
        raise AuditConfigError(_describe(exc, given)) from None


def _describe(exc: ValidationError, given: dict[str, Any]) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = err.get("loc", ())
        field = str(loc[0]) if loc else ""
        if field in AuditSettings.model_fields:
            where = f"argument {field}=" if field in given else f"{ENV_PREFIX}{field.upper()}="
            value = "'***'" if field in _SECRET_FIELDS else repr(err.get("input"))
            shown = f"{where}{value}"
        elif field:
            shown = f"unknown setting {field!r}"
        else:
            shown = "settings"
        message = err["msg"]
        if err.get("type", "").startswith("bool"):
            message += " (accepted: true/false, 1/0, yes/no, on/off)"
        parts.append(f"{shown} is invalid: {message}")
    return "; ".join(parts)
