"""Blob triggers (SDK-typed and InputStream), timer triggers and HTTP routes against Azurite."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobServiceClient

from local.functions_runner import LocalRunner, VirtualClock
from tests.runner.apps import durable_app, trigger_app

START = datetime(2026, 3, 2, 0, 1, tzinfo=UTC)


@pytest.fixture
def settings(azurite, unique_name) -> dict[str, str]:
    trigger_app.DELIVERIES.clear()
    trigger_app.STARTS.clear()
    return {
        "DATA_STORAGE": azurite.connection_string,
        "INBOUND_CONTAINER": unique_name,
        "DRAIN_SCHEDULE": "0 */30 * * * *",
        "STARTUP_SCHEDULE": "0 0 3 * * *",
        "INBOUND_BLOB_SOURCE": "EventGrid",
    }


@pytest.fixture
def container(azurite, unique_name):
    svc = BlobServiceClient.from_connection_string(azurite.connection_string)
    c = svc.get_container_client(unique_name)
    c.create_container()
    return c


def deliveries(fn: str) -> list[str]:
    return [v for f, v in trigger_app.DELIVERIES if f == fn]


def test_blob_trigger_fires_once_per_version_with_sdk_binding(make_runner, settings, container) -> None:
    container.upload_blob("orders/a.csv", b"x,y\n1,2\n")
    runner = make_runner(
        trigger_app.app, settings=settings, clock=VirtualClock(START), blob_poll_interval=0.2
    )
    runner.wait_until_idle()
    assert deliveries("on_inbound_blob") == ["orders/a.csv"]
    (iid,) = trigger_app.STARTS
    assert runner.wait_for_instance(iid)["output"] == {"blob": "orders/a.csv", "size": 8}
    time.sleep(0.5)  # more scans: the receipt stops re-delivery
    runner.wait_until_idle()
    assert deliveries("on_inbound_blob") == ["orders/a.csv"]
    container.upload_blob("orders/a.csv", b"x,y\n1,2\n3,4\n", overwrite=True)  # a new version fires again
    runner.wait_until_idle()
    assert deliveries("on_inbound_blob") == ["orders/a.csv", "orders/a.csv"]
    assert len(trigger_app.STARTS) == 2


def test_the_scan_forgets_blobs_that_left_the_container(make_runner, settings, container) -> None:
    """The delivered-set is a cache of receipts: it holds what is still listed, not every blob ever seen."""
    container.upload_blob("orders/a.csv", b"x\n")
    container.upload_blob("orders/b.csv", b"y\n")
    runner = make_runner(
        trigger_app.app, settings=settings, clock=VirtualClock(START), blob_poll_interval=0.2
    )
    runner.wait_until_idle()
    assert sorted(deliveries("on_inbound_blob")) == ["orders/a.csv", "orders/b.csv"]
    container.delete_blob("orders/a.csv")
    runner.blobs.scan()
    assert {k[1] for k in runner.blobs._seen} == {"orders/b.csv"}
    time.sleep(0.5)  # more scans: b's receipt still stops re-delivery
    runner.wait_until_idle()
    assert sorted(deliveries("on_inbound_blob")) == ["orders/a.csv", "orders/b.csv"]


def test_a_name_azurite_cannot_list_holds_up_only_its_own_folder(make_runner, settings, container) -> None:
    container.upload_blob("broken/bad\x01name.csv", b"1")  # Azurite answers 500 to any listing that holds it
    container.upload_blob("orders/a.csv", b"x,y\n1,2\n")
    runner = make_runner(
        trigger_app.app, settings=settings, clock=VirtualClock(START), blob_poll_interval=0.2
    )
    deadline = time.monotonic() + 90
    while deliveries("on_inbound_blob") != ["orders/a.csv"]:
        assert time.monotonic() < deadline, deliveries("on_inbound_blob")
        time.sleep(0.1)
    assert runner.blobs.unlistable == {(container.container_name, "broken/")}
    container.upload_blob("later/b.csv", b"2")  # later drops are not stalled by the bad name
    deadline = time.monotonic() + 90
    while "later/b.csv" not in deliveries("on_inbound_blob"):
        assert time.monotonic() < deadline, deliveries("on_inbound_blob")
        time.sleep(0.1)


def test_receipts_survive_a_restart(make_runner, settings, container) -> None:
    container.upload_blob("b.csv", b"1")
    first = make_runner(trigger_app.app, settings=settings, clock=VirtualClock(START))
    first.wait_until_idle()
    first.stop()
    second = make_runner(trigger_app.app, settings=settings, clock=VirtualClock(START))
    second.wait_until_idle()
    assert deliveries("on_inbound_blob") == ["b.csv"]


def test_duplicate_deliveries_start_one_orchestration(make_runner, settings, container) -> None:
    container.upload_blob("dup.csv", b"123")
    runner = make_runner(
        trigger_app.app, settings=settings, clock=VirtualClock(START), duplicate_blob_deliveries=2
    )
    runner.wait_until_idle()
    assert deliveries("on_inbound_blob") == ["dup.csv"] * 3
    assert len(trigger_app.STARTS) == 1
    assert runner.wait_for_instance(trigger_app.STARTS[0])["runtimeStatus"] == "Completed"
    assert runner.deliver_blob("on_inbound_blob", "dup.csv")  # an on-demand redelivery is also harmless
    assert len(trigger_app.STARTS) == 1


def test_input_stream_binding_pattern_and_poison(make_runner, settings, azurite) -> None:
    svc = BlobServiceClient.from_connection_string(azurite.connection_string)
    streams = svc.get_container_client("streams")
    if not streams.exists():
        streams.create_container()
    tag = str(time.time_ns())
    streams.upload_blob(f"in-{tag}.txt", b"hello")
    streams.upload_blob(f"out-{tag}.txt", b"not matched")
    streams.upload_blob(f"in-{tag}-bad.txt", b"fail me")
    runner = make_runner(
        trigger_app.app, settings=settings, clock=VirtualClock(START), blob_poll_interval=0.05
    )
    deadline = time.monotonic() + 20
    while sum(1 for d in deliveries("on_stream") if "-bad" in d) < 5:
        assert time.monotonic() < deadline, deliveries("on_stream")
        time.sleep(0.05)
    runner.wait_until_idle()
    got = deliveries("on_stream")
    assert f"streams/in-{tag}.txt:hello" in got
    assert not any("out-" in d for d in got)
    assert sum(1 for d in got if "-bad" in d) == 5  # retried, then poisoned and not retried again
    hosts = svc.get_container_client("azure-webjobs-hosts")
    assert any(f"in-{tag}-bad.txt" in b.name for b in hosts.list_blobs(name_starts_with="blobpoison/"))


def test_timer_trigger_follows_virtual_clock_and_fires_on_demand(make_runner, settings) -> None:
    runner = make_runner(trigger_app.app, settings=settings, clock=VirtualClock(START))
    runner.wait_until_idle()
    assert deliveries("warmup") == ["startup"]  # run_on_startup
    assert deliveries("drain") == []
    runner.advance(timedelta(hours=1))  # 00:30 and 01:00 are due
    assert deliveries("drain") == ["on_time", "on_time"]
    runner.fire_timer("drain")
    runner.wait_until_idle()
    assert deliveries("drain") == ["on_time"] * 3
    statuses = runner.store.query_instances(statuses=["Completed"])
    assert len([s for s in statuses if s["name"] == "import_blob"]) == 3


def test_missed_timer_runs_past_due_after_restart(make_runner, settings) -> None:
    clock = VirtualClock(START)
    first = make_runner(trigger_app.app, settings=settings, clock=clock)
    first.advance(timedelta(minutes=30))
    first.stop()
    clock.advance(timedelta(hours=2))  # the runner was down through several occurrences
    make_runner(trigger_app.app, settings=settings, clock=clock).wait_until_idle()
    assert deliveries("drain") == ["on_time", "past_due"]


def test_timer_trigger_real_clock(make_runner, settings) -> None:
    make_runner(trigger_app.app, settings={**settings, "DRAIN_SCHEDULE": "*/1 * * * * *"})
    deadline = time.monotonic() + 5
    while len(deliveries("drain")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_http_routes_and_client_management_urls(make_runner) -> None:
    durable_app.CALLS.clear()
    runner: LocalRunner = make_runner(durable_app.app, clock=VirtualClock(START))
    with urllib.request.urlopen(f"{runner.http_base_url}/api/ping?x=1") as r:
        assert r.status == 200 and r.read() == b"pong 1"
    req = urllib.request.Request(
        f"{runner.http_base_url}/api/start/sequence?id=viahttp", data=b"3", method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req) as r:
        assert r.status == 202
        payload = json.loads(r.read())
        assert r.headers["Location"] == payload["statusQueryGetUri"]
    assert payload["id"] == "viahttp"
    assert payload["statusQueryGetUri"].startswith(f"{runner.http_base_url}/runtime/webhooks/durabletask/")
    runner.wait_for_instance("viahttp")
    with urllib.request.urlopen(payload["statusQueryGetUri"]) as r:
        status = json.loads(r.read())
    assert status["runtimeStatus"] == "Completed" and status["output"] == 8
    with urllib.request.urlopen(f"{runner.http_base_url}/api/status/viahttp") as r:
        assert json.loads(r.read()) == {"runtimeStatus": "Completed"}
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{runner.http_base_url}/api/nothing-here")
    assert err.value.code == 404


def test_unresolvable_trigger_setting_disables_only_that_function(make_runner, settings) -> None:
    broken = {k: v for k, v in settings.items() if k != "DRAIN_SCHEDULE"}
    runner = make_runner(trigger_app.app, settings=broken, clock=VirtualClock(START))
    assert "DRAIN_SCHEDULE" in runner.function_errors["drain"]
    with pytest.raises(LookupError):
        runner.fire_timer("drain")
    runner.wait_until_idle()
    assert deliveries("warmup") == ["startup"]  # the other functions still run


def test_a_failed_start_restores_the_environment(azurite) -> None:
    import os

    assert "RUNNER_PROBE" not in os.environ
    before = os.environ.get("AzureWebJobsStorage")
    runner = LocalRunner(app_module="tests.runner.apps.no_such_app", settings={"RUNNER_PROBE": "1"},
                         storage_connection_string=azurite.connection_string, task_hub="rtfailstart")  # fmt: skip
    with pytest.raises(ModuleNotFoundError):
        runner.start()
    assert "RUNNER_PROBE" not in os.environ
    assert os.environ.get("AzureWebJobsStorage") == before


def test_client_used_from_another_event_loop_does_not_break_the_app(make_runner) -> None:
    import asyncio

    runner = make_runner(durable_app.app, clock=VirtualClock(START))
    iid = asyncio.run(runner.client().start_new("sequence", None, 1))  # the SDK session is made on this loop
    runner.wait_for_instance(iid)
    req = urllib.request.Request(f"{runner.http_base_url}/api/start/sequence", data=b"2", method="POST")
    with urllib.request.urlopen(req) as r:  # the app's client function runs on the runner's loop
        assert r.status == 202
        started = json.loads(r.read())["id"]
    assert runner.wait_for_instance(started)["output"] == 4
