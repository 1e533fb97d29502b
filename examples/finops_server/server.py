"""A FinOps tag-compliance MCP server, audited with finops_audit.

Run it over stdio with whichever MCP SDK is installed (fastmcp, else the
official ``mcp`` 2.x ``MCPServer``, else ``mcp`` 1.x ``FastMCP``)::

    AUDIT_DB_PATH=/tmp/finops-audit.db python examples/finops_server/server.py
    python -m examples.finops_server --sdk mcp2          # from the repository root

Every tool is ``@server.tool()`` over ``@audit_tool`` / ``@audit_tool_sync``:
the server's decorator goes outermost, so it registers the audited wrapper. On
fastmcp and mcp 2.x the finops_audit middleware is registered too, so calls
rejected for invalid arguments and calls to unknown tools are in the trail.

The data is ``resources.json`` next to this file: synthetic, deterministic,
no cloud account needed. stdout is the MCP protocol: nothing else is printed
there; logs go to stderr.
"""

import argparse
import asyncio
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from finops_audit import audit_tool, audit_tool_sync

__all__ = ["SDKS", "CostFilter", "build_server", "detect_sdk", "main"]

SDKS = ("fastmcp", "mcp2", "mcp1")
DATA_FILE = Path(__file__).with_name("resources.json")
SERVER_NAME = "finops-tag-compliance"

logger = logging.getLogger("finops_server")


class CostFilter(BaseModel):
    """Which resources count towards an untagged-cost estimate."""

    regions: list[str] = Field(default_factory=list, description="regions to include; all if empty")
    resource_types: list[str] = Field(
        default_factory=list, description="resource types to include; all if empty"
    )
    min_monthly_cost_usd: float = Field(0.0, ge=0, description="ignore cheaper resources")


def _load() -> dict[str, Any]:
    with DATA_FILE.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


DATA = _load()


def _policy(policy_name: str) -> dict[str, Any]:
    try:
        policy: dict[str, Any] = DATA["policies"][policy_name]
    except KeyError:
        known = ", ".join(sorted(DATA["policies"]))
        raise ValueError(f"unknown tag policy {policy_name!r}; known policies: {known}") from None
    return policy


def _violations(resource: dict[str, Any], policy: dict[str, Any]) -> list[str]:
    tags: dict[str, str] = resource["tags"]
    problems = [f"missing tag {key!r}" for key in policy["required_tags"] if key not in tags]
    for key, allowed in policy["allowed_values"].items():
        if key in tags and tags[key] not in allowed:
            problems.append(f"tag {key!r} has value {tags[key]!r}, allowed: {', '.join(allowed)}")
    return problems


def _select(resource_types: list[str] | None, region: str | None) -> list[dict[str, Any]]:
    known_types = {r["type"] for r in DATA["resources"]}
    for resource_type in resource_types or ():
        if resource_type not in known_types:
            raise ValueError(
                f"unknown resource type {resource_type!r}; known: {', '.join(sorted(known_types))}"
            )
    return [
        r
        for r in DATA["resources"]
        if (not resource_types or r["type"] in resource_types)
        and (region is None or r["region"] == region)
    ]


def detect_sdk() -> str:
    """The first installed of fastmcp, mcp 2.x, mcp 1.x."""
    if importlib.util.find_spec("fastmcp") is not None:
        return "fastmcp"
    if importlib.util.find_spec("mcp") is None:
        raise SystemExit(
            "no MCP SDK is installed: pip install 'finops-audit[mcp]' or 'finops-audit[fastmcp]'"
        )
    if importlib.util.find_spec("mcp.server.mcpserver") is not None:
        return "mcp2"
    return "mcp1"


def _make_server(sdk: str) -> Any:
    if sdk == "fastmcp":
        from fastmcp import FastMCP

        from finops_audit.integrations.fastmcp import AuditMiddleware as FastMCPAuditMiddleware

        return FastMCP(SERVER_NAME, middleware=[FastMCPAuditMiddleware()])
    if sdk == "mcp2":
        from mcp.server.mcpserver import MCPServer

        from finops_audit.integrations.mcp import AuditMiddleware

        return MCPServer(SERVER_NAME, middleware=[AuditMiddleware()])
    if sdk == "mcp1":
        from mcp.server.fastmcp import FastMCP as Mcp1FastMCP

        return Mcp1FastMCP(SERVER_NAME)  # mcp 1.x has no middleware: decorators only
    raise ValueError(f"unknown sdk {sdk!r}; choose one of {', '.join(SDKS)}")


def build_server(sdk: str) -> Any:
    """The server for ``sdk``, with every tool registered and audited."""
    server = _make_server(sdk)

    @server.tool()
    @audit_tool
    async def check_tag_compliance(
        resource_types: list[str] | None = None,
        policy_name: str = "default",
        region: str | None = None,
    ) -> dict[str, Any]:
        """Check resources against a tag policy and list every violation.

        Filter by resource types (for example ec2_instance, s3_bucket) and region.
        """
        policy = _policy(policy_name)
        resources = _select(resource_types, region)
        failing = []
        for resource in resources:
            problems = _violations(resource, policy)
            if problems:
                failing.append(
                    {"id": resource["id"], "type": resource["type"], "problems": problems}
                )
        await asyncio.sleep(0)  # a real server would await a cloud inventory here
        checked = len(resources)
        return {
            "policy": policy_name,
            "checked": checked,
            "compliant": checked - len(failing),
            "compliance_rate": round((checked - len(failing)) / checked, 4) if checked else 1.0,
            "violations": failing,
        }

    @server.tool()
    @audit_tool_sync
    def find_untagged_resources(
        tag_key: str = "owner",
        resource_type: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Resources that lack the tag ``tag_key`` (exact, case-sensitive key), costliest first."""
        found = [
            {
                "id": r["id"],
                "type": r["type"],
                "region": r["region"],
                "monthly_cost_usd": r["monthly_cost_usd"],
            }
            for r in _select([resource_type] if resource_type else None, None)
            if tag_key not in r["tags"]
        ]
        found.sort(key=lambda r: (-r["monthly_cost_usd"], r["id"]))
        return found[: max(limit, 0)]

    @server.tool()
    @audit_tool_sync
    def get_tag_policy(policy_name: str = "default") -> dict[str, Any]:
        """The required tags and allowed values of a tag policy (default or strict)."""
        return {"name": policy_name, **_policy(policy_name)}

    @server.tool()
    @audit_tool
    async def estimate_untagged_cost(
        account_id: str,
        filters: CostFilter | None = None,
        currency: Literal["USD", "EUR"] = "USD",
    ) -> dict[str, Any]:
        """Monthly cost of the resources in an account that break the default tag policy.

        Fails for an account that is not in the inventory.
        """
        if account_id not in DATA["accounts"]:
            known = ", ".join(sorted(DATA["accounts"]))
            raise ValueError(f"unknown account {account_id!r}; known accounts: {known}")
        f = filters or CostFilter()
        policy = _policy("default")
        total = 0.0
        count = 0
        for r in DATA["resources"]:
            if r["account_id"] != account_id or r["monthly_cost_usd"] < f.min_monthly_cost_usd:
                continue
            if (f.regions and r["region"] not in f.regions) or (
                f.resource_types and r["type"] not in f.resource_types
            ):
                continue
            if _violations(r, policy):
                total += r["monthly_cost_usd"]
                count += 1
        rate = 0.92 if currency == "EUR" else 1.0  # a fixed sample rate: deterministic
        return {
            "account_id": account_id,
            "account_name": DATA["accounts"][account_id],
            "resources": count,
            "monthly_cost": round(total * rate, 2),
            "currency": currency,
        }

    return server


def main(argv: list[str] | None = None) -> None:
    """Parse ``--sdk``, build the server and serve it over stdio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sdk",
        choices=("auto", *SDKS),
        default="auto",
        help="which MCP SDK to serve with (auto: fastmcp, else mcp 2.x, else mcp 1.x)",
    )
    args = parser.parse_args(argv)
    # stderr only: stdout carries the protocol.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sdk = detect_sdk() if args.sdk == "auto" else args.sdk
    logger.info("serving %s over stdio with %s", SERVER_NAME, sdk)
    server = build_server(sdk)
    if sdk == "fastmcp":
        server.run(show_banner=False)
    else:
        server.run()


if __name__ == "__main__":
    main()
