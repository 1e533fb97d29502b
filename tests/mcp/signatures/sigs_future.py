"""Signatures whose tools/list entry must not change under the audit decorators.

Loaded once per SDK by test_schema_identity.py, with ``_finops_ctxtype.Context`` bound to
that SDK's Context class. Old-style ``Optional`` is part of what is tested.
"""

from __future__ import annotations

# ruff: noqa: UP045
from typing import Annotated, Literal, Optional

from _finops_ctxtype import Context
from pydantic import BaseModel, Field


class Tag(BaseModel):
    key: str
    value: str = ""


class Policy(BaseModel):
    name: str
    required: list[Tag] = Field(default_factory=list, description="required tags")
    limit: Optional[float] = None


async def defaults(a: int, b: str = "x", c: float = 1.5, d: bool = False) -> str:
    """Defaults doc."""
    return "ok"


async def optionals(a: Optional[int] = None, b: int | None = None, c: str | None = "z") -> str:
    """Optionals doc."""
    return "ok"


async def lists(
    ids: list[str], nums: list[int] | None = None, m: dict[str, int] | None = None
) -> list[str]:
    """Lists doc."""
    return ids


async def nested(policy: Policy, tags: list[Tag] = []) -> dict:  # noqa: B006
    """Nested model doc."""
    return policy.model_dump()


async def with_ctx(resource: str, ctx: Context, limit: int = 10) -> str:
    """Context doc."""
    return f"{type(ctx).__name__}"


def sync_with_ctx(resource: str, ctx: Context) -> str:
    """Sync context doc."""
    return f"{type(ctx).__name__}"


def sync_nested(policy: Policy, dry_run: bool = True) -> dict:
    """Sync nested doc."""
    return policy.model_dump()


async def constrained(
    count: Annotated[int, Field(ge=0, le=100, description="how many")] = 10,
    mode: Literal["fast", "thorough"] = "fast",
) -> str:
    """Constrained doc."""
    return mode


def sync_models(policies: list[Policy], strict: bool | None = None) -> int:
    """Sync list-of-models doc."""
    return len(policies)
