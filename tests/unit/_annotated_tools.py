"""Tools whose annotations are strings (PEP 563), as in many MCP servers."""

from __future__ import annotations

from tests.helpers import Context


async def describe_budget(account: str, ctx: Context) -> str:
    return account


def describe_budget_sync(ctx: Context, account: str, limit: int = 5) -> str:
    return account


def with_optional_context(account: str, ctx: Context | None = None) -> str:
    return account
