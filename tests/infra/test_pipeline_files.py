"""azure.yaml (azd) and the GitHub Actions workflow users deploy with."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from tests.infra.bicep import read_bicepparam
from tests.infra.conftest import INFRA, ROOT, evaluate_main, of_type

WORKFLOW = ROOT / ".github" / "workflows" / "deploy.yml"


def load_yaml(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path
    return doc


def test_azure_yaml_maps_the_app_and_the_event_grid_hook() -> None:
    doc = load_yaml(ROOT / "azure.yaml")
    assert doc["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    ((name, svc),) = doc["services"].items()
    assert svc["host"] == "function" and svc["language"] == "python"
    assert (ROOT / svc["project"] / "function_app.py").is_file()
    # azd finds the app by the azd-service-name tag: it must be the service's name.
    (site,) = of_type(evaluate_main("default"), "Microsoft.Web/sites")
    assert site.props["tags"]["azd-service-name"] == name
    hook = doc["hooks"]["postdeploy"]["posix"]
    script = ROOT / hook["run"]
    assert script.is_file() and os.access(script, os.X_OK)
    assert hook["continueOnError"] is False
    windows = doc["hooks"]["postdeploy"]["windows"]
    assert (ROOT / windows["run"]).is_file() and windows["continueOnError"] is False


def test_azure_yaml_parameters_come_from_azd_environment() -> None:
    text = (INFRA / "main.parameters.json").read_text()
    for var in ("AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_PRINCIPAL_ID"):
        assert "${" + var in text


def _steps(job: dict[str, Any]) -> list[str]:
    return [(s.get("run") or "") + " " + (s.get("uses") or "") for s in job["steps"]]


def test_workflow_phases_in_order() -> None:
    doc = load_yaml(WORKFLOW)
    jobs = doc["jobs"]
    order = []
    # Walk the jobs in dependency order and collect their commands.
    done: set[str] = set()
    while len(done) < len(jobs):
        ready = [n for n, j in jobs.items() if n not in done and set(j.get("needs", [])) <= done]
        assert ready, "cycle in job needs"
        for n in sorted(ready):
            order.extend(_steps(jobs[n]))
            done.add(n)
    text = "\n".join(order)
    assert "scripts/test.sh" in text  # the test job runs beside the Bicep job; both gate what-if
    assert set(jobs["what-if"]["needs"]) == {"test", "bicep"}
    phases = [
        r"az bicep build --file",
        r"az bicep build-params --file infra/main\.bicepparam",
        r"az bicep lint --file",
        r"az deployment sub what-if",
        r"az deployment sub create",
        r"az keyvault secret set",
        r"Azure/functions-action@v1",
        r"infra/hooks/postdeploy\.sh",
        r"/api/health",
    ]
    positions = []
    for p in phases:
        m = re.search(p, text)
        assert m, f"workflow lacks {p}"
        positions.append(m.start())
    assert positions == sorted(positions), "phases out of order"


def test_workflow_uses_oidc_and_pinned_actions() -> None:
    doc = load_yaml(WORKFLOW)
    assert doc["permissions"]["id-token"] == "write"
    text = WORKFLOW.read_text()
    assert "creds:" not in text and "client-secret" not in text, (
        "Azure login must be OIDC, not a stored secret"
    )
    for uses in re.findall(r"uses:\s*(\S+)", text):
        assert re.search(r"@v\d+$", uses), f"{uses} is not pinned to a major version"
    # The F&O secret is read only by the Key Vault step, and only from a file there.
    assert text.count("secrets.FNO_CLIENT_SECRET") == 1
    assert '--value "$FNO_CLIENT_SECRET"' not in text


def test_workflow_provides_what_the_bicepparam_reads() -> None:
    doc = load_yaml(WORKFLOW)
    env = doc["jobs"]["deploy"]["env"]
    text = (INFRA / "main.bicepparam").read_text()
    read = set(re.findall(r"readEnvironmentVariable\('([A-Z_]+)'\)", text))  # no default: must be provided
    assert read, "expected required environment variables in main.bicepparam"
    assert read <= set(env)
    _, values = read_bicepparam(INFRA / "main.bicepparam", {k: "x" for k in env})
    assert values["fnoBaseUrl"] == "x"


def test_workflow_builds_every_template() -> None:
    text = WORKFLOW.read_text()
    assert "find infra -name '*.bicep'" in text
    assert (INFRA / "bicepconfig.json").is_file()


def test_deploy_guide_covers_every_parameter_and_the_fno_side() -> None:
    guide = (ROOT / "docs" / "DEPLOY.md").read_text()
    main = evaluate_main("default")
    undocumented = [p for p in main.params if f"`{p}`" not in guide]
    assert not undocumented, f"docs/DEPLOY.md does not describe: {undocumented}"
    for must in (
        "System administration > Setup > Microsoft Entra applications",
        "/namespaces/AXSF",
        "AD FS",
        "activity id",
        "azd up",
        "az deployment sub create",
        "Rotate the client secret",
        "Federated credential",
    ):
        assert must in guide, must
