"""The facade keeps the API users wrote their code against (issue 12 §4).

``AuditService`` hands its work to ``_trail_reader``, ``_maintainer`` and
``_store_access``; users' acceptance tests call it verbatim, and the API
reference is generated from it. So every public member keeps its name, its
parameters, its kind (plain, coroutine, generator, async generator) and its
docstring. The tables below were read off the class before the split.
"""

from __future__ import annotations

import inspect

import pytest

from finops_audit import AuditConfigError, AuditService
from finops_audit import service as service_module

#: name -> (kind, parameters, return annotation) as they were before the facade.
PUBLIC: dict[str, tuple[str, tuple[str, ...], str]] = {
    "__aenter__": ("async", ("self",), "'AuditService'"),
    "__aexit__": (
        "async",
        (
            "self",
            "exc_type: 'type[BaseException] | None'",
            "exc: 'BaseException | None'",
            "tb: 'TracebackType | None'",
        ),
        "'None'",
    ),
    "__enter__": ("def", ("self",), "'AuditService'"),
    "__exit__": (
        "def",
        (
            "self",
            "exc_type: 'type[BaseException] | None'",
            "exc: 'BaseException | None'",
            "tb: 'TracebackType | None'",
        ),
        "'None'",
    ),
    "__init__": (
        "def",
        (
            "self",
            "db_path: 'str | os.PathLike[str] | None' = None",
            "settings: 'AuditSettings | None' = None",
            "redactor: 'Callable[[dict[str, Any]], dict[str, Any]] | None' = None",
            "read_only: 'bool' = False",
            "**overrides: 'Any'",
        ),
        "'None'",
    ),
    "abackup": ("async", ("self", "dest: 'str | os.PathLike[str]'"), "'BackupReport'"),
    "acalls_over_time": (
        "async",
        (
            "self",
            "bucket: 'str | int | timedelta' = '1h'",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "tool_name: 'str | None' = None",
        ),
        "'list[TimeBucket]'",
    ),
    "aclose": ("async", ("self", "timeout: 'float | None' = None"), "'None'"),
    "aerror_groups": (
        "async",
        (
            "self",
            "limit: 'int' = 10",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "tool_name: 'str | None' = None",
        ),
        "'list[ErrorGroup]'",
    ),
    "aflush": ("async", ("self", "timeout: 'float | None' = None"), "'None'"),
    "aforward": ("async", ("self", "timeout: 'float | None' = None"), "'None'"),
    "aget_logs": (
        "async",
        (
            "self",
            "tool_name: 'str | None' = None",
            "status: 'AuditStatus | str | None' = None",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "limit: 'int' = 100",
            "offset: 'int' = 0",
            "parameter_value: 'str | None' = None",
            "user: 'str | None' = None",
            "client_name: 'str | None' = None",
            "session_id: 'str | None' = None",
            "request_id: 'str | None' = None",
        ),
        "'list[AuditLogEntry]'",
    ),
    "aiter_logs": (
        "agen",
        (
            "self",
            "tool_name: 'str | None' = None",
            "status: 'AuditStatus | str | None' = None",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "page_size: 'int' = 5000",
        ),
        "'AsyncIterator[AuditLogEntry]'",
    ),
    "apurge": ("async", ("self", "older_than: 'str | int | timedelta'"), "'PurgeReport'"),
    "aslowest_calls": (
        "async",
        (
            "self",
            "limit: 'int' = 10",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "tool_name: 'str | None' = None",
        ),
        "'list[AuditLogEntry]'",
    ),
    "atool_stats": (
        "async",
        (
            "self",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "tool_name: 'str | None' = None",
        ),
        "'list[ToolStats]'",
    ),
    "averify": (
        "async",
        ("self", "anchors: 'str | os.PathLike[str] | None' = None"),
        "'VerifyReport'",
    ),
    "backup": ("def", ("self", "dest: 'str | os.PathLike[str]'"), "'BackupReport'"),
    "calls_over_time": (
        "def",
        (
            "self",
            "bucket: 'str | int | timedelta' = '1h'",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "tool_name: 'str | None' = None",
        ),
        "'list[TimeBucket]'",
    ),
    "close": ("def", ("self", "timeout: 'float | None' = None"), "'None'"),
    "count": (
        "def",
        (
            "self",
            "tool_name: 'str | None' = None",
            "status: 'AuditStatus | str | None' = None",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
        ),
        "'int'",
    ),
    "error_groups": (
        "def",
        (
            "self",
            "limit: 'int' = 10",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "tool_name: 'str | None' = None",
        ),
        "'list[ErrorGroup]'",
    ),
    "export": (
        "def",
        (
            "self",
            "stream: 'IO[str]'",
            "fmt: 'str' = 'jsonl'",
            "tool_name: 'str | None' = None",
            "status: 'AuditStatus | str | None' = None",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "progress: 'Callable[[int], None] | None' = None",
            "page_size: 'int' = 5000",
            "decrypt: 'bool' = False",
        ),
        "'int'",
    ),
    "flush": ("def", ("self", "timeout: 'float | None' = None"), "'None'"),
    "forward": ("def", ("self", "timeout: 'float | None' = None"), "'None'"),
    "get_logs": (
        "def",
        (
            "self",
            "tool_name: 'str | None' = None",
            "status: 'AuditStatus | str | None' = None",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "limit: 'int' = 100",
            "offset: 'int' = 0",
            "parameter_value: 'str | None' = None",
            "user: 'str | None' = None",
            "client_name: 'str | None' = None",
            "session_id: 'str | None' = None",
            "request_id: 'str | None' = None",
        ),
        "'list[AuditLogEntry]'",
    ),
    "iter_logs": (
        "gen",
        (
            "self",
            "tool_name: 'str | None' = None",
            "status: 'AuditStatus | str | None' = None",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "page_size: 'int' = 5000",
        ),
        "'Iterator[AuditLogEntry]'",
    ),
    "key_usage": ("def", ("self",), "'KeyUsage'"),
    "purge": ("def", ("self", "older_than: 'str | int | timedelta'"), "'PurgeReport'"),
    "rotate_keys": (
        "def",
        ("self", "batch_size: 'int' = 200", "progress: 'Callable[[int], None] | None' = None"),
        "'RotationReport'",
    ),
    "slowest_calls": (
        "def",
        (
            "self",
            "limit: 'int' = 10",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "tool_name: 'str | None' = None",
        ),
        "'list[AuditLogEntry]'",
    ),
    "stats": ("def", ("self",), "'AuditStats'"),
    "tool_stats": (
        "def",
        (
            "self",
            "since: 'datetime | str | None' = None",
            "until: 'datetime | str | None' = None",
            "tool_name: 'str | None' = None",
        ),
        "'list[ToolStats]'",
    ),
    "verify": (
        "def",
        ("self", "anchors: 'str | os.PathLike[str] | None' = None"),
        "'VerifyReport'",
    ),
}
#: The methods that had a docstring (the async twins without one point at their originals).
DOCUMENTED = [
    "aforward",
    "aget_logs",
    "aiter_logs",
    "backup",
    "calls_over_time",
    "close",
    "count",
    "error_groups",
    "export",
    "flush",
    "forward",
    "get_logs",
    "iter_logs",
    "key_usage",
    "purge",
    "rotate_keys",
    "slowest_calls",
    "stats",
    "tool_stats",
    "verify",
]
PROPERTIES = ["central", "closed", "db_path", "trail"]


def _kind(member: object) -> str:
    if inspect.isasyncgenfunction(member):
        return "agen"
    if inspect.iscoroutinefunction(member):
        return "async"
    if inspect.isgeneratorfunction(member):
        return "gen"
    return "def"


def test_no_public_member_was_added_or_lost() -> None:
    public = {n for n in vars(AuditService) if not n.startswith("_")}
    assert public == {n for n in PUBLIC if not n.startswith("__")} | set(PROPERTIES)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_method_keeps_its_parameters_and_kind(name: str) -> None:
    member = vars(AuditService)[name]
    signature = inspect.signature(member)
    found = (
        _kind(member),
        tuple(str(p) for p in signature.parameters.values()),
        str(signature).rsplit(" -> ", 1)[1],
    )
    assert found == PUBLIC[name]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_each_documented_method_is_documented_on_the_facade(name: str) -> None:
    # The reference documents the facade: a docstring moved to a helper would vanish.
    assert inspect.getdoc(vars(AuditService)[name])


def test_properties_stay_documented_properties() -> None:
    for name in PROPERTIES:
        member = vars(AuditService)[name]
        assert isinstance(member, property), name
        assert member.__doc__, name


def test_the_service_module_still_exports_what_others_import() -> None:
    assert service_module.__all__ == [
        "MAX_LIMIT",
        "AuditService",
        "get_default_service",
        "set_default_service",
    ]
    assert service_module.MAX_LIMIT == 100_000


def test_iter_logs_checks_its_arguments_when_iterated_as_before(svc: AuditService) -> None:
    pages = svc.iter_logs(page_size=0)  # a generator: nothing runs yet
    with pytest.raises(AuditConfigError, match="limit=0 must be at least 1"):
        next(pages)


@pytest.mark.asyncio
async def test_aiter_logs_checks_its_arguments_when_iterated_as_before(
    svc: AuditService,
) -> None:
    pages = svc.aiter_logs(status="maybe")
    with pytest.raises(AuditConfigError, match="status='maybe' is invalid"):
        await pages.__anext__()
