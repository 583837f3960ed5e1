"""The operators' console: one static HTML page with an inline script (no build step), shipped with the app."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def page() -> str:
    return (Path(__file__).with_name("console.html")).read_text(encoding="utf-8")
