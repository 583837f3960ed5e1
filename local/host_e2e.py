"""The demo's drops against a real Functions host process: ``python -m local.host_e2e run --host-cmd "..."``.

Everything but the host is done here, the same way for every host: start Azurite and the F&O emulator, stage the
app (symlinks to this checkout, so the host runs this very code) with a ``local.settings.json`` pointing at them,
start the host command in that folder, wait for ``/api/health``, drop the demo's files into the inbound
container, wait for their outcome rows, check them against what each file is, and tear everything down.

``scripts/host-e2e.sh`` runs it with ``func start`` (Azure Functions Core Tools) and the suite
(``tests/e2e/test_host_e2e_scenario.py``) with ``python -m local.functions_runner``: only ``--host-cmd`` differs.
The shape follows the end-to-end harness of microsoft/durabletask-python (``func start --port N`` in the app
folder, its own process group, readiness by polling an HTTP route, fail fast on the host's fatal start-up
messages, the whole group terminated at the end).

The expected outcome of each drop is derived from the file itself (``expectations``), never from the app: a
package or raw file whose rows all fit the entity → Succeeded, some rows too long → PartiallySucceeded, none fit
→ Failed, a zip that is neither a package nor a batch of packages → Rejected, bytes already dropped → Duplicate.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".local-run"
# The deployed app (what .funcignore leaves in the package): linked, not copied, into the staged folder.
APP_FILES = ("function_app.py", "host.json", "requirements.txt", "routes.json")
APP_PACKAGES = ("activities", "dmf", "orchestrators", "triggers")
# Messages after which the host will not come up: durabletask-python's e2e harness's list. (A host that indexed
# no functions answers 404 on /api/health and times out instead.)
FATAL_HOST_MESSAGES = (
    "Host startup operation has been canceled",
    "Worker failed to load",
    "Worker was unable to load",
)
DONE = {"Succeeded", "PartiallySucceeded", "Failed", "Rejected", "Duplicate", "TimedOut", "Canceled"}
CONTAINER_FOR = {
    "Succeeded": "PROCESSED_CONTAINER",
    "PartiallySucceeded": "PROCESSED_CONTAINER",
    "Failed": "FAILED_CONTAINER",
    "Rejected": "REJECTED_CONTAINER",
    "Duplicate": "REJECTED_CONTAINER",
}


def say(msg: str) -> None:
    print(f"[host-e2e] {msg}", flush=True)


# What each file is -------------------------------------------------------------------------------------------


@dataclass
class Expectation:
    name: str  # blob name in the inbound container
    data: bytes
    kind: str  # package, raw, batch, broken, duplicate
    legal_entity: str
    good: list[str] = field(default_factory=list)  # key values F&O must end up holding
    bad_rows: int = 0
    packages: int = 0  # packages imported for it
    duplicate_of: str | None = None

    @property
    def status(self) -> str:
        if self.kind in ("broken", "duplicate"):
            return {"broken": "Rejected", "duplicate": "Duplicate"}[self.kind]
        if not self.bad_rows:
            return "Succeeded"
        return "PartiallySucceeded" if self.good else "Failed"

    @property
    def container(self) -> str:
        return CONTAINER_FOR[self.status]


def _rows(text: str, entity: Any) -> tuple[list[str], int]:
    """(key values of the rows that fit the entity's field lengths, number of rows that do not)."""
    good, bad = [], 0
    for row in csv.DictReader(io.StringIO(text)):
        fits = all(
            f.max_length is None or len(row.get(f.name) or "") <= f.max_length
            for f in entity.fields
            if f.name in row
        )
        if fits:
            good.append(row[entity.keys[0]])
        else:
            bad += 1
    return good, bad


def _entity(label: str) -> Any:
    from local.fno_emulator.config import default_catalogue

    (entity,) = [e for e in default_catalogue() if e.label == label]
    return entity


def _describe_zip(data: bytes) -> tuple[str, list[str], int, int]:
    """(kind, good keys, bad rows, packages) of a zip: a package, a batch of packages, or broken."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return "broken", [], 0, 0
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        if "Manifest.xml" in names:
            good, bad = [], 0
            for n in names:
                if n.lower().endswith(".csv"):
                    g, b = _rows(zf.read(n).decode("utf-16"), _entity(Path(n).stem))
                    good, bad = good + g, bad + b
            return "package", good, bad, 1
        if names and all(n.lower().endswith(".zip") for n in names):
            good, bad, packages = [], 0, 0
            for n in names:
                kind, g, b, p = _describe_zip(zf.read(n))
                if kind != "package":
                    return "broken", [], 0, 0
                good, bad, packages = good + g, bad + b, packages + p
            return "batch", good, bad, packages
    return "broken", [], 0, 0


def expectations(drops: Mapping[str, bytes]) -> list[Expectation]:
    """What each dropped file must come to, in drop order, from the bytes alone."""
    out: list[Expectation] = []
    seen: dict[str, str] = {}
    for name, data in drops.items():
        legal_entity = name.split("/", 1)[0]  # the <legal entity>/<data project>/<file> convention
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            out.append(Expectation(name, data, "duplicate", legal_entity, duplicate_of=seen[digest]))
            continue
        if name.lower().endswith(".zip"):
            kind, good, bad, packages = _describe_zip(data)
        else:
            label = Path(name).stem.split("__", 1)[0]  # "Customer groups__with-bad-rows.csv"
            good, bad = _rows(data.decode("utf-8-sig"), _entity(label))
            kind, packages = "raw", 1
        e = Expectation(name, data, kind, legal_entity, good, bad, packages)
        if e.status != "Rejected":
            seen[digest] = name
        out.append(e)
    return out


# Checking the outcome ----------------------------------------------------------------------------------------


def check(
    expected: Iterable[Expectation],
    outcomes: list[dict[str, Any]],
    blobs: Mapping[str, list[str]],
    fno_data: Mapping[str, set[str]],
    parallel_import_violations: int,
) -> list[str]:
    """Every difference between what each drop must come to and what the outcome table, blobs and F&O show."""
    expected = list(expected)
    problems = []
    drops = [r for r in outcomes if r.get("Kind") == "drop"]
    for e in expected:
        rows = [r for r in drops if (r.get("SourceBlob") or "").endswith("/" + e.name)]
        if len(rows) != 1:
            problems.append(f"{e.name}: {len(rows)} drop rows, expected 1")
            continue
        row = rows[0]
        if row.get("Status") != e.status:
            problems.append(
                f"{e.name}: status {row.get('Status')!r}, expected {e.status!r} ({row.get('Reason')})"
            )
        packages = [
            r
            for r in outcomes
            if r.get("Kind") == "package"
            and r["RowKey"].startswith(row["RowKey"] + "~")
            and "~r" not in r["RowKey"]
        ]
        if len(packages) != e.packages:
            problems.append(f"{e.name}: {len(packages)} packages imported, expected {e.packages}")
        if e.status == "Succeeded" and any(p.get("Status") != "Succeeded" for p in packages):
            problems.append(f"{e.name}: package statuses {[p.get('Status') for p in packages]}")
        if e.name not in blobs.get(e.container, []):
            problems.append(f"{e.name}: not in {e.container} ({ {k: len(v) for k, v in blobs.items()} })")
    for le in sorted({e.legal_entity for e in expected}):
        want = {k for e in expected if e.legal_entity == le for k in e.good}
        if set(fno_data.get(le, set())) != want:
            problems.append(f"F&O {le}: holds {sorted(fno_data.get(le, set()))}, expected {sorted(want)}")
    if parallel_import_violations:
        problems.append(f"F&O saw {parallel_import_violations} imports running in parallel")
    return problems


# The stack ---------------------------------------------------------------------------------------------------


def demo_drops() -> dict[str, bytes]:
    """The demo's files (``local.demo.sample_drops``), in the order the demo drops them."""
    from local.demo import sample_drops

    return sample_drops()


@dataclass
class Result:
    expected: list[Expectation]
    outcomes: list[dict[str, Any]]
    problems: list[str]
    health: dict[str, Any]
    seconds: float


class HostE2E:
    """Azurite + emulator + a staged app folder + one host process.

    ``run()`` does it all: ``up()``, ``start_host()``, ``drop()`` and ``wait_for()`` per phase, ``check()``,
    ``down()`` (always, keeping the work folder when anything failed).
    """

    def __init__(self, host_cmd: str, *, timeout: float = 600.0, startup_timeout: float = 300.0) -> None:
        self.host_cmd = host_cmd
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.function_key = ""  # set when the app is staged
        self.unique = "h" + uuid.uuid4().hex[:10]
        self.work = RUN_DIR / f"host-e2e-{self.unique}"
        self.app_dir = self.work / "app"
        self.log_path = self.work / "host.log"
        self.settings_path = self.app_dir / "local.settings.json"
        self.az: Any = None
        self.emu: Any = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.names: dict[str, str] = {}

    # lifecycle ---------------------------------------------------------------------------------------------
    def up(self) -> None:
        from azure.storage.blob import BlobServiceClient

        from local.azurite import Azurite, free_port
        from local.embedded_stack import app_settings
        from local.fno_emulator import Emulator, EmulatorConfig
        from local.fno_emulator.config import Timings

        self.work.mkdir(parents=True)
        say(f"work folder {self.work.relative_to(ROOT)}")
        self.az = Azurite().start()
        say(f"Azurite on 127.0.0.1:{self.az.blob_port}/{self.az.queue_port}/{self.az.table_port}")
        # An F&O import in about a second: the host runs on the real clock.
        timings = Timings(
            not_found_seconds=0.2,
            queue_seconds=0.2,
            import_base_seconds=0.5,
            import_per_row_seconds=0.0,
            error_keys_file_seconds=0.3,
        )
        self.emu = Emulator(EmulatorConfig(timings=timings), self.az.connection_string).start()
        say(f"F&O emulator on {self.emu.base_url}")
        u = self.unique
        self.names = {
            "TASKHUB_NAME": f"{u}hub",
            "OUTCOMES_TABLE": f"{u}outcomes",
            "GATES_TABLE": f"{u}gates",
            "LEDGER_TABLE": f"{u}ledger",
        }
        for setting, base in (
            ("INBOUND_CONTAINER", "inbound"),
            ("STAGING_CONTAINER", "staging"),
            ("PROCESSED_CONTAINER", "processed"),
            ("FAILED_CONTAINER", "failed"),
            ("REJECTED_CONTAINER", "rejected"),
            ("ERRORS_CONTAINER", "import-errors"),
            ("ARCHIVE_CONTAINER", "archive"),
        ):
            self.names[setting] = f"{u}-{base}"
        values = {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            **app_settings(
                self.az,
                self.emu,
                **self.names,
                INBOUND_BLOB_SOURCE="LogsAndContainerScan",  # Azurite has no Event Grid: the host polls
                POLL_INITIAL_SECONDS=1,
                GATE_RECHECK_SECONDS=2,
                LOG_LEVEL="INFO",
            ),
        }
        self.port = free_port()
        self._stage_app(values)
        self.blobs = BlobServiceClient.from_connection_string(self.az.connection_string)
        self.blobs.create_container(self.names["INBOUND_CONTAINER"])

    def _stage_app(self, values: dict[str, str]) -> None:
        """This checkout's app, linked into a folder of its own, with its own local.settings.json."""
        self.app_dir.mkdir()
        for name in (*APP_FILES, *APP_PACKAGES):
            (self.app_dir / name).symlink_to(ROOT / name)
        venv = Path(sys.prefix)
        if venv != Path(sys.base_prefix):  # a virtual environment: the host's worker uses it, as if activated
            (self.app_dir / ".venv").symlink_to(venv)
        self.settings_path.write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2))
        # FUNCTION-level routes need a key: the local runner reads this file (its default --key-file);
        # Core Tools does not check keys locally, so sending it there is harmless.
        from local.functions_runner.keys import HostKeys

        self.function_key = HostKeys.load_or_create(
            self.app_dir / ".local-run" / "host-keys.json"
        ).function_key
        say(f"settings written to {self.settings_path.relative_to(ROOT)} (task hub {values['TASKHUB_NAME']})")

    def host_argv(self) -> list[str]:
        subst = {"port": str(self.port), "settings": str(self.settings_path), "python": sys.executable}
        return [part.format(**subst) for part in shlex.split(self.host_cmd)]

    def host_env(self) -> dict[str, str]:
        env = dict(os.environ)
        venv = self.app_dir / ".venv"
        if venv.exists():  # activate the environment (durabletask-python's harness does the same for func)
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
            env.pop("PYTHONHOME", None)
        # The project's local tools (the local runner) are not part of the staged app.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        return env

    def start_host(self) -> dict[str, Any]:
        argv = self.host_argv()
        say(f"starting the host: {shlex.join(argv)}")
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=self.app_dir,
            env=self.host_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://127.0.0.1:{self.port}/api/health"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the host exited with {self.proc.returncode} before it was ready")
            text = self.host_log()
            for marker in FATAL_HOST_MESSAGES:
                if marker in text:
                    raise RuntimeError(f"the host failed to start ({marker!r})")
            health = self._health(url)
            if health is not None:
                return health
            if time.monotonic() > deadline:
                raise TimeoutError(f"the host did not answer {url} within {self.startup_timeout:.0f}s")
            time.sleep(0.5)

    def start_host_on_a_free_port(self, attempts: int = 3) -> dict[str, Any]:
        """``start_host()``, again on another free port when the chosen one was taken before the host bound it."""
        from local.azurite import free_port

        for attempt in range(1, attempts + 1):
            try:
                return self.start_host()
            except RuntimeError:
                if attempt == attempts or "address already in use" not in self.host_log().lower():
                    raise
                self.stop_host()
                self.port = free_port()
                say(f"the port was taken meanwhile: trying {self.port}")
        raise AssertionError("unreachable")

    def _health(self, url: str) -> dict[str, Any] | None:
        """The app's health answer, or None while the host is not serving the app's routes yet (404s, refusals)."""
        req = urllib.request.Request(url, headers={"x-functions-key": self.function_key})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:  # nosec B310 # the host on http://127.0.0.1
                code, body = resp.status, resp.read()
        except urllib.error.HTTPError as err:  # a 500 names misconfigured settings: the app did load
            code, body = err.code, err.read()
        except (urllib.error.URLError, OSError):
            return None
        try:
            health = json.loads(body)
        except ValueError:
            return None
        if not isinstance(health, dict) or "status" not in health:
            return None
        say(f"host ready: /api/health {code} {health}")
        return health

    def stop_host(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        # The host and its language worker are one process group (its id is the host's pid): end the whole
        # group, even when the host itself has already exited and left a worker behind.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
            time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGKILL)  # a straggler that ignored SIGTERM
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass  # nothing left in the group

    def down(self, keep: bool = False) -> None:
        self.stop_host()
        if self.emu is not None:
            self.emu.stop()
        if self.az is not None:
            self.az.stop()
        if keep:
            if self.log_path.exists():  # a copy safe to share (CI keeps it): no SAS signatures, no tokens
                (self.work / "host.redacted.log").write_text(self.host_log_tail(lines=100_000))
            say(f"kept {self.work.relative_to(ROOT)} (host log: host.log, shareable: host.redacted.log)")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # actions -----------------------------------------------------------------------------------------------
    def drop(self, e: Expectation) -> None:
        self.blobs.get_blob_client(self.names["INBOUND_CONTAINER"], e.name).upload_blob(
            e.data, overwrite=True
        )
        say(f"dropped {e.name} ({len(e.data):,} bytes): expect {e.status}")

    def wait_for(self, expected: list[Expectation], deadline: float) -> None:
        """Until every one of these drops has a final drop row and its blob has left the inbound container."""
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the host exited with {self.proc.returncode}")
            done = {
                r["SourceBlob"].partition("/")[2]
                for r in self.outcomes()
                if r.get("Kind") == "drop" and r.get("Status") in DONE and r.get("SourceBlob")
            }
            inbound = set(self.blob_names("INBOUND_CONTAINER"))
            waiting = [e.name for e in expected if e.name not in done or e.name in inbound]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no final outcome for {waiting}")
            time.sleep(0.5)

    # reading -----------------------------------------------------------------------------------------------
    def outcomes(self) -> list[dict[str, Any]]:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import TableServiceClient

        table = TableServiceClient.from_connection_string(self.az.connection_string).get_table_client(
            self.names["OUTCOMES_TABLE"]
        )
        try:
            return sorted((dict(e) for e in table.list_entities()), key=lambda e: e["RowKey"])
        except ResourceNotFoundError:
            return []

    def blob_names(self, setting: str) -> list[str]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return sorted(b.name for b in self.blobs.get_container_client(self.names[setting]).list_blobs())
        except ResourceNotFoundError:
            return []

    def host_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def host_log_tail(self, lines: int = 60) -> str:
        from dmf.redact import redact

        return redact("\n".join(self.host_log().splitlines()[-lines:]))

    # the whole run -----------------------------------------------------------------------------------------
    def run(self, drops: Mapping[str, bytes], keep: bool = False) -> Result:
        t0 = time.monotonic()
        expected = expectations(drops)
        ok = False
        try:
            self.up()
            health = self.start_host_on_a_free_port()
            say(f"stack and host up in {time.monotonic() - t0:.1f}s")
            deadline = time.monotonic() + self.timeout
            # As the demo does: everything first, then the re-drop of content already imported.
            first = [e for e in expected if e.kind != "duplicate"]
            later = [e for e in expected if e.kind == "duplicate"]
            for batch in (first, later):
                t1 = time.monotonic()
                for e in batch:
                    self.drop(e)
                self.wait_for(batch, deadline)
                say(f"{len(batch)} drops reached their outcome in {time.monotonic() - t1:.1f}s")
            outcomes = self.outcomes()
            blobs = {
                s: self.blob_names(s)
                for s in (
                    "INBOUND_CONTAINER",
                    "PROCESSED_CONTAINER",
                    "FAILED_CONTAINER",
                    "REJECTED_CONTAINER",
                )
            }
            fno = {
                le: {r["CUSTOMERGROUPID"] for r in self.emu.admin.data(le, "Customer groups")}
                for le in self.emu.config.legal_entities
            }
            problems = check(expected, outcomes, blobs, fno, self.emu.admin.violations)
            if health.get("status") != "ok":
                problems.append(f"/api/health: {health}")
            ok = not problems
            return Result(expected, outcomes, problems, health, time.monotonic() - t0)
        finally:
            if not ok:
                say("host log (last lines, redacted):\n" + self.host_log_tail())
            self.down(keep=keep or not ok)


def report(result: Result, out: Callable[[str], None] = say) -> None:
    rows = {
        (r.get("SourceBlob") or "").split("/", 1)[-1]: r for r in result.outcomes if r.get("Kind") == "drop"
    }
    for e in result.expected:
        got = rows.get(e.name, {}).get("Status", "-")
        mark = "ok " if got == e.status else "BAD"
        out(f"{mark} {e.name}: expected {e.status} ({e.kind}, {e.packages} packages), got {got}")
    for p in result.problems:
        out(f"PROBLEM {p}")
    verdict = "passed" if not result.problems else f"FAILED ({len(result.problems)} problems)"
    out(f"{verdict} in {result.seconds:.0f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m local.host_e2e", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="stack up, host up, drop the demo's files, check the outcomes, tear down")
    r.add_argument(
        "--host-cmd",
        required=True,
        help="host command line, run in the staged app folder; {port}, {settings} and {python} are filled in, "
        'e.g. "func start --port {port}" or "{python} -m local.functions_runner --settings {settings} --port {port}"',
    )
    r.add_argument("--timeout", type=float, default=600.0, help="seconds for every drop to reach its outcome")
    r.add_argument("--startup-timeout", type=float, default=300.0, help="seconds for the host to answer")
    r.add_argument("--keep", action="store_true", help="keep the work folder (settings, host log)")
    ns = p.parse_args(argv)
    run = HostE2E(ns.host_cmd, timeout=ns.timeout, startup_timeout=ns.startup_timeout)
    result = run.run(demo_drops(), keep=ns.keep)
    report(result)
    return 0 if not result.problems else 1


if __name__ == "__main__":
    sys.exit(main())
