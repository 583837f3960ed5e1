"""Scheduled package exports at the domain level: schedule evaluation, start once, URL wait, archive, outcome."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

from dmf.fno.clients import package_api
from dmf.pipeline import outbound_exports as ex
from dmf.settings import ExportJob
from tests.e2e_support import customer_groups_package

from .conftest import DAY, Env

JOB = {"name": "groups-nightly", "environment": "main", "data_project": "CustomerGroups-Export",
       "legal_entity": "USMF", "schedule": "0 0 2 * * *", "package_name": "{job}-{timestamp}"}  # fmt: skip
DUE = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def _req() -> dict:
    job = ExportJob.model_validate(JOB)
    run_id = ex.export_run_id(job.name, DUE)
    return {
        "job": job.model_dump(),
        "run_id": run_id,
        "day": DAY,
        "execution_id": ex.export_execution_id(job.data_project, run_id),
        "package_name": ex.package_name(job, DUE),
        "instance_id": ex.export_instance_id(job.name),
    }


def _run_to_terminal(env: Env, req: dict) -> str:
    for _ in range(60):
        st = ex.check_export(env.svc, {"environment": "main", "execution_id": req["execution_id"]})["status"]
        if st in ("Succeeded", "PartiallySucceeded", "Failed", "Canceled"):
            return st
        env.emu.admin.advance(5)
    raise AssertionError("export never finished")


def _csv_rows(package: bytes) -> set[str]:
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        name = next(n for n in zf.namelist() if n.lower().endswith(".csv"))
        text = zf.read(name).decode("utf-16")
    return {line.split(",")[0].strip('"') for line in text.splitlines()[1:] if line.strip()}


def _import(env: Env, ids: list[str], name: str = "roundtrip.zip", execution: str = "imp-1") -> None:
    """An import through the app's own F&O client (upload to the write URL, ImportFromPackage)."""
    api = package_api(env.svc.settings, "main")
    data = customer_groups_package(ids)
    url = api.upload_package(name, data, len(data))
    exec_id = api.import_from_package(
        url.blob_url, "CustomerGroups-Import", execution, legal_entity_id="USMF"
    )
    for _ in range(60):
        if api.get_execution_summary_status(exec_id).value == "Succeeded":
            return
        env.emu.admin.advance(5)
    raise AssertionError("import never finished")


def test_import_then_export_round_trips_the_rows_into_the_archive(env: Env) -> None:
    _import(env, ["RT1", "RT2", "RT3"])
    req = _req()
    assert ex.start_export(env.svc, req) == {"state": "started"}
    assert _run_to_terminal(env, req) == "Succeeded"
    got = ex.fetch_export(env.svc, req)
    assert got["ready"], got
    assert (
        got["archived"]
        == f"{env.svc.settings.archive_container}/exports/groups-nightly/2026/11/25/groups-nightly-20261125020000.zip"
    )
    blob = env.svc.blob_at(got["archived"])
    data = blob.download_blob().readall()
    assert got["size"] == len(data)
    assert _csv_rows(data) == {"RT1", "RT2", "RT3"}
    assert blob.get_blob_properties().metadata["execution_id"] == req["execution_id"]

    now = datetime.now(UTC).isoformat()
    out = ex.record_export(env.svc, req | {"status": "Succeeded", "started": True, "started_at": now,
                                           "finished_at": now, **got})  # fmt: skip
    assert out == {"status": "Succeeded", "warnings": None}
    row = env.svc.outcomes.get(DAY, req["run_id"])
    assert row["Kind"] == "export" and row["Status"] == "Succeeded"
    assert row["ExecutionId"] == req["execution_id"] and row["ArchivedBlob"] == got["archived"]
    assert row["PackageName"] == "groups-nightly-20261125020000"


def test_start_is_never_repeated_for_the_same_run(env: Env) -> None:
    req = _req()
    assert ex.start_export(env.svc, req)["state"] == "started"
    # A retried activity (worker died after the call) asks F&O about our id instead of exporting again:
    # right after the call F&O may not know it yet (ambiguous: the orchestrator polls, never re-calls).
    assert ex.start_export(env.svc, req)["state"] in ("ambiguous", "started")
    env.emu.admin.advance(3)
    assert ex.start_export(env.svc, req)["state"] == "started"
    calls = env.emu.admin.calls("ExportToPackageAsync")
    assert len(calls) == 1


def test_empty_package_url_at_first_then_ready(make_env) -> None:
    from local.fno_emulator import EmulatorConfig

    cfg = EmulatorConfig()
    cfg.timings.exported_url_delay_seconds = 60
    env = make_env(cfg)
    req = _req()
    ex.start_export(env.svc, req)
    assert _run_to_terminal(env, req) == "Succeeded"
    assert ex.fetch_export(env.svc, req) == {"ready": False}
    env.emu.admin.advance(61)
    assert ex.fetch_export(env.svc, req)["ready"]


def test_failed_start_is_reported_not_retried(env: Env) -> None:
    req = _req()
    req["job"] = {**req["job"], "data_project": "No-Such-Project"}
    st = ex.start_export(env.svc, req)
    assert st["state"] == "failed" and "No-Such-Project" in st["error"]


def test_partially_succeeded_records_a_warning(env: Env) -> None:
    req = _req()
    now = datetime.now(UTC).isoformat()
    out = ex.record_export(env.svc, req | {"status": "PartiallySucceeded", "started": False,
                                           "started_at": now, "finished_at": now, "archived": "a/b.zip"})  # fmt: skip
    assert "PartiallySucceeded" in out["warnings"]
    assert env.svc.outcomes.get(DAY, req["run_id"])["Warnings"] == out["warnings"]


def test_ncrontab_seconds_first_and_latest_due() -> None:
    after = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    assert ex.latest_due("0 0 2 * * *", after, after + timedelta(hours=2)) == DUE
    assert ex.latest_due("0 0 2 * * *", after, after + timedelta(minutes=59)) is None
    # Missed times fold into the latest one.
    assert ex.latest_due("0 */15 * * * *", after, after + timedelta(hours=1, minutes=7)) == after + timedelta(
        hours=1
    )
    assert ex.latest_due("30 * * * * *", after, after + timedelta(seconds=31)) == after + timedelta(
        seconds=30
    )


def test_latest_due_bounds_are_after_exclusive_until_inclusive() -> None:
    after = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    half = after + timedelta(seconds=30)
    assert ex.latest_due("30 * * * * *", after, half) == half
    assert ex.latest_due("30 * * * * *", after, half + timedelta(microseconds=5)) == half
    assert ex.latest_due("30 * * * * *", after, half - timedelta(microseconds=1)) is None
    assert ex.latest_due("0 * * * * *", after, after) is None
    # A per-second schedule a week behind folds into its latest second (no stepping through 604,800 times).
    week = after + timedelta(days=7)
    assert ex.latest_due("* * * * * *", after, week) == week
    assert ex.latest_due("0 0 0 29 2 *", after, after + timedelta(days=400)) is None


def test_due_jobs_start_counting_when_first_seen(make_env) -> None:
    env = make_env(EXPORT_JOBS=json.dumps([JOB | {"schedule": "0 0 * * * *"}]))
    t0 = datetime(2026, 11, 25, 8, 30, tzinfo=UTC)
    assert ex.due_jobs(env.svc, t0) == []  # first sight: no backlog
    assert ex.due_jobs(env.svc, t0 + timedelta(minutes=20)) == []
    due = ex.due_jobs(env.svc, t0 + timedelta(hours=2, minutes=5))
    assert [(j.name, d) for j, d in due] == [("groups-nightly", datetime(2026, 11, 25, 10, 0, tzinfo=UTC))]
    ex.export_schedule(env.svc).mark_started("groups-nightly", due[0][1], "r1")
    assert ex.due_jobs(env.svc, t0 + timedelta(hours=2, minutes=6)) == []


def test_package_name_pattern() -> None:
    job = ExportJob.model_validate(JOB | {"package_name": "{legal_entity}_{data_project}_{date}/x"})
    assert ex.package_name(job, DUE) == "USMF_CustomerGroups-Export_20261125-x"
    assert ex.package_name(ExportJob.model_validate(JOB | {"package_name": "{nope}"}), DUE) == (
        "groups-nightly-20261125020000"
    )


def test_a_refused_export_start_is_called_again_without_waiting_out_the_grace(env: Env) -> None:
    """503 with Retry-After is "not done": the next attempt calls again instead of polling an id F&O
    never saw (which would wait POLL_NOT_FOUND_GRACE_SECONDS, then re-call)."""
    req = _req()
    env.emu.admin.inject_fault("ExportToPackageAsync", "503", next_n=1, retry_after=1)
    st = ex.start_export(env.svc, req)
    assert st["state"] == "throttled" and st["retry_after"] == 1
    assert ex.start_export(env.svc, req) == {"state": "started"}
    assert [c["status"] for c in env.emu.admin.calls("ExportToPackageAsync")] == [503, 200]
    assert _run_to_terminal(env, req) == "Succeeded"
    assert [e["executionId"] for e in env.emu.admin.executions() if e["kind"] == "export"] == [
        req["execution_id"]
    ]


def _run_export(env: Env, job: dict, due: datetime) -> tuple[dict, dict]:
    j = ExportJob.model_validate(job)
    run_id = ex.export_run_id(j.name, due)
    req = {
        "job": j.model_dump(),
        "run_id": run_id,
        "day": f"{due:%Y%m%d}",
        "execution_id": ex.export_execution_id(j.data_project, run_id),
        "package_name": ex.package_name(j, due),
        "instance_id": ex.export_instance_id(j.name),
    }
    assert ex.start_export(env.svc, req) == {"state": "started"}
    assert _run_to_terminal(env, req) == "Succeeded"
    got = ex.fetch_export(env.svc, req)
    assert got["ready"], got
    return req, got


def test_two_runs_on_the_same_day_keep_two_archives(env: Env) -> None:
    job = JOB | {"package_name": "{job}-{date}"}  # a name that does not tell the day's runs apart
    _import(env, ["D1"])
    first, got1 = _run_export(env, job, DUE)
    _import(env, ["D2"], "second.zip", "imp-2")
    _, got2 = _run_export(env, job, DUE + timedelta(hours=12))
    assert got1["archived"] != got2["archived"]
    prefix = "exports/groups-nightly/2026/11/25/"
    assert env.archive_blobs() == sorted(
        [prefix + "groups-nightly-20261125-020000.zip", prefix + "groups-nightly-20261125-140000.zip"]
    )
    # The first run's package is still its own.
    assert _csv_rows(env.svc.blob_at(got1["archived"]).download_blob().readall()) == {"D1"}
    assert _csv_rows(env.svc.blob_at(got2["archived"]).download_blob().readall()) == {"D1", "D2"}
    # A redelivered fetch of the same run writes the same blob again, not a third copy.
    assert ex.fetch_export(env.svc, first)["archived"] == got1["archived"]
    assert len(env.archive_blobs()) == 2


def test_a_recall_after_a_lost_answer_counts_the_existing_export_as_started(env: Env) -> None:
    """ExportToPackage started but its answer was lost; F&O does not show the id yet when the orchestrator
    re-calls, and answers "execution id already exists": that is our export, started once."""
    req = _req()
    env.emu.admin.inject_fault("ExportToPackageAsync", "after_drop", next_n=1)
    assert ex.start_export(env.svc, req)["state"] == "ambiguous"
    assert ex.start_export(env.svc, req | {"allow_recall": True}) == {"state": "started"}
    assert [c["status"] for c in env.emu.admin.calls("ExportToPackageAsync")] == [0, 400]
    assert _run_to_terminal(env, req) == "Succeeded"
    assert len([e for e in env.emu.admin.executions() if e["kind"] == "export"]) == 1
