"""``Emulator``: one running F&O stand-in (HTTPS server thread + state), started and stopped in-process."""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from .admin import Admin, admin_router
from .app import EmulatorApp
from .business_events import BusinessEvents
from .certs import generate
from .clock import Clock
from .config import EmulatorConfig
from .server import EmulatorServer


class Credentials:
    """What a client is given beside the URLs: the authority and the first configured credential."""

    config: EmulatorConfig
    base_url: str

    @property
    def authority(self) -> str:
        """Authority host for azure-identity (the SDK appends the tenant; AD FS: append ``/adfs``)."""
        return self.base_url

    @property
    def tenant(self) -> str:
        return self.config.credentials[0].tenant

    @property
    def client_id(self) -> str:
        return self.config.credentials[0].client_id

    @property
    def client_secret(self) -> str:
        return self.config.credentials[0].client_secret


class Emulator(Credentials):
    def __init__(
        self,
        config: EmulatorConfig | None = None,
        storage_connection_string: str = "UseDevelopmentStorage=true",
        clock: Callable[[], datetime] | None = None,
        state_dir: str | Path | None = None,
        port: int = 0,
    ) -> None:
        self.config = config or EmulatorConfig()
        self._conn = storage_connection_string
        self._clock = Clock(clock)
        self._state_dir = Path(state_dir) if state_dir else None
        self._own_dir = state_dir is None
        self._port = port
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None
        self.app: EmulatorApp | None = None
        self.admin: Admin
        self.ca_bundle_path = ""

    def start(self) -> Emulator:
        if self._state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="fno-emulator-"))
        certs = generate(self._state_dir / "tls")
        self.ca_bundle_path = str(certs.ca_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(certs.server_cert_pem, certs.server_key_pem)
        self.app = EmulatorApp(self.config, self._clock, self._conn)
        self.admin = Admin(self.app)
        self.app.admin_routes = admin_router(self.app, self.admin)
        self._server = EmulatorServer(self._port, ctx, self.app)
        port = self._server.server_address[1]
        self.app.set_base_url(f"https://127.0.0.1:{port}")
        self._thread = threading.Thread(target=self._server.serve_forever, name="fno-emulator", daemon=True)
        self._thread.start()
        self.app.engine.events.start()
        return self

    @property
    def business_events(self) -> BusinessEvents:
        """The DMF import-status business event sender (``business_events.py``)."""
        assert self.app is not None, "start() first"
        return self.app.engine.events

    @property
    def base_url(self) -> str:
        """Environment URL (token audience). On-premises, the APIs live under ``api_base_url``."""
        assert self.app is not None, "start() first"
        return self.app.base_url

    @property
    def api_base_url(self) -> str:
        assert self.app is not None, "start() first"
        return self.app.api_root

    def stop(self) -> None:
        if self.app is not None:
            self.app.engine.events.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._own_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
