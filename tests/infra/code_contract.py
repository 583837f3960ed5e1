"""What the code reads, found by introspection (never a hand-copied list), for the template ⇄ code tests.

Sources: ``dmf.settings.Settings`` (field aliases are the app-setting names), ``ENV_FIELDS`` (per-F&O-environment
keys), the function bindings of ``function_app`` (connection names and %SETTING% references, read in a
subprocess so the app's import side effects stay out of this test process), ``host.json``, literal
``os.environ``/``os.getenv`` reads in the deployed Python packages, and ``local.settings.example.json`` (what
the local profile changes from the code defaults).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

from pydantic_core import PydanticUndefined

from dmf.settings import ENV_FIELDS, FnoEnvironment, Settings, _env_name_for

ROOT = Path(__file__).resolve().parents[2]
APP_PACKAGES = ("dmf", "activities", "orchestrators", "triggers")

# Settings the Functions platform and host read (not the app's code): allowed in the template by name.
PLATFORM_SETTINGS = frozenset(
    {
        "AzureWebJobsStorage__blobServiceUri",
        "AzureWebJobsStorage__queueServiceUri",
        "AzureWebJobsStorage__tableServiceUri",
        "AzureWebJobsStorage__credential",
        "AzureWebJobsStorage__clientId",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "MALLOC_ARENA_MAX",  # read by glibc when the worker process starts
    }
)
# What the host reads for an identity-based connection named <prefix> (docs: "Connecting to host storage with an
# identity", and the blob extension's queue requirement).
CONNECTION_SUFFIXES = ("blobServiceUri", "queueServiceUri", "tableServiceUri", "credential", "clientId")
# Local-profile settings that must never reach Azure: a storage connection string (the account refuses shared
# keys) and the local F&O emulator's CA bundle.
LOCAL_ONLY = frozenset({"DATA_STORAGE", "FNO_CA_BUNDLE", "AzureWebJobsStorage"})


def settings_aliases() -> dict[str, str]:
    """Settings field name -> app-setting name, for every field read from the environment."""
    return {name: _env_name_for(name) for name in Settings.model_fields if name != "environments"}


def settings_default(alias: str) -> Any:
    for name, a in settings_aliases().items():
        if a == alias:
            return Settings.model_fields[name].default
    raise KeyError(alias)


def fno_setting_names(environment: str) -> set[str]:
    return {f"FNO_{environment.upper()}_{key}" for key in ENV_FIELDS}


@cache
def app_bindings() -> list[dict[str, Any]]:
    """Every function's name and bindings, as the Functions host indexes them."""
    code = (
        "import json, function_app\n"
        "print(json.dumps([{'name': f.get_function_name(), **json.loads(f.get_function_json())}"
        " for f in function_app.app.get_functions()]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def host_json() -> dict[str, Any]:
    return json.loads((ROOT / "host.json").read_text())


def percent_references() -> set[str]:
    """%NAME% app-setting references in host.json and in the function bindings."""
    text = json.dumps(host_json()) + json.dumps(app_bindings())
    return set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)%", text))


def connection_names() -> set[str]:
    """Identity-based connection prefixes the host or code reads: bindings, host.json, Settings' own."""
    names = {b["connection"] for f in app_bindings() for b in f["bindings"] if b.get("connection")}
    provider = host_json().get("extensions", {}).get("durableTask", {}).get("storageProvider", {})
    names.add(provider.get("connectionName", "AzureWebJobsStorage"))
    names |= {a.split("__")[0] for a in settings_aliases().values() if "__" in a}
    return {n.strip("%") for n in names}


def environ_reads() -> set[str]:
    """Literal names the deployed Python code reads with os.environ[...] / .get(...) / os.getenv(...)."""
    found: set[str] = set()
    files = [ROOT / "function_app.py"] + [p for pkg in APP_PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            key = None
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                f = node.func
                if (
                    isinstance(f, ast.Attribute)
                    and f.attr in ("getenv", "get")
                    and "environ" in ast.unparse(f)
                ):
                    key = node.args[0].value
                if isinstance(f, ast.Attribute) and f.attr == "getenv":
                    key = node.args[0].value
            is_environ = isinstance(node, ast.Subscript) and "environ" in ast.unparse(node.value)
            if is_environ and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            if isinstance(key, str):
                found.add(key)
    return found


def local_profile() -> dict[str, str]:
    return json.loads((ROOT / "local.settings.example.json").read_text())["Values"]


def required_fno_keys(deployment: str, auth_mode: str) -> set[str]:
    """ENV_FIELDS keys without which an environment of this kind fails validation (asked of the code itself)."""
    complete = {
        "base_url": "https://fno.example.com",
        "deployment": deployment,
        "auth_mode": auth_mode,
        "tenant_id": "t",
        "authority": "https://adfs.example.com/adfs",
        "client_id": "c",
        "client_secret": "s",
        "certificate_path": "cert.pem",
        "certificate_password": "p",
        "managed_identity_client_id": "m",
        "legal_entity": "USMF",
        "import_permits": "1",
        "scope": "https://fno.example.com/.default",
    }
    assert not FnoEnvironment(name="probe", **complete).problems(), "the complete probe must be valid"
    required = set()
    for key, field in ENV_FIELDS.items():
        probe = {k: v for k, v in complete.items() if k != field}
        try:
            broken = bool(FnoEnvironment(name="probe", **probe).problems())
        except ValueError:
            broken = True
        if broken:
            required.add(key)
    return required


def fields_without_default() -> set[str]:
    return {
        alias
        for name, alias in settings_aliases().items()
        if Settings.model_fields[name].default is PydanticUndefined
        and Settings.model_fields[name].default_factory is None
    }
