"""The operators' console in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
against the embedded stack: the page loads with its key from ``?code=``, a failed drop shows its reason and
error-file link, Retry leads to a new import in the emulator, and Pause holds a drop (no ImportFromPackage)
until Resume. Screenshots go to ``test-artifacts/console/``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e_support import Stack, customer_groups_csv

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PROJECT = "USMF/CustomerGroups-Import"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (scripts/setup.sh installs Debian's chromium)"
)


@pytest.fixture
def stack(azurite, unique_name):
    with Stack(azurite, unique_name) as s:
        yield s
    assert s.loop_blocks == [], "client functions blocked the event loop"


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            yield pg
            assert errors == [], errors
        finally:
            browser.close()


def _imports(stack: Stack) -> list[str]:
    return sorted(e["executionId"] for e in stack.emu.admin.executions() if e["kind"] == "import")


def _until(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def test_console_shows_a_failure_retries_it_and_pauses_the_gate(stack: Stack, page) -> None:
    stack.drop(f"{PROJECT}/Customer groups__bad.csv", customer_groups_csv([], bad_rows=3))
    stack.settle()
    bad = stack.drop_row("Customer groups__bad.csv")
    day = bad["PartitionKey"]
    url = f"{stack.runner.http_base_url}/api/console?code={stack.runner.function_key}&day={day}"

    # The page loads, lists the failed drop, and its detail shows F&O's reason and the error-file link.
    page.goto(url)
    row = page.locator(f"tr.drop[data-id='{bad['RowKey']}']")
    row.wait_for(timeout=30_000)
    assert "Failed" in row.inner_text()
    row.click()
    page.locator("#detail table.packages").wait_for(timeout=30_000)
    detail = page.locator("#detail").inner_text()
    assert "longer than 10 characters" in detail
    link = page.locator("#detail a.errfile").first
    assert "sig=" in (link.get_attribute("href") or "")
    page.screenshot(path=str(ARTIFACTS / "1-failed-drop.png"), full_page=True)

    # Retry: a new import of the failed package, under the retry's execution id.
    before = _imports(stack)
    page.locator("#retry").click()
    page.locator("#msg", has_text="Retry started").wait_for(timeout=30_000)
    stack.settle()
    new = sorted(set(_imports(stack)) - set(before))
    assert new == [f"CustomerGroups-Import-{bad['RowKey']}-r01-p001"], new
    page.locator("#detail h3", has_text="Retry r01").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "2-retried.png"), full_page=True)

    # Pause: a new drop waits at the gate, nothing is imported; Resume lets it in.
    page.locator(".gate[data-env='main'] button.pause").click()
    page.locator(".gate[data-env='main'] .gate-state", has_text="paused").wait_for(timeout=30_000)
    imports = _imports(stack)
    with stack.runner.hold_clock():  # the waiter sits on its recheck timer instead of spinning virtual time
        stack.drop(f"{PROJECT}/Customer groups__held.csv", customer_groups_csv(["HELD1"]))
        page.locator(".gate[data-env='main'] li").first.wait_for(timeout=60_000)
        held = stack.drop_row("Customer groups__held.csv")
        page.locator(f"tr.drop[data-id='{held['RowKey']}'] td.live", has_text="waiting-for-gate").wait_for(
            timeout=30_000
        )
        time.sleep(1)
        assert _imports(stack) == imports  # no ImportFromPackage while paused
        page.screenshot(path=str(ARTIFACTS / "3-paused-waiting.png"), full_page=True)
        page.locator(".gate[data-env='main'] button.resume").click()
        page.locator(".gate[data-env='main'] .gate-state", has_text="open").wait_for(timeout=30_000)
        _until(lambda: len(_imports(stack)) == len(imports) + 1)  # it imports at once, not at a recheck
    stack.settle()
    assert sorted(set(_imports(stack)) - set(imports)) == [f"CustomerGroups-Import-{held['RowKey']}-p001"]
    assert stack.drop_row("Customer groups__held.csv")["Status"] == "Succeeded"
    page.locator(f"tr.drop[data-id='{held['RowKey']}'] td.st", has_text="Succeeded").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "4-resumed.png"), full_page=True)
    assert stack.emu.admin.violations == 0


def test_console_without_a_key_is_refused(stack: Stack, page) -> None:
    base = f"{stack.runner.http_base_url}/api/console"
    assert page.request.get(base).status == 401
    assert page.request.get(f"{base}?code=wrong").status == 401
    ok = page.request.get(f"{base}?code={stack.runner.function_key}")
    assert ok.status == 200 and ok.headers["content-type"].startswith("text/html")
    assert ok.headers["referrer-policy"] == "no-referrer"  # the page's URL carries the key
