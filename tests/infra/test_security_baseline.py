"""The security baseline of issue 7, read from the evaluated templates in every variant (VNet, auth modes...)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infra.bicep import ResourceRef, Template, Unknown, syntax_errors
from tests.infra.conftest import INFRA, app_settings, deployed_resources, evaluate_main, of_type

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Broad built-in roles that least privilege rules out.
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
USER_ACCESS_ADMIN = "18d7d88d-d35e-4fb5-a5c3-7773c4a72b9d"
STORAGE_ACCOUNT_CONTRIBUTOR = "17d1049b-9a84-46fb-8f53-869881c3d3ab"


def test_storage_is_hardened(main_variant: Template) -> None:
    (storage,) = of_type(main_variant, "Microsoft.Storage/storageAccounts")
    p = storage.props["properties"]
    assert p["allowSharedKeyAccess"] is False
    assert p["allowBlobPublicAccess"] is False
    assert p["minimumTlsVersion"] == "TLS1_2"
    assert p["supportsHttpsTrafficOnly"] is True
    assert p["defaultToOAuthAuthentication"] is True
    assert p["allowCrossTenantReplication"] is False
    for container in of_type(main_variant, "Microsoft.Storage/storageAccounts/blobServices/containers"):
        assert container.props["properties"]["publicAccess"] == "None", container.name


def test_function_app_is_https_only_with_user_assigned_identity(main_variant: Template) -> None:
    (site,) = of_type(main_variant, "Microsoft.Web/sites")
    (identity,) = of_type(main_variant, "Microsoft.ManagedIdentity/userAssignedIdentities")
    p = site.props["properties"]
    assert p["httpsOnly"] is True
    assert p["siteConfig"]["minTlsVersion"] == "1.2"
    assert site.props["identity"]["type"] == "UserAssigned"
    identity_id = f"resourceId({identity.type}, {identity.name})"
    assert list(site.props["identity"]["userAssignedIdentities"]) == [
        f"/resourceId/{identity.type}/{identity.name}"
    ]
    assert p["keyVaultReferenceIdentity"].expr == identity_id
    deployment = p["functionAppConfig"]["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["authentication"]["type"] == "UserAssignedIdentity"
    assert deployment["authentication"]["userAssignedIdentityResourceId"].expr == identity_id
    assert p["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.11"}
    # Basic (user name/password) publishing is off for both FTP and SCM.
    policies = of_type(main_variant, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {r.props["name"]: r.props["properties"]["allow"] for r in policies} == {"ftp": False, "scm": False}


def test_flex_consumption_plan_and_sizing_parameters() -> None:
    main = Template(
        INFRA / "main.bicep",
        {**evaluate_main("default")._given, "instanceMemoryMB": 4096, "maximumInstanceCount": 250},
    )
    (plan,) = of_type(main, "Microsoft.Web/serverfarms")
    assert plan.props["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert plan.props["properties"]["reserved"] is True
    (site,) = of_type(main, "Microsoft.Web/sites")
    assert site.props["kind"] == "functionapp,linux"
    scale = site.props["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale == {"instanceMemoryMB": 4096, "maximumInstanceCount": 250}


def test_every_storage_connection_uses_the_managed_identity(main_variant: Template) -> None:
    settings = app_settings(main_variant)
    (identity,) = of_type(main_variant, "Microsoft.ManagedIdentity/userAssignedIdentities")
    prefixes = {k.split("__")[0] for k in settings if "__" in k}
    assert prefixes == {"AzureWebJobsStorage", "DATA_STORAGE"}
    for prefix in prefixes:
        assert settings[f"{prefix}__credential"] == "managedidentity", prefix
        assert settings[f"{prefix}__clientId"].expr == "identity.properties.clientId", prefix
        for service in ("blob", "queue", "table"):
            uri = settings[f"{prefix}__{service}ServiceUri"]
            assert uri.expr == f"storage.properties.primaryEndpoints.{service}", (prefix, service)
    assert identity.props["name"]  # the identity the clientId above comes from is deployed
    # No connection string or key in any form.
    assert "AzureWebJobsStorage" not in settings and "DATA_STORAGE" not in settings
    for name, value in settings.items():
        text = value.expr if isinstance(value, Unknown) else str(value)
        assert not re.search(r"AccountKey=|SharedAccessSignature=|sig=|DefaultEndpointsProtocol", text), name


def test_application_insights_accepts_entra_tokens_only(main_variant: Template) -> None:
    (ai,) = of_type(main_variant, "Microsoft.Insights/components")
    assert ai.props["properties"]["DisableLocalAuth"] is True
    assert ai.props["properties"]["WorkspaceResourceId"].expr.startswith(
        "resourceId(Microsoft.OperationalInsights/workspaces"
    )
    (ws,) = of_type(main_variant, "Microsoft.OperationalInsights/workspaces")
    assert ws.props["properties"]["features"]["disableLocalAuth"] is True
    auth = app_settings(main_variant)["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert auth.expr == "ClientId=identity.properties.clientId;Authorization=AAD"


def test_key_vault_rbac_purge_protection_and_reference(main_variant: Template) -> None:
    (vault,) = of_type(main_variant, "Microsoft.KeyVault/vaults")
    p = vault.props["properties"]
    assert p["enableRbacAuthorization"] is True
    assert p["enablePurgeProtection"] is True
    assert "accessPolicies" not in p
    settings = app_settings(main_variant)
    mode = settings["FNO_MAIN_AUTH_MODE"]
    if mode == "client_secret":
        ref = settings["FNO_MAIN_CLIENT_SECRET"]
        assert re.fullmatch(
            r"@Microsoft\.KeyVault\(SecretUri=https://x\.vault\.azure\.net/secrets/[\w-]+\)", ref.sample
        )
        assert ref.expr.startswith("@Microsoft.KeyVault(SecretUri=vault.properties.vaultUri")
    else:
        assert "FNO_MAIN_CLIENT_SECRET" not in settings, "no secret is wired for secret-less auth modes"


def _role_assignments(main: Template) -> list[tuple[Any, str, Any]]:
    out = []
    for r in of_type(main, "Microsoft.Authorization/roleAssignments"):
        role = GUID.findall(str(r.props["properties"]["roleDefinitionId"]))
        assert len(role) == 1, r.symbol
        out.append((r.props.get("scope"), role[0], r))
    return out


def test_role_assignments_are_scoped_to_resources(main_variant: Template) -> None:
    assignments = _role_assignments(main_variant)
    assert assignments
    for scope, role, r in assignments:
        # A resource reference, never the subscription or the resource group (a missing scope means the group).
        assert isinstance(scope, ResourceRef), f"{r.symbol} is not scoped to a resource"
        assert scope.type not in ("Microsoft.Resources/resourceGroups",), r.symbol
        assert role not in (OWNER, CONTRIBUTOR, USER_ACCESS_ADMIN, STORAGE_ACCOUNT_CONTRIBUTOR), r.symbol
        assert r.props["name"].expr.startswith("guid("), "deterministic names keep redeployments idempotent"


def test_least_privilege_set_for_the_app_identity() -> None:
    main = evaluate_main("default")
    rbac = main.modules["rbac"].template
    roles = rbac.var("roles")
    got = {
        (scope.type, role, r.props["properties"]["principalType"])
        for scope, role, r in _role_assignments(main)
    }
    assert got == {
        ("Microsoft.Storage/storageAccounts", roles["storageBlobDataOwner"], "ServicePrincipal"),
        ("Microsoft.Storage/storageAccounts", roles["storageQueueDataContributor"], "ServicePrincipal"),
        ("Microsoft.Storage/storageAccounts", roles["storageTableDataContributor"], "ServicePrincipal"),
        ("Microsoft.KeyVault/vaults", roles["keyVaultSecretsUser"], "ServicePrincipal"),
        ("Microsoft.Insights/components", roles["monitoringMetricsPublisher"], "ServicePrincipal"),
        # Event Grid's own identity, on the dead-letter container only.
        (
            "Microsoft.Storage/storageAccounts/blobServices/containers",
            roles["storageBlobDataContributor"],
            "ServicePrincipal",
        ),
    }
    (dead_letter,) = [s for s, _, _ in _role_assignments(main) if s.type.endswith("/containers")]
    assert str(dead_letter.resource.name).endswith("/" + main.outputs["DEAD_LETTER_CONTAINER"])


def test_operator_access_is_optional() -> None:
    assert (
        len(_role_assignments(evaluate_main("operator")))
        == len(_role_assignments(evaluate_main("default"))) + 3
    )


def test_role_ids_are_kept_in_one_object() -> None:
    for path in INFRA.rglob("*.bicep"):
        text = path.read_text()
        guids = GUID.findall(text)
        if path.name != "rbac.bicep":
            assert not guids, f"{path.name} has GUID literals; role ids belong in rbac.bicep's roles object"
    rbac = evaluate_main("default").modules["rbac"].template
    in_object = set(rbac.var("roles").values())
    assert set(GUID.findall((INFRA / "app" / "rbac.bicep").read_text())) == in_object
    assert all(GUID.fullmatch(g) for g in in_object)


def test_no_secret_literals_and_no_secret_outputs() -> None:
    """No key, SAS or password literal in any template; the canary secret goes to Key Vault and nowhere else."""
    for path in INFRA.rglob("*.bicep*"):
        text = path.read_text()
        assert not re.search(r"AccountKey=|SharedAccessSignature|[?&]sig=|BEGIN (RSA )?PRIVATE KEY", text), (
            path
        )
        assert not re.search(r"(?i)(password|secret)\s*[:=]\s*'[^'$]+'", text), path
    for path in INFRA.rglob("*.json"):
        # (parameter values are also checked to be ${VAR} references in test_bicep_syntax)
        assert not re.search(r"(?i)password|AccountKey|[?&]sig=|ClientSecret\"", path.read_text()), path
    main = evaluate_main("operator")
    canary = "CANARY-secret-Value"
    holders = []
    for r in deployed_resources(main):
        if canary in repr(r.props):
            holders.append(r.type)
    assert holders == ["Microsoft.KeyVault/vaults/secrets"]
    for tpl, _ in main.all_templates():
        for name, value in tpl.outputs.items():
            # The linter's outputs-should-not-contain-secrets (an error in infra/bicepconfig.json) also judges names.
            assert not re.search(r"(?i)password|secret", name), (tpl.path.name, name)
            assert canary not in repr(value), (tpl.path.name, name)
            assert not (isinstance(value, Unknown) and value.secret), (tpl.path.name, name)
    assert syntax_errors((INFRA / "eventgrid.bicep").read_text()) == []


def test_diagnostic_settings_send_to_the_workspace(main_variant: Template) -> None:
    diags = of_type(main_variant, "Microsoft.Insights/diagnosticSettings")
    scoped = {d.props["scope"].type for d in diags}
    assert {
        "Microsoft.Web/sites",
        "Microsoft.KeyVault/vaults",
        "Microsoft.Storage/storageAccounts/blobServices",
        "Microsoft.EventGrid/systemTopics",
    } <= scoped
    for d in diags:
        assert d.props["properties"]["workspaceId"].expr.startswith(
            "resourceId(Microsoft.OperationalInsights"
        )
        assert any(x["enabled"] for x in d.props["properties"].get("logs", []))


@pytest.mark.parametrize("vnet", [False, True])
def test_vnet_integration_and_private_endpoints_behind_one_parameter(vnet: bool) -> None:
    main = evaluate_main("vnet" if vnet else "default")
    (site,) = of_type(main, "Microsoft.Web/sites")
    (storage,) = of_type(main, "Microsoft.Storage/storageAccounts")
    (vault,) = of_type(main, "Microsoft.KeyVault/vaults")
    endpoints = of_type(main, "Microsoft.Network/privateEndpoints")
    subnet = site.props["properties"]["virtualNetworkSubnetId"]
    if vnet:
        assert isinstance(subnet, Unknown) and "subnets" in subnet.expr
        groups = {
            ep.props["properties"]["privateLinkServiceConnections"][0]["properties"]["groupIds"][0]
            for ep in endpoints
        }
        assert groups == {"blob", "queue", "table", "vault"}
        assert storage.props["properties"]["networkAcls"]["defaultAction"] == "Deny"
        assert vault.props["properties"]["networkAcls"]["defaultAction"] == "Deny"
        (vnet_res,) = of_type(main, "Microsoft.Network/virtualNetworks")
        delegations = [
            d["properties"]["serviceName"]
            for s in vnet_res.props["properties"]["subnets"]
            for d in s["properties"].get("delegations", [])
        ]
        assert delegations == ["Microsoft.App/environments"]
    else:
        assert subnet is None
        assert endpoints == []
        assert of_type(main, "Microsoft.Network/virtualNetworks") == []
    # Trusted Azure services (Event Grid dead-lettering) stay allowed either way.
    assert storage.props["properties"]["networkAcls"]["bypass"] == "AzureServices"
