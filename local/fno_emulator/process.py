"""``EmulatorProcess``: the emulator in a child process, with the surface the embedded stack uses from
``Emulator`` (``start``/``stop``, URLs and credentials, ``admin``).

F&O is never inside the Functions worker, so a measurement of the app's own memory (the soak) runs F&O's side
apart: its job history and data grow by design and would otherwise be counted as the app's. A virtual clock
is shared through one shared double (the clock's watchers write it under the clock's lock); ``admin`` calls
go over a pipe and answer what the in-process ``Admin`` answers.
"""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from .admin import Admin
from .config import EmulatorConfig
from .emulator import Credentials, Emulator

_ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs threads


def _serve(config: EmulatorConfig, storage: str, cell: Any, pipe: Connection) -> None:
    """The child: run the emulator until told to stop (or the parent is gone), answering admin calls."""
    clock = (lambda: datetime.fromtimestamp(cell.value, UTC)) if cell is not None else None
    emu = Emulator(config, storage, clock=clock).start()
    pipe.send(
        {"base_url": emu.base_url, "api_base_url": emu.api_base_url, "ca_bundle_path": emu.ca_bundle_path}
    )
    try:
        while True:
            try:
                msg = pipe.recv()
            except EOFError:
                return
            if msg[0] == "stop":
                return
            pipe.send(_answer(emu.admin, *msg))
    finally:
        emu.stop()
        pipe.close()


def _answer(admin: Admin, kind: str, name: str, args: tuple = (), kwargs: dict | None = None) -> tuple:
    try:
        attr = getattr(admin, name)
        return ("ok", attr(*args, **(kwargs or {})) if kind == "call" else attr)
    except Exception as e:  # the caller gets it raised on its side
        return ("error", f"{type(e).__name__}: {e}")


class RemoteAdmin:
    """``Admin`` over the pipe: methods are called, properties read, in the child."""

    _properties = frozenset(n for n, v in vars(Admin).items() if isinstance(v, property))

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe
        self._lock = threading.Lock()

    def _ask(self, *msg: Any) -> Any:
        with self._lock:
            self._pipe.send(msg)
            status, value = self._pipe.recv()
        if status != "ok":
            raise RuntimeError(f"emulator admin {msg[1]}: {value}")
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not hasattr(Admin, name):
            raise AttributeError(name)
        if name in self._properties:
            return self._ask("get", name)
        return lambda *args, **kwargs: self._ask("call", name, args, kwargs)


class EmulatorProcess(Credentials):
    """The emulator run apart. ``clock``: the runner's ``VirtualClock`` to follow (None: real time)."""

    def __init__(self, config: EmulatorConfig, storage_connection_string: str, clock: Any = None) -> None:
        self.config = config
        self._storage = storage_connection_string
        self._clock = clock
        self._proc: Any = None
        self._pipe: Connection | None = None
        self.admin: Any = None
        self.base_url = self.api_base_url = self.ca_bundle_path = ""

    @property
    def pid(self) -> int:
        return self._proc.pid

    def start(self, timeout: float = 60) -> EmulatorProcess:
        cell = None
        if self._clock is not None:
            cell = _ctx.RawValue("d", self._clock.now().timestamp())
            self._clock.watch(lambda now: setattr(cell, "value", now.timestamp()))
        mine, theirs = _ctx.Pipe()
        self._proc = _ctx.Process(
            target=_serve, args=(self.config, self._storage, cell, theirs), name="fno-emulator", daemon=True
        )
        self._proc.start()
        theirs.close()
        try:
            if not mine.poll(timeout):
                raise EOFError
            ready = mine.recv()
        except EOFError:
            self._proc.join(2)  # a child that closed the pipe by ending: let it be reaped
            ended = self._proc.exitcode
            self._proc.kill()
            self._proc.join(5)
            why = f"ended (exit code {ended})" if ended is not None else f"was not ready in {timeout:.0f} s"
            raise RuntimeError(
                f"the emulator process {why} before it served; a script that starts it needs"
                " `if __name__ == '__main__':` (multiprocessing's spawn imports the script again)"
            ) from None
        self.base_url, self.api_base_url = ready["base_url"], ready["api_base_url"]
        self.ca_bundle_path = ready["ca_bundle_path"]
        self._pipe = mine
        self.admin = RemoteAdmin(mine)
        return self

    def stop(self) -> None:
        if self._pipe is not None:
            try:
                self._pipe.send(("stop",))
            except OSError:
                pass
            self._pipe.close()
            self._pipe = None
        if self._proc is not None:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
            self._proc = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
