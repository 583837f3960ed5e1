"""Phase 2: the blob-created subscription on the inbound container, deployed after the code."""

from __future__ import annotations

import re

from tests.infra.bicep import Template, Unknown
from tests.infra.conftest import INFRA, app_settings, evaluate_main, of_type


def eventgrid(**overrides: object) -> Template:
    main = evaluate_main("default")
    params = {
        "functionAppName": "func-abc",
        "storageAccountName": "stabc",
        "systemTopicName": "evgt-abc",
        "inboundContainer": main.outputs["INBOUND_CONTAINER"],
        "deadLetterContainer": main.outputs["DEAD_LETTER_CONTAINER"],
        **overrides,
    }
    return Template(INFRA / "eventgrid.bicep", params)


def subscription(tpl: Template) -> dict:
    (sub,) = [r for r in tpl.resources if r.type == "Microsoft.EventGrid/systemTopics/eventSubscriptions"]
    assert sub.parent is None and sub.props["parent"].type == "Microsoft.EventGrid/systemTopics"
    return sub.props["properties"]


def test_subscription_targets_the_blob_trigger_webhook() -> None:
    p = subscription(eventgrid())
    dest = p["destination"]
    assert dest["endpointType"] == "WebHook"
    url = dest["properties"]["endpointUrl"]
    assert isinstance(url, Unknown) and url.secret, "the URL carries the blobs_extension key"
    assert re.fullmatch(
        r"https://x\.azurewebsites\.net/runtime/webhooks/blobs\?functionName=Host\.Functions\.on_inbound_blob&code=[^&]+",
        url.sample,
    ), url.sample
    assert "systemKeys.blobs_extension" in url.expr


def test_filter_is_blob_created_in_the_inbound_container() -> None:
    p = subscription(eventgrid())
    inbound = app_settings(evaluate_main("default"))["INBOUND_CONTAINER"]
    assert p["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    # The trailing slash keeps "inbound-old" and the like out.
    assert p["filter"]["subjectBeginsWith"] == f"/blobServices/default/containers/{inbound}/"


def test_retry_policy_and_dead_lettering_with_identity() -> None:
    p = subscription(eventgrid())
    assert 1 <= p["retryPolicy"]["maxDeliveryAttempts"] <= 30
    assert 1 <= p["retryPolicy"]["eventTimeToLiveInMinutes"] <= 1440
    assert "deadLetterDestination" not in p, "dead-lettering must use the topic identity (no shared keys)"
    dl = p["deadLetterWithResourceIdentity"]
    assert dl["identity"]["type"] == "SystemAssigned"
    dest = dl["deadLetterDestination"]
    assert dest["endpointType"] == "StorageBlob"
    main = evaluate_main("default")
    assert dest["properties"]["blobContainerName"] == main.outputs["DEAD_LETTER_CONTAINER"]
    # The topic that owns that identity is deployed in phase 1, with its role on that container (rbac tests).
    (topic,) = of_type(main, "Microsoft.EventGrid/systemTopics")
    assert topic.props["identity"]["type"] == "SystemAssigned"
    assert topic.props["properties"]["topicType"] == "Microsoft.Storage.StorageAccounts"


def test_no_output_exposes_the_key() -> None:
    tpl = eventgrid()
    for name, value in tpl.outputs.items():
        assert not (isinstance(value, Unknown) and value.secret), name


def test_hook_passes_only_known_parameters_and_main_outputs() -> None:
    """infra/hooks/postdeploy.sh wires main.bicep's outputs into eventgrid.bicep's parameters."""
    script = (INFRA / "hooks" / "postdeploy.sh").read_text()
    passed = set(re.findall(r"(\w+)=\"\$", script.split("--parameters", 1)[1]))
    tpl = eventgrid()
    assert passed <= set(tpl.params)
    required = {n for n, p in tpl.params.items() if p.default is None}
    assert required <= passed
    env_used = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", script))
    outputs = set(evaluate_main("default").outputs)
    assert env_used <= outputs, f"the hook reads variables main.bicep does not output: {env_used - outputs}"
    assert "blobs_extension != null" in script, "the hook must not fetch the key itself"


def test_windows_hook_matches_the_posix_one() -> None:
    sh = (INFRA / "hooks" / "postdeploy.sh").read_text()
    ps = (INFRA / "hooks" / "postdeploy.ps1").read_text()
    params = lambda text: set(re.findall(r"(\w+)=\"\$", text.split("--parameters", 1)[1]))  # noqa: E731
    assert params(sh) == params(ps) and params(sh)
    assert "blobs_extension != null" in ps
    outputs = set(evaluate_main("default").outputs)
    assert set(re.findall(r"\$env:([A-Z][A-Z0-9_]+)", ps)) <= outputs
