"""The OpenAPI document describes every HTTP route the app registers, with the methods it accepts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from dmf.operators.openapi import document

ROOT = Path(__file__).resolve().parents[2]


_LIST = """
import json, function_app
out = []
for f in function_app.app.get_functions():
    t = f.get_trigger()
    if t is not None and t.get_binding_name() == "httpTrigger":
        d = t.get_dict_repr()
        out.append([d.get("route") or f.get_function_name(), [str(getattr(m, "value", m)) for m in d.get("methods") or []]])
print(json.dumps(out))
"""


def _routes() -> set[tuple[str, str]]:
    """The app's HTTP routes, listed in a fresh interpreter (as the host indexes the app)."""
    out = subprocess.run(
        [sys.executable, "-c", _LIST], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return {
        (f"/api/{route}", m.lower())
        for route, methods in json.loads(out.strip().splitlines()[-1])
        for m in methods or ["GET", "POST"]
    }


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
