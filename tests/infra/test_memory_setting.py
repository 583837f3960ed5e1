"""The worker runs with the glibc heap count the soak measured (bench/soak.py runs under the same value)."""

from __future__ import annotations

import pytest

from bench.soak import main as soak_main
from tests.infra.conftest import VARIANTS, app_settings, evaluate_main


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_template_caps_malloc_arenas_as_the_soak_measured(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = app_settings(evaluate_main(variant))["MALLOC_ARENA_MAX"]
    seen: list[str] = []

    def fake_execve(path: str, args: list[str], env: dict[str, str]) -> None:
        seen.append(env["MALLOC_ARENA_MAX"])
        raise SystemExit(0)

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr("os.execve", fake_execve)
    with pytest.raises(SystemExit):
        soak_main(["--drops", "1", "--messages", "1"])
    assert seen == [shipped] == ["2"]
