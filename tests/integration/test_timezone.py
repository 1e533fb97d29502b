"""Stored timestamps are UTC whatever the machine's time zone (issue 10, section 5).

On a UTC machine a timestamp written in local time passes every other test.
So a real interpreter runs under ``TZ=America/St_Johns`` (UTC-3:30 or -2:30:
a half-hour offset, so no whole-hour slip can hide either) and checks the raw
column, the entry a reader gets back, the gap row of dropped entries and the
rule that naive query bounds mean UTC. ``.ci/run`` also runs the core suites
a second time under this zone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ZONES = ["America/St_Johns", "Asia/Kolkata"]

_SCRIPT = r"""
import json, sqlite3, sys, time
from datetime import datetime, timedelta, timezone

from finops_audit import AuditService, audit_tool_sync

time.tzset()
offset = time.localtime().tm_gmtoff
db = sys.argv[1]
svc = AuditService(db_path=db, queue_size=1, overflow_policy="drop", flush_interval=60)


@audit_tool_sync(service=svc)
def call(i: int) -> int:
    return i


before = time.time()
call(1)
svc.flush(timeout=30)
# Overflow on purpose: the writer records the drop as a gap row with its own times.
for i in range(50):
    call(i)
svc.flush(timeout=30)
after = time.time()
entry = svc.get_logs(tool_name="call", limit=1000)[-1]
now_local_naive = datetime.now()  # local wall-clock time, no zone
found_until_local = svc.get_logs(tool_name="call", until=now_local_naive, limit=1000)
found_since_utc = svc.get_logs(
    tool_name="call",
    since=datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=5),
    limit=1000,
)
svc.close()
conn = sqlite3.connect(db)
raw = [r[0] for r in conn.execute("SELECT timestamp FROM audit_logs ORDER BY id")]
gaps = [
    json.loads(r[0])
    for r in conn.execute("SELECT parameters FROM audit_logs WHERE tool_name = '__audit_gap__'")
]
print(json.dumps({
    "offset": offset,
    "before": before,
    "after": after,
    "raw": raw,
    "entry": entry.timestamp.isoformat(),
    "entry_utcoffset": entry.timestamp.utcoffset().total_seconds(),
    "until_local": len(found_until_local),
    "since_utc": len(found_since_utc),
    "gaps": gaps,
}))
"""


def _epoch(text: str) -> float:
    return __import__("datetime").datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize("zone", ZONES)
def test_timestamps_are_utc_under_a_non_utc_zone(tmp_path: Path, zone: str) -> None:
    if not Path("/usr/share/zoneinfo", zone).exists():
        pytest.skip(f"no tzdata for {zone}")
    script = tmp_path / "tz.py"
    script.write_text(_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUDIT_")}
    env["TZ"] = zone
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "audit.db")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["offset"] != 0, "TZ did not take effect in the child"
    assert out["offset"] % 3600 != 0 or zone != "America/St_Johns"
    # Every stored timestamp says UTC and lies between the clock readings around the calls.
    assert out["raw"]
    for text in out["raw"]:
        assert text.endswith("+00:00"), text
        assert out["before"] - 1 <= _epoch(text) <= out["after"] + 1, (text, out)
    assert out["entry_utcoffset"] == 0
    assert out["before"] - 1 <= _epoch(out["entry"]) <= out["after"] + 1
    # The gap row's own times (parameters) are UTC too.
    assert out["gaps"], "the overflow made no gap row"
    for gap in out["gaps"]:
        for key in ("first_dropped_at", "last_dropped_at"):
            assert gap[key].endswith("+00:00")
            assert out["before"] - 1 <= _epoch(gap[key]) <= out["after"] + 1
    # Naive bounds are UTC: local "now" as a naive bound lies hours before (or
    # after) the calls, never at them.
    assert out["since_utc"] >= 1
    expected_until_local = out["since_utc"] if out["offset"] > 0 else 0
    assert out["until_local"] == expected_until_local
