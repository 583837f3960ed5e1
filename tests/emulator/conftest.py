"""Fixtures for the emulator's own tests: a fresh emulator per test (cheap: EC certificate, one thread)
on the session's real Azurite, each with its own blob container, and a small authenticated client."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import requests

from local.azurite import Azurite
from local.fno_emulator import Emulator, EmulatorConfig

ACTIONS = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."


class Client:
    """Just enough of a DMF client for tests. ``verify`` goes on every call: requests lets the
    REQUESTS_CA_BUNDLE environment variable override ``Session.verify``."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.http = requests.Session()
        self.token = self.fetch_token()

    def fetch_token(self) -> str:
        r = self.http.post(
            f"{self.emu.authority}/{self.emu.tenant}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.emu.client_id,
                "client_secret": self.emu.client_secret,
                "scope": f"{self.emu.base_url}/.default",
            },
            verify=self.emu.ca_bundle_path,
            timeout=10,
        )
        r.raise_for_status()
        return r.json()["access_token"]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def action(self, name: str, body: dict | None = None, timeout: float = 30) -> requests.Response:
        return self.http.post(
            self.emu.api_base_url + ACTIONS + name,
            json=body or {},
            headers={**self.auth, "Accept": "application/json"},
            verify=self.emu.ca_bundle_path,
            timeout=timeout,
        )

    def value(self, name: str, body: dict | None = None) -> object:
        r = self.action(name, body)
        assert r.status_code == 200, r.text
        return r.json()["value"]

    def get(self, url: str, auth: bool = True, headers: dict[str, str] | None = None) -> requests.Response:
        return self.http.get(
            url,
            headers={**(self.auth if auth else {}), **(headers or {})},
            verify=self.emu.ca_bundle_path,
            timeout=30,
        )

    def post(self, url: str, auth: bool = True, **kw: object) -> requests.Response:
        return self.http.post(
            url, headers={**(self.auth if auth else {}), **kw.pop("headers", {})},  # type: ignore[dict-item]
            verify=self.emu.ca_bundle_path, timeout=30, **kw,
        )  # fmt: skip

    def upload_package(self, data: bytes, name: str | None = None) -> str:
        """GetAzureWriteUrl, then PUT the bytes to the SAS URL as F&O clients do."""
        value = self.value("GetAzureWriteUrl", {"uniqueFileName": name or f"{uuid.uuid4()}.zip"})
        import json

        url = json.loads(value)["BlobUrl"]
        r = requests.put(url, data=data, headers={"x-ms-blob-type": "BlockBlob"}, timeout=30)
        assert r.status_code == 201, r.text
        return url

    def import_package(
        self, url: str, project: str = "CustomerGroups-Import", le: str = "USMF", **extra
    ) -> str:
        body = {
            "packageUrl": url,
            "definitionGroupId": project,
            "executionId": "",
            "execute": True,
            "overwrite": True,
            "legalEntityId": le,
            **extra,
        }
        return str(self.value("ImportFromPackage", body))

    def status(self, execution_id: str) -> str:
        return str(self.value("GetExecutionSummaryStatus", {"executionId": execution_id}))


@pytest.fixture
def make_emulator(azurite: Azurite) -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def make(config: EmulatorConfig | None = None, **kw: object) -> Emulator:
        cfg = config or EmulatorConfig()
        cfg = cfg.model_copy(update={"blob_container": "dmf" + uuid.uuid4().hex[:12]})
        emu = Emulator(cfg, azurite.connection_string, **kw).start()  # type: ignore[arg-type]
        started.append(emu)
        return emu

    yield make
    for emu in started:
        errors = emu.admin.server_errors()
        emu.stop()
        assert not errors, errors  # an unexpected exception inside the emulator fails the test


@pytest.fixture
def emu(make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator()


@pytest.fixture
def client(emu: Emulator) -> Client:
    return Client(emu)
