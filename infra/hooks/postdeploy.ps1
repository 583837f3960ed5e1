# Phase 2 (azd postdeploy on Windows, or by hand after a code deployment): the Event Grid subscription for inbound
# blobs. Same steps as postdeploy.sh; reads the outputs of infra/main.bicep from the environment.
$ErrorActionPreference = 'Stop'

foreach ($name in 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME', 'AZURE_STORAGE_ACCOUNT_NAME', 'EVENT_GRID_SYSTEM_TOPIC_NAME') {
    if (-not [Environment]::GetEnvironmentVariable($name)) { throw "$name is not set (azd or the workflow sets it from the main.bicep outputs)" }
}
$inbound = if ($env:INBOUND_CONTAINER) { $env:INBOUND_CONTAINER } else { 'inbound' }
$deadLetter = if ($env:DEAD_LETTER_CONTAINER) { $env:DEAD_LETTER_CONTAINER } else { 'eventgrid-deadletter' }

# Ask only whether the blobs_extension key exists, so the key itself never reaches this shell or its logs.
$tries = 0
while ((az functionapp keys list -g $env:AZURE_RESOURCE_GROUP -n $env:AZURE_FUNCTION_APP_NAME --query 'systemKeys.blobs_extension != null' -o tsv 2>$null) -ne 'true') {
    $tries++
    if ($tries -gt 30) { throw 'No blobs_extension key after 5 minutes: is on_inbound_blob deployed and the app running?' }
    Start-Sleep -Seconds 10
}

az deployment group create `
    --resource-group $env:AZURE_RESOURCE_GROUP `
    --name "eventgrid-$(Get-Date -Format yyyyMMddHHmmss)" `
    --template-file (Join-Path $PSScriptRoot '..' 'eventgrid.bicep') `
    --parameters functionAppName="$env:AZURE_FUNCTION_APP_NAME" `
        storageAccountName="$env:AZURE_STORAGE_ACCOUNT_NAME" `
        systemTopicName="$env:EVENT_GRID_SYSTEM_TOPIC_NAME" `
        inboundContainer="$inbound" `
        deadLetterContainer="$deadLetter" `
    --output none
if ($LASTEXITCODE -ne 0) { throw 'Event Grid deployment failed' }
Write-Host "Event Grid subscription for container '$inbound' deployed."
