"""Templates evaluated once per session with pipeline-like parameters (no Bicep compiler needed)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep import Resource, Template

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

# What a pipeline passes for the required parameters (see infra/main.bicepparam).
BASE_PARAMS: dict[str, Any] = {
    "environmentName": "ci",
    "location": "westeurope",
    "fnoBaseUrl": "https://contoso.operations.dynamics.com",
    "fnoClientId": "11111111-2222-3333-4444-555555555555",
}

# Every shape the template can take: default, VNet, and each F&O auth mode / deployment.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "vnet": {"vnetEnabled": True},
    "federated": {"fnoAuthMode": "federated"},
    "certificate": {"fnoAuthMode": "certificate", "fnoCertificatePath": "certs/fno.pem"},
    "onprem": {"fnoDeployment": "onprem", "fnoAuthority": "https://adfs.contoso.com/adfs"},
    "operator": {
        "principalId": "99999999-8888-7777-6666-555555555555",
        "fnoClientSecret": "CANARY-secret-Value",
    },
}


@cache
def evaluate_main(variant: str) -> Template:
    return Template(INFRA / "main.bicep", {**BASE_PARAMS, **VARIANTS[variant]})


def deployed_resources(main: Template) -> list[Resource]:
    """Resources this evaluation deploys (conditions known false are left out), from every module."""
    return [r for tpl, on in main.all_templates() if on for r in tpl.resources if r.deployed]


def of_type(main: Template, rtype: str, *, existing: bool = False) -> list[Resource]:
    return [r for r in deployed_resources(main) if r.type == rtype and r.existing is existing]


def app_settings(main: Template) -> dict[str, Any]:
    (config,) = [r for r in of_type(main, "Microsoft.Web/sites/config") if r.props["name"] == "appsettings"]
    return config.props["properties"]


@pytest.fixture(params=sorted(VARIANTS))
def main_variant(request: pytest.FixtureRequest) -> Template:
    return evaluate_main(request.param)


@pytest.fixture
def main() -> Template:
    return evaluate_main("default")


@pytest.fixture
def resources_of() -> Callable[..., list[Resource]]:
    return of_type
