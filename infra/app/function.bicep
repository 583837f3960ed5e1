// Flex Consumption plan and the Python Functions app, running as the user-assigned identity everywhere.
param name string
param planName string
param location string
param tags object = {}
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerName string
param appInsightsConnectionString string
param workspaceId string
param pythonVersion string = '3.11'
param instanceMemoryMB int = 2048
param maximumInstanceCount int = 100
@description('Subnet for VNet integration (delegated to Microsoft.App/environments); empty for none.')
param subnetId string = ''
@description('The app\'s own settings (storage connection, containers, schedules, F&O environment).')
param appSettings object

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  // Accepted checkov findings (reasons kept next to the resource; tests/infra/test_checkov.py fails on any other):
  //checkov:skip=CKV_AZURE_225:Not zone redundant: zone support on Flex Consumption is region-dependent, and the storage account all work lives in is LRS (CKV_AZURE_206 in storage.bicep); zone resilience is one decision for both.
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

// Host-level settings: the Functions host and Durable read AzureWebJobsStorage__*; telemetry goes with a token.
var hostSettings = {
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // With host.json "telemetryMode": "OpenTelemetry": the Python worker configures the Azure Monitor exporter
  // (Entra ID token from the authentication string above) and attaches the host's trace context to each
  // invocation; the host stops relaying the worker's logs, so nothing is sent twice (docs/DEPLOY.md, Telemetry).
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
  // glibc reads this when the worker process starts. Its default (8 heaps per core) lets a threaded worker keep
  // memory it freed in one heap per thread: in the soak, 2 heaps held the same work in 6 MiB of free heap, not
  // 59 MiB (bench/RELIABILITY.md, Soak).
  MALLOC_ARENA_MAX: '2'
}

var azdTags = {
  'azd-service-name': 'app'
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd finds the app to deploy to by this tag (service "app" in azure.yaml).
  tags: union(tags, azdTags)
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    // Accepted checkov findings, each next to what it is about (tests/infra/test_checkov.py fails on any other).
    //checkov:skip=CKV_AZURE_222:Public endpoint needed: Event Grid delivers blob-created events to the blobs_extension webhook and operators call /api over it. Every HTTP function is FUNCTION-level (keys), HTTPS only, TLS 1.2.
    //checkov:skip=CKV_AZURE_17:Event Grid webhook delivery presents no client certificate, so requiring one would stop the inbound trigger; callers authenticate with function or system keys.
    httpsOnly: true
    // Key Vault references resolve with the user-assigned identity, not a (non-existent) system identity.
    keyVaultReferenceIdentity: identityId
    virtualNetworkSubnetId: empty(subnetId) ? null : subnetId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      //checkov:skip=CKV_AZURE_78:FTP is off through the ftp basicPublishingCredentialsPolicies child below (allow false); the siteConfig.ftpsState checkov looks for is rejected on Flex Consumption sites (ARM error 51021).
      //checkov:skip=CKV_AZURE_213:No health check path: the only health route, GET /api/health (triggers/admin_http.py), is FUNCTION-level and platform probes carry no key, so every probe would get 401 and mark instances unhealthy.
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      //checkov:skip=CKV_AZURE_212:siteConfig.numberOfWorkers does not apply to Flex Consumption, which scales out per trigger up to maximumInstanceCount; Durable state is in storage, so a lost instance loses no work.
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: union(hostSettings, appSettings)
  }

  // Publishing with user names and passwords is off: deployments authenticate with Entra ID.
  resource ftpCredentials 'basicPublishingCredentialsPolicies' = {
    name: 'ftp'
    properties: {
      allow: false
    }
  }

  resource scmCredentials 'basicPublishingCredentialsPolicies' = {
    name: 'scm'
    properties: {
      allow: false
    }
  }
}

resource appDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: app
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output id string = app.id
output name string = app.name
output defaultHostName string = app.properties.defaultHostName
