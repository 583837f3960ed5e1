"""The OpenAPI document describes every HTTP route the app registers, with the methods it accepts."""

from __future__ import annotations

import re

from dmf.operators.openapi import document


def _routes() -> set[tuple[str, str]]:
    import function_app

    out = set()
    for f in function_app.app.get_functions():
        trigger = f.get_trigger()
        if trigger is None or trigger.get_binding_name() != "httpTrigger":
            continue
        d = trigger.get_dict_repr()
        route = d.get("route") or f.get_function_name()
        for m in d.get("methods") or ["GET", "POST"]:
            out.add((f"/api/{route}", str(getattr(m, "value", m)).lower()))
    return out


def test_every_registered_route_is_in_the_openapi_document() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.")
    routes = _routes()
    assert ("/api/drops/{id}/retry", "post") in routes and len(routes) >= 15
    described = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    missing = sorted(routes - described)
    assert not missing, f"routes not in openapi.json: {missing}"
    extra = sorted(described - routes)
    assert not extra, f"openapi.json describes routes the app does not have: {extra}"


def test_every_path_parameter_is_declared_and_every_ref_resolves() -> None:
    doc = document()
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, declared)
            assert op["responses"], path
    text = str(doc)
    for ref in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert ref in doc["components"]["schemas"], ref
