"""The test-side Bicep reader evaluates what it claims to, and refuses what it does not understand."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.bicep import BicepError, ResourceRef, Template, Unknown


def tpl(source: str, **params: object) -> Template:
    return Template(Path("/nonexistent/inline.bicep"), params, source=source)


def test_literals_params_vars_and_interpolation() -> None:
    t = tpl(
        "param env string\nparam n int = 3\nvar name = 'app-${env}-${n}'\nvar flag = !empty(env) && n > 2\n"
        "var esc = 'it\\'s'\n",
        env="prod",
    )
    assert t.var("name") == "app-prod-3"
    assert t.var("flag") is True
    assert t.var("esc") == "it's"


def test_ternary_union_items_loops() -> None:
    t = tpl(
        "param on bool = false\nvar a = { X: 'x', Y: 'y' }\nvar b = on ? { Z: 'z' } : {}\n"
        "var merged = union(a, b)\nvar names = [for (kv, i) in items(merged): '${kv.key}${i}']\n"
    )
    assert t.var("merged") == {"X": "x", "Y": "y"}
    assert t.var("names") == ["X0", "Y1"]
    assert tpl("param on bool = true\nvar b = on ? 1 : 2\n").var("b") == 1


def test_deployment_time_values_stay_unknown_and_taint_secrets() -> None:
    t = tpl(
        "resource s 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {\n  name: 'st'\n}\n"
        "var ep = s.properties.primaryEndpoints.blob\nvar key = listKeys(s.id, '2023-05-01').keys[0].value\n"
        "var url = 'https://h/?code=${key}'\nvar id = s.id\nvar ref = s\n"
    )
    assert isinstance(t.var("ep"), Unknown) and t.var("ep").sample == "https://x.blob.core.windows.net/"
    assert t.var("url").secret and t.var("key").secret
    assert not t.var("ep").secret
    assert t.var("id").expr == "resourceId(Microsoft.Storage/storageAccounts, st)"
    assert isinstance(t.var("ref"), ResourceRef) and t.var("ref").type == "Microsoft.Storage/storageAccounts"


def test_nested_and_looped_resources_get_full_types_and_names() -> None:
    t = tpl(
        "param names array = ['a', 'b']\n"
        "resource s 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'st'\n"
        "  resource bs 'blobServices' = {\n    name: 'default'\n"
        "    resource c 'containers' = [for n in names: {\n      name: n\n    }]\n  }\n}\n"
    )
    got = {(r.type, r.name) for r in t.resources}
    assert ("Microsoft.Storage/storageAccounts/blobServices/containers", "st/default/b") in got
    assert len(t.resources) == 4


def test_conditions_are_evaluated() -> None:
    t = tpl(
        "param on bool = false\nresource r 'Microsoft.Web/sites@2024-04-01' = if (on) {\n  name: 'x'\n}\n"
    )
    assert [r.deployed for r in t.resources] == [False]


def test_unknown_syntax_and_symbols_are_refused() -> None:
    with pytest.raises(BicepError, match="syntax"):
        tpl("var v = {\n")
    with pytest.raises(BicepError, match="unknown symbol"):
        tpl("var v = nothere\n").var("v")
    with pytest.raises(BicepError, match="unsupported function"):
        tpl("var v = dateTimeAdd('2020-01-01', 'P1D')\n").var("v")
    with pytest.raises(BicepError, match="no such parameters"):
        tpl("param a string = ''\n", b="x")
