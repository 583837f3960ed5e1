"""Health reports functions disabled by an unset binding setting (``%INBOUND_CONTAINER%``, the schedules)
instead of answering ok: the host cannot apply a default to a binding expression."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from local.embedded_stack import Stack

BINDING_SETTINGS = {
    "on_inbound_blob": "INBOUND_CONTAINER",
    "drain_timer": "DRAIN_SCHEDULE",
    "export_timer": "EXPORT_SCHEDULE",
    "housekeeping_timer": "HOUSEKEEPING_SCHEDULE",
    "gate_sweeper": "GATE_SWEEP_SCHEDULE",
    "metadata_refresh": "METADATA_REFRESH_SCHEDULE",
}


def _get(url: str, key: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"x-functions-key": key})  # a FUNCTION-level route
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_every_binding_setting_is_found_in_the_app() -> None:
    import function_app  # noqa: F401  (health reads this app's functions)
    from triggers.admin_http import app_functions, disabled_functions

    functions = app_functions()
    assert len(functions) >= 38 and "on_inbound_blob" in {f.get_function_name() for f in functions}
    found = disabled_functions(functions, environ={})
    assert {d["function"]: d["missing_settings"] for d in found} == {
        f: [s] for f, s in BINDING_SETTINGS.items()
    }
    assert disabled_functions(functions, environ=dict.fromkeys(BINDING_SETTINGS.values(), "x")) == []


def test_health_names_functions_disabled_by_unset_binding_settings(azurite, unique_name) -> None:
    stack = Stack(azurite, unique_name)
    stack.emu.start()
    try:
        from local.embedded_stack import app_settings

        values = app_settings(azurite, stack.emu, **stack.names)
        del values["INBOUND_CONTAINER"], values["DRAIN_SCHEDULE"]
        stack.settings = values
        stack.start_runner()
        # The runner disables them, as the host does...
        assert {"on_inbound_blob", "drain_timer"} <= set(stack.runner.function_errors)
        # ...and health says so instead of "ok".
        status, body = _get(f"{stack.runner.http_base_url}/api/health", stack.runner.function_key)
        assert status == 503 and body["status"] == "degraded", body
        assert body["disabled_functions"] == [
            {"function": "drain_timer", "missing_settings": ["DRAIN_SCHEDULE"]},
            {"function": "on_inbound_blob", "missing_settings": ["INBOUND_CONTAINER"]},
        ]
        stack.stop_runner()
        stack.settings = app_settings(azurite, stack.emu, **stack.names)
        stack.start_runner()
        assert not set(stack.runner.function_errors) & set(BINDING_SETTINGS)
        status, body = _get(f"{stack.runner.http_base_url}/api/health", stack.runner.function_key)
        assert (status, body["status"]) == (200, "ok") and "disabled_functions" not in body
    finally:
        stack.stop()
