#!/bin/sh
# Phase 2 (azd postdeploy, or by hand after a code deployment): the Event Grid subscription for inbound blobs.
# Reads the outputs of infra/main.bicep from the environment (azd exports them; the CI workflow does too).
set -eu

: "${AZURE_RESOURCE_GROUP:?set by azd or the workflow from the main.bicep outputs}"
: "${AZURE_FUNCTION_APP_NAME:?}" "${AZURE_STORAGE_ACCOUNT_NAME:?}" "${EVENT_GRID_SYSTEM_TOPIC_NAME:?}"
INBOUND_CONTAINER="${INBOUND_CONTAINER:-inbound}"
DEAD_LETTER_CONTAINER="${DEAD_LETTER_CONTAINER:-eventgrid-deadletter}"
here=$(dirname "$0")

# The host creates the blobs_extension key once it has indexed the Event Grid blob trigger; ask only whether it
# exists, so the key itself never reaches this shell or its logs.
tries=0
until [ "$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
  --query 'systemKeys.blobs_extension != null' -o tsv 2>/dev/null || true)" = "true" ]; do
  tries=$((tries + 1))
  if [ "$tries" -gt 30 ]; then
    echo "No blobs_extension key after 5 minutes: is on_inbound_blob deployed and the app running?" >&2
    exit 1
  fi
  sleep 10
done

az deployment group create \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --name "eventgrid-$(date +%Y%m%d%H%M%S)" \
  --template-file "$here/../eventgrid.bicep" \
  --parameters functionAppName="$AZURE_FUNCTION_APP_NAME" \
    storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
    systemTopicName="$EVENT_GRID_SYSTEM_TOPIC_NAME" \
    inboundContainer="$INBOUND_CONTAINER" \
    deadLetterContainer="$DEAD_LETTER_CONTAINER" \
  --output none
echo "Event Grid subscription for container '$INBOUND_CONTAINER' deployed."
