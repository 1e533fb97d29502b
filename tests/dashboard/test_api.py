"""The JSON API through Starlette's test client: filters, auth, Host/Origin, bad input, headers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from finops_audit import AuditService
from finops_audit.dashboard import create_app

from .conftest import TOKEN, TestClient


def ids(client: TestClient, path: str) -> list[int]:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return [e["id"] for e in response.json()["entries"]]


def test_logs_newest_first_with_every_field(client: TestClient, trail: AuditService) -> None:
    body = client.get("/api/logs?limit=5").json()
    assert [e["id"] for e in body["entries"]] == [e.id for e in trail.get_logs(limit=5)]
    first = body["entries"][0]
    assert {"parameters", "user", "trace_id", "client_name", "event_id"} <= first.keys()
    assert body["last_id"] >= first["id"] - 5


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/api/logs?tool=get_costs&limit=1000", {"tool_name": "get_costs"}),
        ("/api/logs?tool_name=find_untagged&limit=1000", {"tool_name": "find_untagged"}),
        ("/api/logs?status=failure&limit=1000", {"status": "FAILURE"}),
        ("/api/logs?user=bob&limit=1000", {"user": "bob"}),
        ("/api/logs?user=bob&status=SUCCESS&limit=1000", {"user": "bob", "status": "SUCCESS"}),
    ],
)
def test_filters_match_the_library(
    client: TestClient, trail: AuditService, url: str, expected: dict[str, str]
) -> None:
    entries = client.get(url).json()["entries"]
    assert entries
    for entry in entries:
        for key, value in expected.items():
            assert entry[key] == value
    kwargs = {("tool_name" if k == "tool_name" else k): v for k, v in expected.items()}
    assert len(entries) == len(trail.get_logs(limit=1000, **kwargs))


def test_parameter_value_and_time_filters(client: TestClient, trail: AuditService) -> None:
    mars = client.get("/api/logs?param=mars-1&limit=100").json()["entries"]
    assert len(mars) == 5
    assert all(e["parameters"]["region"] == "mars-1" for e in mars)
    newest = trail.get_logs(limit=1)[0].timestamp.isoformat()
    assert ids(client, f"/api/logs?since={newest}") == [trail.get_logs(limit=1)[0].id]
    assert ids(client, "/api/logs?until=2000-01-01T00:00:00Z") == []
    assert len(ids(client, "/api/logs?since=1h&limit=1000")) == 46


def test_polling_endpoint_pages_by_id(client: TestClient, trail: AuditService) -> None:
    everything = sorted(e.id for e in trail.get_logs(limit=1000))
    first = client.get("/api/logs?after_id=0&limit=20").json()
    assert [e["id"] for e in first["entries"]] == everything[:20]
    assert first["more"] is True
    second = client.get(f"/api/logs?after_id={first['last_id']}&limit=1000").json()
    assert [e["id"] for e in second["entries"]] == everything[20:]
    assert second["more"] is False
    empty = client.get(f"/api/logs?after_id={everything[-1]}").json()
    assert empty["entries"] == []
    assert empty["last_id"] == everything[-1]
    bob = client.get("/api/logs?after_id=0&user=bob&status=FAILURE").json()["entries"]
    assert len(bob) == 5


def test_one_entry_and_missing_entry(client: TestClient, trail: AuditService) -> None:
    entry = trail.get_logs(limit=1, status="FAILURE")[0]
    body = client.get(f"/api/logs/{entry.id}").json()
    assert body["id"] == entry.id
    assert body["error_message"] == entry.error_message
    assert body["parameters"] == entry.parameters
    assert client.get("/api/logs/999999").status_code == 404
    assert client.get("/api/logs/abc").status_code == 400
    assert client.get("/api/logs/0").status_code == 400


def test_analytics_are_the_library_calls(client: TestClient, trail: AuditService) -> None:
    tools = client.get("/api/tools").json()["tools"]
    assert tools == [t.model_dump(mode="json") for t in trail.tool_stats()]
    errors = client.get("/api/errors").json()["errors"]
    assert errors == [g.model_dump(mode="json") for g in trail.error_groups()]
    slowest = client.get("/api/slowest?limit=3").json()["entries"]
    assert [e["id"] for e in slowest] == [e.id for e in trail.slowest_calls(limit=3)]
    timeline = client.get("/api/timeline?bucket=1m").json()
    assert timeline["bucket_seconds"] == 60
    assert timeline["buckets"] == [
        b.model_dump(mode="json") for b in trail.calls_over_time(bucket="1m")
    ]
    auto = client.get("/api/timeline").json()
    assert sum(b["calls"] for b in auto["buckets"]) == 46
    only = client.get("/api/tools?tool=lookup").json()["tools"]
    assert [t["tool_name"] for t in only] == ["lookup"]


def test_health_and_verify(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["gap_rows"] == 0
    assert health["last_verify"] is None
    assert {"pending", "dropped", "forward_lag_entries"} <= health["stats"].keys()
    assert client.get("/api/verify").status_code == 405  # verify is a POST, never a prefetch
    report = client.post("/api/verify").json()
    assert report["ok"] is True
    assert report["rows_checked"] == 46
    assert client.get("/api/health").json()["last_verify"]["ok"] is True


# ---------------------------------------------------------------------- auth


@pytest.mark.parametrize("path", ["/", "/api/logs", "/api/tools", "/api/stream", "/static/app.js"])
def test_no_token_no_data(make_client: Callable[..., TestClient], path: str) -> None:
    anonymous = make_client(token=None)
    response = anonymous.get(path)
    assert response.status_code == 401
    assert "get_costs" not in response.text
    assert response.headers["cache-control"] == "no-store"


def test_wrong_token_refused_everywhere(make_client: Callable[..., TestClient]) -> None:
    wrong = make_client(token=TOKEN + "x")
    for path in ("/api/logs", "/api/health", "/"):
        response = wrong.get(path)
        assert response.status_code == 401
        assert "eu-west-1" not in response.text
    assert wrong.post("/api/verify").status_code == 401
    html = make_client(token=None).get("/?token=nope")
    assert html.status_code == 401
    assert "Sign-in required" in html.text
    forged = make_client(token=None).get("/api/logs", headers={"Cookie": "finops_audit_8765=x"})
    assert forged.status_code == 401


def test_token_in_url_becomes_a_strict_cookie(make_client: Callable[..., TestClient]) -> None:
    browser = make_client(token=None)
    response = browser.get(f"/?tool=get_costs&token={TOKEN}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/?tool=get_costs"  # the token leaves the URL
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    page = browser.get("/?tool=get_costs")
    assert page.status_code == 200
    assert 'src="static/app.js"' in page.text
    assert browser.get("/api/logs").status_code == 200
    # The token also works on the API for scripts (no redirect there).
    assert make_client(token=None).get(f"/api/health?token={TOKEN}").status_code == 200


def test_random_token_when_none_given(trail: AuditService) -> None:
    app = create_app(trail)
    token = app.state.token
    assert len(token) >= 32
    assert create_app(trail).state.token != token
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/api/health").status_code == 401
        assert client.get("/api/health", headers={"Authorization": f"Bearer {token}"}).is_success


@pytest.mark.parametrize("bad", ["", "has space", "semi;colon", "x" * 600, "caf\u00e9"])
def test_unusable_tokens_rejected_at_start(trail: AuditService, bad: str) -> None:
    with pytest.raises(ValueError, match="token"):
        create_app(trail, token=bad)


# ---------------------------------------------------------------------- DNS rebinding, CSRF


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.nip.io", ""])
def test_foreign_host_refused(client: TestClient, host: str) -> None:
    response = client.get("/api/logs", headers={"Host": host})
    assert response.status_code == 403
    assert "entries" not in response.text


@pytest.mark.parametrize("host", ["localhost:8765", "127.0.0.1", "[::1]:8765"])
def test_loopback_hosts_allowed(client: TestClient, host: str) -> None:
    assert client.get("/api/health", headers={"Host": host}).status_code == 200


def test_allowed_hosts_extend_the_list(make_client: Callable[..., TestClient]) -> None:
    client = make_client(allowed_hosts=["audit.internal"])
    assert client.get("/api/health", headers={"Host": "audit.internal:8765"}).status_code == 200
    assert client.get("/api/health", headers={"Host": "other.internal"}).status_code == 403


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "file://", "http://127.0.0.1.evil"]
)
def test_foreign_origin_refused(client: TestClient, origin: str) -> None:
    assert client.post("/api/verify", headers={"Origin": origin}).status_code == 403
    assert client.get("/api/logs", headers={"Origin": origin}).status_code == 403


def test_same_origin_allowed(client: TestClient) -> None:
    response = client.post("/api/verify", headers={"Origin": "http://127.0.0.1:8765"})
    assert response.status_code == 200


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=maybe", "status"),
        ("since=yesterday", "since"),
        ("until=2026-13-45", "until"),
        ("since=2026-02-01&until=2026-01-01", "after until"),
        ("limit=0", "limit"),
        ("limit=1000000", "limit"),
        ("limit=ten", "limit"),
        ("limit=99999999999999999999999", "limit"),
        ("offset=-1", "offset"),
        ("after_id=-5", "after_id"),
        ("after_id=1e9", "after_id"),
        ("since=99999999999d", "since"),
        ("tool=a%00b", "control character"),
        ("user=" + "x" * 600, "at most"),
        ("param=" + "%27" * 10_000, "at most"),
    ],
)
def test_bad_values_are_400_with_a_message(client: TestClient, query: str, message: str) -> None:
    response = client.get(f"/api/logs?{query}")
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/timeline?bucket=0s",
        "/api/timeline?bucket=fortnight",
        "/api/timeline?bucket=999999d",
        "/api/errors?limit=-1",
        "/api/slowest?limit=x",
        "/api/tools?since=soon",
        "/api/stream?after_id=abc",
        "/api/stream?status=nope",
    ],
)
def test_bad_values_on_every_endpoint(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


def test_bad_last_event_id_is_400(client: TestClient) -> None:
    response = client.get("/api/stream", headers={"Last-Event-ID": "drop table"})
    assert response.status_code == 400


@pytest.mark.parametrize(
    "value",
    [
        "' OR '1'='1",
        "x'; DROP TABLE audit_logs; --",
        "%",
        "_",
        "\\",
        '"',
        "it's'; DROP TABLE audit_logs; --",
        "\u202e\u0000".replace("\u0000", ""),
        "🙂" * 100,
    ],
)
def test_sql_metacharacters_are_just_text(
    client: TestClient, trail: AuditService, value: str
) -> None:
    for name in ("tool", "user", "client", "session", "param"):
        response = client.get("/api/logs", params={name: value, "limit": 1000})
        assert response.status_code == 200, response.text
        for entry in response.json()["entries"]:
            assert name == "param"
            assert value in str(entry["parameters"])
    assert trail.count() == 46  # nothing dropped, nothing changed
    assert client.post("/api/verify").json()["ok"] is True


def test_metacharacters_find_the_row_that_holds_them(client: TestClient) -> None:
    entries = client.get("/api/logs", params={"param": "'; DROP TABLE audit_logs; --"}).json()[
        "entries"
    ]
    assert [e["tool_name"] for e in entries] == ["lookup"]


# ---------------------------------------------------------------------- headers, page


@pytest.mark.parametrize(
    "path", ["/", "/api/logs", "/api/health", "/static/app.js", "/static/app.css", "/nope"]
)
def test_security_headers_on_every_response(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-security-policy"] == "default-src 'self'"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_page_loads_nothing_from_elsewhere_and_nothing_inline(client: TestClient) -> None:
    html = client.get("/").text
    assert "http://" not in html.replace('"http://www.w3.org', "")
    assert "https://" not in html
    assert "<script>" not in html
    assert "style=" not in html
    assert "<style" not in html
    js = client.get("/static/app.js").text
    assert "innerHTML" not in js
    assert "eval(" not in js
    assert "http" not in js.replace("http://www.w3.org/2000/svg", "")


def test_no_endpoint_changes_the_trail(client: TestClient, trail: AuditService) -> None:
    before = [e.model_dump() for e in trail.get_logs(limit=1000)]
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/api/logs", "/api/logs/1", "/api/tools", "/api/health", "/"):
            assert client.request(method, path).status_code in (404, 405)
    client.post("/api/verify")
    assert [e.model_dump() for e in trail.get_logs(limit=1000)] == before
