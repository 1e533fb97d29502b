"""The ``finops-audit demo`` workload: FinOps tag-compliance tools under load.

A deterministic mix of audited ``async def`` and plain ``def`` tools, some of
which fail the way real ones do (unknown regions, throttling, bad input). Async
tools run concurrently on the event loop; sync tools run in worker threads
with no event loop, as mcp 2.x and fastmcp run them.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .decorators import audit_tool, audit_tool_sync
from .service import AuditService

__all__ = ["DemoTools", "run_demo"]

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2")
RESOURCE_TYPES = ("ec2:instance", "s3:bucket", "rds:db", "lambda:function", "ebs:volume")
REQUIRED_TAGS = ("CostCenter", "Owner", "Environment", "Application")
POLICIES: dict[str, dict[str, Any]] = {
    "default": {
        "required": list(REQUIRED_TAGS),
        "allowed_environments": ["prod", "staging", "dev"],
    },
    "strict": {"required": [*REQUIRED_TAGS, "DataClassification"], "max_untagged_days": 7},
}


class ThrottlingError(RuntimeError):
    """Stands in for an AWS API throttling response."""


@functools.cache
def _resources(region: str, resource_type: str, count: int = 40) -> list[dict[str, Any]]:
    rng = random.Random(f"{region}/{resource_type}")
    out = []
    for i in range(count):
        tags = {t: f"{t.lower()}-{rng.randrange(5)}" for t in REQUIRED_TAGS if rng.random() > 0.15}
        out.append({"id": f"{resource_type.split(':')[1]}-{region}-{i:04d}", "tags": tags})
    return out


@dataclass(frozen=True)
class DemoTools:
    """The audited tools, bound to one service."""

    check_tag_compliance: Callable[..., Any]
    find_untagged_resources: Callable[..., Any]
    get_tag_policy: Callable[..., Any]
    estimate_untagged_cost: Callable[..., Any]


def make_tools(service: AuditService) -> DemoTools:
    @audit_tool(service=service)
    async def check_tag_compliance(
        resource_types: list[str], region: str = "us-east-1", severity: str = "all"
    ) -> dict[str, Any]:
        """Share of resources carrying every required tag."""
        if region not in REGIONS:
            raise ValueError(f"unknown region {region!r}")
        await asyncio.sleep(0)
        total = compliant = 0
        for rtype in resource_types:
            for res in _resources(region, rtype):
                total += 1
                compliant += all(t in res["tags"] for t in REQUIRED_TAGS)
        return {"total": total, "compliant": compliant, "severity": severity}

    @audit_tool(service=service)
    async def find_untagged_resources(region: str, resource_type: str) -> list[str]:
        """Resources missing at least one required tag."""
        if random.random() < 0.02:
            raise ThrottlingError("Rate exceeded (ThrottlingException)")
        await asyncio.sleep(0)
        return [
            r["id"]
            for r in _resources(region, resource_type)
            if any(t not in r["tags"] for t in REQUIRED_TAGS)
        ]

    @audit_tool_sync(service=service)
    def get_tag_policy(policy_name: str = "default") -> dict[str, Any]:
        """The tag policy resources are checked against."""
        try:
            return POLICIES[policy_name]
        except KeyError:
            raise LookupError(f"no tag policy named {policy_name!r}") from None

    @audit_tool_sync(service=service)
    def estimate_untagged_cost(account_id: str, monthly_spend_usd: float) -> float:
        """Monthly spend that cannot be attributed to a cost centre."""
        if not (len(account_id) == 12 and account_id.isdigit()):
            raise ValueError(f"account_id must be 12 digits, got {account_id!r}")
        return round(monthly_spend_usd * 0.17, 2)

    return DemoTools(
        check_tag_compliance, find_untagged_resources, get_tag_policy, estimate_untagged_cost
    )


async def _one_call(tools: DemoTools, rng: random.Random) -> None:
    pick = rng.random()
    try:
        if pick < 0.35:
            region = rng.choice(REGIONS) if rng.random() > 0.03 else "mars-north-1"
            await tools.check_tag_compliance(
                resource_types=rng.sample(RESOURCE_TYPES, 2), region=region, severity="high"
            )
        elif pick < 0.65:
            await tools.find_untagged_resources(
                region=rng.choice(REGIONS), resource_type=rng.choice(RESOURCE_TYPES)
            )
        elif pick < 0.85:
            name = "default" if rng.random() > 0.05 else "legacy"
            await asyncio.to_thread(tools.get_tag_policy, policy_name=name)
        else:
            account = f"{rng.randrange(10**12):012d}" if rng.random() > 0.04 else "12345"
            await asyncio.to_thread(
                tools.estimate_untagged_cost, account_id=account, monthly_spend_usd=12_500.0
            )
    except Exception:
        pass  # the failure is what the trail is for


async def run_demo(
    service: AuditService,
    calls: int,
    concurrency: int = 32,
    on_progress: Callable[[int], None] | None = None,
    seed: int = 2026,
) -> None:
    """Make ``calls`` audited tool calls, ``concurrency`` at a time, then flush."""
    tools = make_tools(service)
    rng = random.Random(seed)
    random.seed(seed)
    remaining = calls
    step = max(1, min(concurrency, calls))
    while remaining > 0:
        n = min(step, remaining)
        await asyncio.gather(*(_one_call(tools, rng) for _ in range(n)))
        remaining -= n
        if on_progress is not None:
            on_progress(n)
    await service.aflush()
