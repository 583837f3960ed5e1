"""Admin HTTP API (inspection, clock, data, seeding) and the one-command CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from local.azurite import Azurite, free_port
from local.fno_emulator import EmulatorConfig

from .conftest import Client
from .packages import customer_groups_package

ROOT = Path(__file__).resolve().parents[2]


def test_admin_http_inspection_and_clock(client: Client) -> None:
    admin = f"{client.emu.base_url}/_emulator"
    eid = client.import_package(client.upload_package(customer_groups_package([["10", "a", ""]])))
    before = client.get(f"{admin}/clock", auth=False).json()["now"]
    after = client.post(f"{admin}/clock", auth=False, json={"advance": 3600}).json()["now"]
    assert after > before
    state = client.get(f"{admin}/state", auth=False).json()
    assert state["peakConcurrentImports"] == 1 and state["violations"] == []
    assert state["tables"] == {"USMF": {"customer groups": 1}}
    rows = client.get(f"{admin}/data/USMF/Customer groups", auth=False).json()
    assert rows[0]["CUSTOMERGROUPID"] == "10"
    executions = client.get(f"{admin}/executions", auth=False).json()
    assert executions[0]["executionId"] == eid and executions[0]["status"] == "Succeeded"
    calls = client.get(f"{admin}/calls", auth=False).json()
    assert {"at", "wall", "method", "path", "endpoint", "status", "ms", "fault"} <= set(calls[0])
    assert all("sig=" not in c["path"] for c in calls)
    seeded = client.post(
        f"{admin}/outbound/%7B6D31E09F-0249-459F-94F0-AAD9C2C47B64%7D", auth=False, data=b"abc"
    )
    assert seeded.json()["correlationId"]
    assert client.post(f"{admin}/reset", auth=False).status_code == 200
    assert client.emu.admin.executions() == []


def test_admin_http_control_routes_and_unknown_ones(client: Client) -> None:
    admin = f"{client.emu.base_url}/_emulator"
    http = client.http
    kw = {"verify": client.emu.ca_bundle_path, "timeout": 30}
    groups = f"{admin}/data/USMF/Customer groups"
    seeded = client.post(groups, auth=False, json=[{"CUSTOMERGROUPID": "20", "DESCRIPTION": "b"}])
    assert seeded.json() == {"ok": True}
    assert [r["CUSTOMERGROUPID"] for r in client.get(groups, auth=False).json()] == ["20"]
    rule = {"endpoint": "ImportFromPackage", "kind": "500", "next_n": 1}
    assert client.post(f"{admin}/faults", auth=False, json=rule).json() == {"ok": True}
    assert [f["kind"] for f in client.get(f"{admin}/state", auth=False).json()["faults"]] == ["500"]
    assert http.delete(f"{admin}/faults", **kw).json() == {"ok": True}
    assert client.get(f"{admin}/state", auth=False).json()["faults"] == []
    now = client.post(f"{admin}/clock", auth=False, json={"set": "2030-01-02T03:04:05+00:00"}).json()["now"]
    assert now.startswith("2030-01-02T03:04:0")  # the clock runs on from the time set
    activity = "{6D31E09F-0249-459F-94F0-AAD9C2C47B64}"
    cid = client.post(f"{admin}/outbound/{activity}", auth=False, data=b"abc").json()["correlationId"]
    assert [m["correlationId"] for m in client.get(f"{admin}/outbound", auth=False).json()] == [cid]
    assert [m["correlationId"] for m in client.get(f"{admin}/outbound/{activity}", auth=False).json()] == [
        cid
    ]
    assert client.get(f"{client.emu.base_url}/metadata/DataEntities", auth=True).status_code == 200
    assert client.post(f"{admin}/tokens/revoke", auth=False).json() == {"ok": True}
    assert client.get(f"{client.emu.base_url}/metadata/DataEntities", auth=True).status_code == 401
    events = {"url": "https://127.0.0.1:9/events", "key": "k"}
    assert client.post(f"{admin}/business-events", auth=False, json=events).json() == {"ok": True}
    assert client.get(f"{admin}/business-events", auth=False).json() == []
    # A path that does not fit a route (unknown, wrong arity, wrong method) is a 404 naming it.
    for method, path in [("GET", "nope"), ("POST", "data/USMF"), ("POST", "tokens"), ("POST", "outbound"),
                         ("PUT", "clock"), ("GET", "")]:  # fmt: skip
        r = http.request(method, f"{admin}/{path}", **kw)
        assert r.status_code == 404 and r.json() == {
            "Message": f"unknown admin route {method} /_emulator/{path}"
        }


def test_admin_key(make_emulator) -> None:
    client = Client(make_emulator(EmulatorConfig(admin_key="k1")))
    url = f"{client.emu.base_url}/_emulator/state"
    assert client.get(url, auth=False).status_code == 403
    assert client.get(url, auth=False, headers={"x-emulator-admin-key": "k1"}).status_code == 200


def test_cli_starts_on_127_0_0_1_and_serves(azurite: Azurite, tmp_path: Path) -> None:
    port = free_port()
    ca_out = tmp_path / "ca.pem"
    config = tmp_path / "emulator.json"
    config.write_text(EmulatorConfig(legal_entities=["USMF"]).model_dump_json())
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.fno_emulator", "--config", str(config), "--port", str(port),
         "--storage-connection-string", azurite.connection_string, "--ca-out", str(ca_out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        lines = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(3))  # type: ignore[union-attr]
        assert lines["base_url"] == f"https://127.0.0.1:{port}"
        assert lines["ca_bundle"] == str(ca_out) and ca_out.exists()
        r = requests.get(
            f"{lines['base_url']}/adfs/.well-known/openid-configuration", verify=str(ca_out), timeout=10
        )
        assert r.status_code == 200
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0
