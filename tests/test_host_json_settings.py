"""host.json's %SETTING% references have no fallback in the host: every profile must set them, and the docs say so."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _host_json_references() -> set[str]:
    return set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)%", (ROOT / "host.json").read_text()))


def test_local_profile_sets_every_host_json_reference() -> None:
    refs = _host_json_references()
    assert "TASKHUB_NAME" in refs  # guards the guard: the reference exists
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    missing = sorted(r for r in refs if not values.get(r))
    assert not missing, f"func start fails without these: {missing}"


def test_settings_doc_does_not_promise_a_default_the_host_lacks() -> None:
    doc = (ROOT / "docs" / "SETTINGS.md").read_text()
    for name in _host_json_references():
        (row,) = [ln for ln in doc.splitlines() if ln.startswith(f"| `{name}` |")]
        cells = [c.strip() for c in row.strip("|").split("|")]
        meaning, default = cells[1], cells[2]
        assert "required" in default.lower(), f"{name}: Default column {default!r}"
        assert "fails to start" in meaning, f"{name}: the doc must say the host fails without it"
