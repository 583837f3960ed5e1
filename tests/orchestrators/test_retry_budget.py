"""The retry budget (docs/RETRIES.md) of the orchestrator loops, under a fault storm.

The orchestrator generators run on the scripted context (``fake_context``) while the activities that call
F&O are the app's own code against the F&O emulator, re-run under their ``RetryOptions`` as the Durable
engine would when they raise. Every call to one endpoint fails; the calls that reach the emulator for one
logical step must equal the budget derived from ``orchestrators/retries.py`` and the HTTP layer's policy, as
the docs table states it. A retry stacked under a loop (a client repeating a call, an activity raising an
F&O error into ``RetryOptions``) makes more calls and fails these tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from dmf.fno.http import RetryPolicy
from dmf.pipeline import imports, outbound_enqueue, outbound_exports
from dmf.pipeline.polling import PollPolicy
from dmf.routing import ResolvedRoute
from dmf.settings import ExportJob
from local.azurite import Azurite
from local.samples import customer_groups_csv, customer_groups_package
from orchestrators import import_package as imp
from orchestrators import outbound
from orchestrators.retries import MAX_FETCH_FAILURES, MAX_RECALLS, MAX_START_RETRIES, TARGET_KEY_TRIES
from tests.orchestrators.fake_context import FakeTask, Script, user_function
from tests.retry_budget import DAY, IMPORT_ACTIVITY, Storm, attempts, budget, storm_env

ENTITY = "Customer groups"
INSTANCE = "drop-b1-p001"
ROUTE = {"environment": "main", "data_project": "CustomerGroups-Import", "legal_entity": "USMF"}


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt: 0.0)


@pytest.fixture
def storm(azurite: Azurite, unique_name: str) -> Iterator[Storm]:
    with storm_env(azurite, unique_name) as s:
        yield s


class Durable(Script):
    """A script whose ``real`` activities run the app's code, each run as the Durable engine runs an activity
    called with ``RetryOptions``: again, up to ``max_number_of_attempts`` times, while it raises."""

    def __init__(self, input: Any, *, real: dict[str, Callable[[Any], Any]], **kw: Any) -> None:
        super().__init__(input, **kw)
        self.real = real
        self.runs: Counter[str] = Counter()

    def _answer(self, t: FakeTask) -> None:
        if t._done or t.kind != "activity" or t.name not in self.real:
            super()._answer(t)
            return
        t._done = True
        for _ in range(t.retry.max_number_of_attempts if t.retry is not None else 1):
            self.runs[t.name] += 1
            try:
                t._value, t._error = self.real[t.name](t.input), None
                break
            except Exception as exc:
                t._error = exc
        t.is_completed = True


def _policy(storm: Storm, **changes: float) -> dict:
    return PollPolicy.from_settings(storm.svc.settings).to_dict() | changes


def _gate(storm: Storm) -> dict[str, Callable[[Any], Any]]:
    """The import gate's activities on the real gate table (``start_import`` renews the permit)."""
    s = storm.svc.settings

    def enqueue(inp: dict) -> None:
        storm.svc.gate(inp["environment"]).enqueue(
            inp["ticket"], inp["instance_id"], datetime.fromisoformat(inp["now"])
        )

    def try_acquire(inp: dict) -> dict:
        r = storm.svc.gate(inp["environment"]).try_acquire(
            inp["ticket"], inp["instance_id"], datetime.fromisoformat(inp["now"]),
            lease_seconds=s.gate_lease_seconds, stale_after_seconds=3600,
        )  # fmt: skip
        return {"granted": r.granted, "position": r.position, "holders": r.holders}

    def renew(inp: dict) -> None:
        storm.svc.gate(inp["environment"]).renew(
            inp["ticket"], datetime.fromisoformat(inp["now"]), lease_seconds=inp["lease_seconds"]
        )

    return {"gate_enqueue": enqueue, "gate_try_acquire": try_acquire, "gate_renew": renew}


def _outbound_config(storm: Storm) -> dict:
    """``outbound_config``'s whole answer (the drain's budgets are not used by these orchestrations)."""
    return {"poll": _policy(storm), "batch_messages": 10, "batch_seconds": 60.0, "workers": 2}


def _import(storm: Storm, answers: dict[str, list], real: dict[str, Callable], **poll: float) -> Durable:
    staged = f"{storm.svc.settings.staging_container}/drop-b1/001.zip"
    storm.svc.blob_at(staged).upload_blob(customer_groups_package(["B1"]), overwrite=True)
    cfg = {
        "poll": _policy(storm, **poll),
        "gate_recheck_seconds": storm.svc.settings.gate_recheck_seconds,
        "gate_lease_seconds": storm.svc.settings.gate_lease_seconds,
        "events": {"enabled": False, "fallback_seconds": 300.0},
    }
    inp = {"drop_id": "drop-b1", "day": DAY, "seq": 1, "staged": staged, "entities": [ENTITY], "rows": 1,
           "source": "inbound/x.zip", "route": ROUTE}  # fmt: skip
    scripted = {"pipeline_config": [cfg], "gate_release": [None]} | answers
    return Durable(
        inp,
        instance_id=INSTANCE,
        activities=scripted,
        real=_gate(storm) | {"record_import_result": lambda r: {"status": r["status"]}} | real,
    )


def _svc(fn: Callable[[Any, dict], Any], storm: Storm) -> Callable[[dict], Any]:
    return lambda inp: fn(storm.svc, inp)


# -- import start loop ---------------------------------------------------------------------------------------


def test_import_start_loop_asks_for_the_write_url_its_budget_of_times(storm: Storm) -> None:
    s = _import(storm, {}, {"start_import": _svc(imports.start_import, storm)})
    storm.fail("GetAzureWriteUrl")
    out = s.run(user_function(imp.import_package))
    assert out["status"] == "Failed"
    assert s.runs["start_import"] == 1 + MAX_START_RETRIES
    assert storm.calls("GetAzureWriteUrl") == budget("GetAzureWriteUrl")
    assert storm.calls("ImportFromPackageAsync") == 0


def test_refused_import_starts_are_waits_bounded_by_the_deadline(storm: Storm) -> None:
    """429 with a long Retry-After: each refusal is one call and a durable wait; the deadline ends it."""
    deadline, retry_after = 1800.0, 300
    s = _import(storm, {}, {"start_import": _svc(imports.start_import, storm)}, deadline=deadline)
    storm.fail("ImportFromPackageAsync", "429", retry_after=retry_after)
    out = s.run(user_function(imp.import_package))
    assert out["status"] == "Failed"
    calls = storm.calls("ImportFromPackageAsync")
    assert calls == s.runs["start_import"] * budget("ImportFromPackageAsync")
    assert calls == deadline // retry_after + 1
    waits = [t.wait for t in s.timers()]
    assert waits == [retry_after] * (calls - 1) and sum(waits) <= deadline
    assert storm.calls("GetExecutionSummaryStatus") == 0  # a refusal is "not done": nothing to ask


def test_ambiguous_import_starts_are_recalled_at_most_max_recalls_times(storm: Storm) -> None:
    """503 without Retry-After: the start may have happened. F&O is asked (one call each time), and the
    import is called again only after the verify grace of "not found", at most ``MAX_RECALLS`` times."""
    real = {
        "start_import": _svc(imports.start_import, storm),
        "check_import": _svc(imports.check_import, storm),
    }
    s = _import(storm, {}, real)
    storm.fail("ImportFromPackageAsync", "503")
    out = s.run(user_function(imp.import_package))
    assert out["status"] == "Failed" and "no record of execution" in out["error_summary"]
    assert s.runs["start_import"] == 1 + MAX_RECALLS
    assert storm.calls("ImportFromPackageAsync") == (1 + MAX_RECALLS) * budget("ImportFromPackageAsync")
    # Asked once after each failed start, and once before each recall; one call per poll.
    asked = (1 + MAX_RECALLS) + MAX_RECALLS
    assert storm.calls("GetExecutionSummaryStatus") == asked + s.runs["check_import"]


def test_status_polls_each_make_the_http_budget(storm: Storm) -> None:
    started = {"state": "started", "confirmed": True}
    s = _import(
        storm,
        {"start_import": [started]},
        {"check_import": _svc(imports.check_import, storm)},
        deadline=900.0,
    )
    storm.fail("GetExecutionSummaryStatus")
    out = s.run(user_function(imp.import_package))
    assert out["status"] == "TimedOut" and out["polls"] > 1
    assert s.runs["check_import"] == out["polls"]
    assert storm.calls("GetExecutionSummaryStatus") == out["polls"] * budget("GetExecutionSummaryStatus")


def test_error_keys_loop_makes_its_tries(storm: Storm) -> None:
    errors = {"error_count": 1, "messages": [], "files": [], "pending_target_keys": [ENTITY],
              "summary_page_url": None}  # fmt: skip
    s = _import(
        storm,
        {
            "start_import": [{"state": "started", "confirmed": True}],
            "check_import": [{"status": "PartiallySucceeded"}],
            "collect_errors": [errors],
        },
        {"fetch_target_error_keys": _svc(imports.fetch_target_error_keys, storm)},
    )
    storm.fail("GetImportTargetErrorKeysFileUrl")
    out = s.run(user_function(imp.import_package))
    assert out["status"] == "PartiallySucceeded"
    assert s.runs["fetch_target_error_keys"] == TARGET_KEY_TRIES
    assert storm.calls("GetImportTargetErrorKeysFileUrl") == budget("GetImportTargetErrorKeysFileUrl")


# -- outbound ------------------------------------------------------------------------------------------------


def test_package_url_loop_stops_after_its_failures(storm: Storm) -> None:
    job = ExportJob.model_validate(
        {"name": "budget", "environment": "main", "data_project": "CustomerGroups-Export",
         "legal_entity": "USMF", "schedule": "0 0 2 * * *", "package_name": "{job}-{timestamp}"}
    )  # fmt: skip
    run_id = f"export-budget-{DAY}T020000"
    inp = {"job": job.model_dump(), "run_id": run_id, "day": DAY, "package_name": "budget-pkg",
           "execution_id": outbound_exports.export_execution_id(job.data_project, run_id)}  # fmt: skip
    s = Durable(
        inp,
        instance_id="export-budget",
        activities={
            "outbound_config": [_outbound_config(storm)],
            "export_start": [{"state": "started"}],
            "export_check": [{"status": "Succeeded"}],
        },
        real={
            "export_fetch": _svc(outbound_exports.fetch_export, storm),
            "export_record": lambda r: {"status": r["status"]},
        },
    )
    storm.fail("GetExportedPackageUrl")
    out = s.run(user_function(outbound.scheduled_export))
    assert out["status"] == "Failed"
    assert s.runs["export_fetch"] == MAX_FETCH_FAILURES
    assert storm.calls("GetExportedPackageUrl") == budget("GetExportedPackageUrl")


def test_enqueue_loop_sends_its_budget_of_times(storm: Storm) -> None:
    source = f"{storm.svc.settings.inbound_container}x/xslt/budget.csv"
    container, _, name = source.partition("/")
    csv = b"\xff\xfe" + customer_groups_csv(["E1"], encoding="utf-16-le")
    storm.svc.blob(container, name).upload_blob(csv, overwrite=True)
    route = ResolvedRoute(
        route="xslt-groups", environment="main", mode="enqueue", kind="raw", data_project=None,
        legal_entity="USMF", entity=ENTITY, source_format="CSV-Unicode", execute=True, overwrite=True,
        allow_duplicate_content=False, activity_id=IMPORT_ACTIVITY,
    ).model_dump()  # fmt: skip
    inp = {"drop": {"instance_id": "drop-e1"}, "route": route, "source": source, "day": DAY}
    s = Durable(
        inp,
        instance_id="drop-e1-enqueue",
        activities={"outbound_config": [_outbound_config(storm)]},
        real={
            "enqueue_send": _svc(outbound_enqueue.enqueue_source, storm),
            "enqueue_record": _svc(outbound_enqueue.record_enqueue, storm),
        },
    )
    storm.fail("enqueue", "429")
    out = s.run(user_function(outbound.recurring_enqueue))
    assert out["status"] == "Failed"
    assert s.runs["enqueue_send"] == 1 + MAX_START_RETRIES
    assert storm.calls("enqueue") == budget("enqueue") == s.runs["enqueue_send"] * attempts("Enqueue")


def test_a_raising_activity_is_rerun_by_retry_options_only() -> None:
    """The scripted engine itself: an activity that raises runs ``max_number_of_attempts`` times, so an
    F&O-calling activity that let an F&O error escape would multiply its calls in the tests above."""
    seen: list[str] = []

    def broken(inp: dict) -> dict:
        seen.append(inp["ticket"])
        raise RuntimeError("storage down")

    poll = {"initial": 15, "factor": 2, "max_interval": 300, "deadline": 600, "not_found_grace": 60}
    cfg = {"poll": poll, "gate_recheck_seconds": 30, "gate_lease_seconds": 600}
    s = Durable(
        {"drop_id": "d", "day": DAY, "seq": 1, "staged": "s/x.zip", "entities": [ENTITY], "route": ROUTE},
        instance_id=INSTANCE,
        activities={"pipeline_config": [cfg]},
        real={"gate_enqueue": broken},
    )
    with pytest.raises(RuntimeError):
        s.run(user_function(imp.import_package))
    assert seen == [INSTANCE] * imp.RETRY.max_number_of_attempts


def test_upload_to_the_write_url_is_tried_once_per_start(
    storm: Storm, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F&O's blob store answering 503 to everything: the start loop is the one layer (no SDK retries)."""
    httpserver.expect_request("").respond_with_handler(lambda r: Response("busy", status=503))
    store = urlsplit(httpserver.url_for("/")).netloc
    real = imports.blob_client_for_url

    def to_failing_store(url: str, **kw: Any) -> Any:
        return real(urlunsplit(urlsplit(url)._replace(netloc=store)), **kw)

    monkeypatch.setattr(imports, "blob_client_for_url", to_failing_store)
    s = _import(storm, {}, {"start_import": _svc(imports.start_import, storm)})
    out = s.run(user_function(imp.import_package))
    assert out["status"] == "Failed"
    assert s.runs["start_import"] == 1 + MAX_START_RETRIES
    assert len(httpserver.log) == budget("upload")
    assert storm.calls("ImportFromPackageAsync") == 0
