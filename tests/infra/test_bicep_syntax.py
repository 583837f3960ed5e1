"""Every template parses, with two independent parsers, and the parameter files fit main.bicep.

Real compilation (`az bicep build` / `az bicep lint`) runs in the users' workflow; here no Bicep compiler can be
installed, so tree-sitter-bicep and pycep-parser act as the syntax gate. Each has gaps the other does not, and
a construct both accept is far more likely to be valid Bicep than one either accepts alone.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest
from pycep import BicepParser

from tests.infra.bicep import Template, bicepparam_as_bicep, read_bicepparam, syntax_errors
from tests.infra.conftest import INFRA

BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

BROKEN_SNIPPETS = {
    "unclosed object": "resource s 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'x'\n",
    "missing value": "param p string\nvar v = \n",
    "unbalanced interpolation": "var v = 'https://${name.blob.core.windows.net'\n",
    "stray token": "var v = {\n  a: 'b' 'c'\n}\n",
}


@cache
def _pycep() -> BicepParser:
    return BicepParser()


def pycep_errors(text: str) -> str | None:
    try:
        _pycep().parse(text=text)
    except Exception as exc:  # lark raises several unrelated exception types
        return f"{type(exc).__name__}: {exc}"
    return None


def test_templates_exist() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert {
        "main.bicep",
        "eventgrid.bicep",
        "app/function.bicep",
        "app/storage.bicep",
        "app/rbac.bicep",
    } <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses(path: Path) -> None:
    text = path.read_text()
    assert syntax_errors(text) == [], "tree-sitter-bicep found syntax errors"
    assert pycep_errors(text) is None


@pytest.mark.parametrize("snippet", BROKEN_SNIPPETS.values(), ids=BROKEN_SNIPPETS.keys())
def test_broken_bicep_is_rejected(snippet: str) -> None:
    """The gate itself works: a syntax error fails at least one parser (and here, the one that can)."""
    ts, pc = syntax_errors(snippet), pycep_errors(snippet)
    assert ts or pc, "neither parser noticed the syntax error"


def test_broken_snippets_fail_tree_sitter_individually() -> None:
    # The gate relies mostly on tree-sitter (pycep's grammar is looser about some tokens): prove it alone.
    for name, snippet in BROKEN_SNIPPETS.items():
        assert syntax_errors(snippet), name


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_module_references_resolve(path: Path) -> None:
    text = path.read_text()
    for ref in re.findall(r"^module\s+\w+\s+'([^']+)'", text, re.M):
        assert (path.parent / ref).is_file(), f"{path.name} uses missing module {ref}"
    for ref in re.findall(r"loadJsonContent\('([^']+)'\)", text):
        json.loads((path.parent / ref).read_text())
    for ref in re.findall(r"loadTextContent\('([^']+)'\)", text):
        assert (path.parent / ref).is_file(), f"{path.name} loads missing file {ref}"


def test_bicepparam_parses_and_fits_main() -> None:
    path = INFRA / "main.bicepparam"
    as_bicep = bicepparam_as_bicep(path.read_text())
    assert syntax_errors(as_bicep) == []
    assert pycep_errors(as_bicep) is None
    using, values = read_bicepparam(path, {"FNO_BASE_URL": "https://x.example", "FNO_CLIENT_ID": "c"})
    main = Template(
        INFRA / using, {"environmentName": "e", "location": "l", "fnoBaseUrl": "u", "fnoClientId": "c"}
    )
    assert set(values) <= set(main.params), "the .bicepparam sets parameters main.bicep does not declare"
    required = {n for n, p in main.params.items() if p.default is None}
    assert required <= set(values), (
        f"main.bicep parameters without defaults missing: {required - set(values)}"
    )
    # The values it produces are ones main.bicep accepts.
    Template(INFRA / using, values).modules  # noqa: B018 - evaluation is the assertion


def test_azd_parameters_fit_main() -> None:
    doc = json.loads((INFRA / "main.parameters.json").read_text())
    main = Template(
        INFRA / "main.bicep", {"environmentName": "e", "location": "l", "fnoBaseUrl": "u", "fnoClientId": "c"}
    )
    given = set(doc["parameters"])
    assert given <= set(main.params)
    required = {n for n, p in main.params.items() if p.default is None}
    assert required <= given
    # azd substitutes ${VAR} from its environment: values are references or plain literals, never secrets.
    for name, entry in doc["parameters"].items():
        assert set(entry) == {"value"}, name
        assert re.fullmatch(r"\$\{[A-Z_]+(=[\w.-]*)?\}|[\w.-]*", str(entry["value"])), name


def test_no_secure_parameter_in_parameter_files() -> None:
    main = Template(
        INFRA / "main.bicep", {"environmentName": "e", "location": "l", "fnoBaseUrl": "u", "fnoClientId": "c"}
    )
    secure = {n for n, p in main.params.items() if p.secure}
    assert secure == {"fnoClientSecret"}
    azd = set(json.loads((INFRA / "main.parameters.json").read_text())["parameters"])
    _, pipeline = read_bicepparam(INFRA / "main.bicepparam")
    assert not secure & azd
    assert not secure & set(pipeline)
    # ...and a secure parameter never has a non-empty default.
    for name in secure:
        assert main.param(name) == "", name


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_conservative_syntax(path: Path) -> None:
    """No multi-line function calls or ternaries: older Bicep CLIs on users' agents reject them."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("//")[0].rstrip()
        assert not code.endswith("("), f"{path.name}:{n}: multi-line function call"
        assert not re.match(r"\s*[?:]\s", code), f"{path.name}:{n}: multi-line ternary"


BUILTIN_FUNCTIONS = {
    "subscription", "resourceGroup", "tenant", "managementGroup", "deployment", "deployer", "environment",
    "reference", "resourceId", "string", "int", "bool", "json", "union", "concat", "items", "guid", "format",
}  # fmt: skip


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_no_symbol_shadows_a_builtin_function(path: Path) -> None:
    symbols = re.findall(r"^(?:param|var|resource|module|output)\s+(\w+)", path.read_text(), re.M)
    assert not set(symbols) & BUILTIN_FUNCTIONS
