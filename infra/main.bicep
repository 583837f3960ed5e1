// F&O DMF integration: everything the Functions app needs, in one resource group.
// Phase 1 of 2. Deploy this, then the code, then eventgrid.bicep (the webhook key exists only after the code).
// Usable by azd (azure.yaml + main.parameters.json) and by `az deployment sub create` (main.bicepparam).
targetScope = 'subscription'

metadata description = 'Flex Consumption Functions app integrating Dynamics 365 F&O through DMF'

// ---------------------------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the environment; seeds every resource name and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Primary location for all resources.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group name; empty means rg-<environmentName>.')
param resourceGroupName string = ''

@description('Optional overrides of generated resource names.')
param functionAppName string = ''
param storageAccountName string = ''
param keyVaultName string = ''

@description('Object id of a person or pipeline to grant data access for setup and troubleshooting; empty grants nothing.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Put the app in a virtual network and reach storage and Key Vault through private endpoints.')
param vnetEnabled bool = false

// ---------------------------------------------------------------------------------------------------------------
// Function app sizing
// ---------------------------------------------------------------------------------------------------------------

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance, in MB.')
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
@description('Upper bound on instances the app scales out to.')
param maximumInstanceCount int = 100

@allowed([
  '3.11'
])
param pythonVersion string = '3.11'

@description('Log Analytics retention in days.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

// ---------------------------------------------------------------------------------------------------------------
// Retention of the data containers (storage lifecycle management; docs/RUNBOOK.md, "Retention")
// ---------------------------------------------------------------------------------------------------------------

@minValue(0)
@description('Days after which packages in the staging container are deleted; 0 keeps them.')
param stagingRetentionDays int = 90

@minValue(0)
@description('Days after which drops in the processed container are deleted; 0 keeps them.')
param processedRetentionDays int = 90

@minValue(0)
@description('Days after which drops in the failed container (and their .reason.txt) are deleted; 0 keeps them.')
param failedRetentionDays int = 180

@minValue(0)
@description('Days after which drops in the rejected container (and their .reason.txt) are deleted; 0 keeps them.')
param rejectedRetentionDays int = 90

@minValue(0)
@description('Days after which error files copied from F&O (import-errors container) are deleted; 0 keeps them.')
param importErrorsRetentionDays int = 180

@minValue(0)
@description('Days after which outbound archives are deleted; 0 keeps them (they are the users\' record). Use this or the app\'s ARCHIVE_RETENTION_DAYS, not both.')
param archiveRetentionDays int = 0

// ---------------------------------------------------------------------------------------------------------------
// Operations: workbook and alerts (infra/app/operations.bicep; docs/RUNBOOK.md)
// ---------------------------------------------------------------------------------------------------------------

@description('Deploy the operations workbook: failures by data project and legal entity, import durations, gate wait, drain backlog.')
param opsWorkbookEnabled bool = true

@description('Deploy the log alert rules: failed or timed-out imports, poison blobs, gate held too long, drain backlog.')
param opsAlertsEnabled bool = true

@description('Resource id of an existing action group the alerts notify (email, Teams, ITSM); empty: alerts show in the portal only.')
param opsActionGroupId string = ''

@minValue(5)
@description('Alert when an import-gate permit is held longer than this many minutes.')
param opsGateHeldMinutes int = 120

@minValue(1)
@description('Alert when a recurring-export drain stops on its budget this many times within an hour.')
param opsDrainBacklogRuns int = 3

// ---------------------------------------------------------------------------------------------------------------
// App configuration (see docs/SETTINGS.md for each setting)
// ---------------------------------------------------------------------------------------------------------------

@description('Durable Functions task hub (letters and digits, 3-45 characters, starting with a letter).')
@minLength(3)
@maxLength(45)
param taskHubName string = 'fnodmf'

@description('NCRONTAB (6 fields) for draining recurring-integration exports.')
param drainSchedule string = '0 */5 * * * *'

@description('NCRONTAB (6 fields) for checking which scheduled export jobs are due.')
param exportSchedule string = '0 * * * * *'

@description('NCRONTAB (6 fields) for history and archive housekeeping.')
param housekeepingSchedule string = '0 30 2 * * *'

@description('NCRONTAB of the import-gate sweeper, which frees permits held by ended orchestrations.')
param gateSweepSchedule string = '0 * * * * *'

@description('Pushed completion: F&O posts its DMF import-status business event to /api/fno/events (an HTTPS endpoint whose URL, with a function key, F&O reads from Key Vault: docs/DEPLOY.md 2.5). Nothing else is deployed for it; polling stays as the fallback.')
param fnoEventsEnabled bool = false

@description('With fnoEventsEnabled: import status polls (the fallback) at least this many seconds apart.')
@minValue(1)
param fnoEventsFallbackPollSeconds int = 300
@description('NCRONTAB of the entity metadata refresh (pre-flight snapshots of each F&O environment).')
param metadataRefreshSchedule string = '0 15 3 * * *'

@description('Recurring-integration export activities to drain: [{ name, environment, activity_id }].')
param recurringExports array = []

@description('Scheduled ExportToPackage jobs: [{ name, environment, data_project, legal_entity?, schedule?, package_name? }].')
param exportJobs array = []

// ---------------------------------------------------------------------------------------------------------------
// The F&O environment (deployed as the single environment named "main")
// ---------------------------------------------------------------------------------------------------------------

@description('F&O base URL, for example https://contoso.operations.dynamics.com (on-premises: https://ax.contoso.com).')
param fnoBaseUrl string

@allowed([
  'cloud'
  'onprem'
])
param fnoDeployment string = 'cloud'

@allowed([
  'client_secret'
  'certificate'
  'federated'
])
@description('How the app gets F&O tokens: client secret (in Key Vault), certificate, or federated credential (no secret).')
param fnoAuthMode string = 'client_secret'

@description('Entra tenant of the F&O app registration (cloud only); empty means the deployment\'s tenant.')
param fnoTenantId string = ''

@description('AD FS authority URL, for example https://adfs.contoso.com/adfs (on-premises only).')
param fnoAuthority string = ''

@description('Application (client) id of the app registration added in F&O under Microsoft Entra applications.')
param fnoClientId string

@description('Default legal entity (company) for imports and exports.')
param fnoLegalEntity string = 'USMF'

@minValue(1)
@maxValue(32)
@description('How many DMF imports may run at once against this environment.')
param fnoImportPermits int = 1

@description('Path of the client certificate (PEM/PFX) in the deployed package, for auth mode certificate.')
param fnoCertificatePath string = ''

@secure()
@description('The F&O client secret. Leave empty and set it in Key Vault instead (docs/DEPLOY.md); never put it in a parameters file.')
param fnoClientSecret string = ''

// ---------------------------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var appName = !empty(functionAppName) ? functionAppName : '${abbrs.webSitesFunctions}${resourceToken}'
var stName = !empty(storageAccountName) ? storageAccountName : '${abbrs.storageStorageAccounts}${resourceToken}'
var kvName = !empty(keyVaultName) ? keyVaultName : '${abbrs.keyVaultVaults}${resourceToken}'
var deploymentContainerName = 'app-package-${take(appName, 32)}-${take(resourceToken, 7)}'
var deadLetterContainerName = 'eventgrid-deadletter'
var fnoClientSecretName = 'fno-main-client-secret'

// App setting name -> container/table name. The same objects name what the storage module creates and what the
// app is told, so the two cannot drift apart.
var dataContainers = {
  INBOUND_CONTAINER: 'inbound'
  STAGING_CONTAINER: 'staging'
  PROCESSED_CONTAINER: 'processed'
  FAILED_CONTAINER: 'failed'
  REJECTED_CONTAINER: 'rejected'
  ERRORS_CONTAINER: 'import-errors'
  ARCHIVE_CONTAINER: 'archive'
  METADATA_CONTAINER: 'metadata'
}
var dataTables = {
  OUTCOMES_TABLE: 'outcomes'
  GATES_TABLE: 'gates'
  LEDGER_TABLE: 'ledger'
}
var dataContainerNames = [for c in items(dataContainers): c.value]
var dataTableNames = [for t in items(dataTables): t.value]
var platformContainerNames = [
  deploymentContainerName
  deadLetterContainerName
]
// One lifecycle rule per data container with a retention; the inbound container has none (drops leave it).
var stagingRetention = stagingRetentionDays > 0 ? [ { container: dataContainers.STAGING_CONTAINER, days: stagingRetentionDays } ] : []
var processedRetention = processedRetentionDays > 0 ? [ { container: dataContainers.PROCESSED_CONTAINER, days: processedRetentionDays } ] : []
var failedRetention = failedRetentionDays > 0 ? [ { container: dataContainers.FAILED_CONTAINER, days: failedRetentionDays } ] : []
var rejectedRetention = rejectedRetentionDays > 0 ? [ { container: dataContainers.REJECTED_CONTAINER, days: rejectedRetentionDays } ] : []
var errorsRetention = importErrorsRetentionDays > 0 ? [ { container: dataContainers.ERRORS_CONTAINER, days: importErrorsRetentionDays } ] : []
var archiveRetention = archiveRetentionDays > 0 ? [ { container: dataContainers.ARCHIVE_CONTAINER, days: archiveRetentionDays } ] : []
var blobRetention = concat(stagingRetention, processedRetention, failedRetention, rejectedRetention, errorsRetention, archiveRetention)

// ---------------------------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    workspaceName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    appInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionDays
  }
}

module network 'app/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: stName
    location: location
    tags: tags
    containers: concat(dataContainerNames, platformContainerNames)
    tables: dataTableNames
    restrictNetwork: vnetEnabled
    workspaceId: monitoring.outputs.workspaceId
    retention: blobRetention
  }
}

module operations 'app/operations.bicep' = {
  name: 'operations'
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceId: monitoring.outputs.workspaceId
    nameSuffix: resourceToken
    workbookEnabled: opsWorkbookEnabled
    alertsEnabled: opsAlertsEnabled
    actionGroupId: opsActionGroupId
    gateHeldMinutes: opsGateHeldMinutes
    drainBacklogRuns: opsDrainBacklogRuns
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: kvName
    location: location
    tags: tags
    restrictNetwork: vnetEnabled
    workspaceId: monitoring.outputs.workspaceId
    secretName: fnoClientSecretName
    secretValue: fnoClientSecret
  }
}

module events 'app/events.bicep' = {
  name: 'events'
  scope: rg
  params: {
    name: '${abbrs.eventGridSystemTopics}${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    workspaceId: monitoring.outputs.workspaceId
  }
}

module privateEndpoints 'app/private-endpoints.bicep' = if (vnetEnabled) {
  name: 'private-endpoints'
  scope: rg
  params: {
    location: location
    tags: tags
    vnetName: network!.outputs.name
    subnetId: network!.outputs.privateEndpointSubnetId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    deadLetterContainerName: deadLetterContainerName
    appPrincipalId: identity.outputs.principalId
    eventGridPrincipalId: events.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

// The app's own settings; the function module adds the host's (AzureWebJobsStorage__*, Application Insights).
var storageSettings = {
  DATA_STORAGE__blobServiceUri: storage.outputs.blobEndpoint
  DATA_STORAGE__queueServiceUri: storage.outputs.queueEndpoint // the blob trigger keeps its poison queue here
  DATA_STORAGE__tableServiceUri: storage.outputs.tableEndpoint
  DATA_STORAGE__credential: 'managedidentity'
  DATA_STORAGE__clientId: identity.outputs.clientId
}
var runtimeSettings = {
  TASKHUB_NAME: taskHubName
  INBOUND_BLOB_SOURCE: 'EventGrid' // Flex Consumption supports only the Event Grid source for blob triggers
  DRAIN_SCHEDULE: drainSchedule
  EXPORT_SCHEDULE: exportSchedule
  HOUSEKEEPING_SCHEDULE: housekeepingSchedule
  GATE_SWEEP_SCHEDULE: gateSweepSchedule
  METADATA_REFRESH_SCHEDULE: metadataRefreshSchedule
  RECURRING_EXPORTS: string(recurringExports)
  EXPORT_JOBS: string(exportJobs)
}
var fnoSettings = {
  FNO_ENVIRONMENTS: 'main'
  FNO_MAIN_BASE_URL: fnoBaseUrl
  FNO_MAIN_DEPLOYMENT: fnoDeployment
  FNO_MAIN_AUTH_MODE: fnoAuthMode
  FNO_MAIN_CLIENT_ID: fnoClientId
  FNO_MAIN_LEGAL_ENTITY: fnoLegalEntity
  FNO_MAIN_IMPORT_PERMITS: string(fnoImportPermits)
  FNO_EVENTS_ENABLED: string(fnoEventsEnabled)
  FNO_EVENTS_FALLBACK_POLL_SECONDS: string(fnoEventsFallbackPollSeconds)
}
// Cloud F&O trusts Entra ID (tenant); on-premises F&O trusts AD FS (authority).
var fnoCloudSettings = {
  FNO_MAIN_TENANT_ID: !empty(fnoTenantId) ? fnoTenantId : tenant().tenantId
}
var fnoOnPremSettings = {
  FNO_MAIN_AUTHORITY: fnoAuthority
}
var fnoAuthoritySettings = fnoDeployment == 'cloud' ? fnoCloudSettings : fnoOnPremSettings
// Exactly one credential per auth mode; the secret itself stays in Key Vault (versionless URI: rotation needs no
// redeployment).
var fnoSecretSettings = {
  FNO_MAIN_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.vaultUri}secrets/${fnoClientSecretName})'
}
var fnoCertificateSettings = {
  FNO_MAIN_CERTIFICATE_PATH: fnoCertificatePath
}
var fnoFederatedSettings = {
  FNO_MAIN_MANAGED_IDENTITY_CLIENT_ID: identity.outputs.clientId
}
var fnoNoSecretSettings = fnoAuthMode == 'certificate' ? fnoCertificateSettings : fnoFederatedSettings
var fnoCredentialSettings = fnoAuthMode == 'client_secret' ? fnoSecretSettings : fnoNoSecretSettings

var appSettings = union(storageSettings, dataContainers, dataTables, runtimeSettings, fnoSettings, fnoAuthoritySettings, fnoCredentialSettings)

module app 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: appName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.connectionString
    workspaceId: monitoring.outputs.workspaceId
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    subnetId: vnetEnabled ? network!.outputs.appSubnetId : ''
    appSettings: appSettings
  }
  // The app must not start before its identity can read storage and the Key Vault secret.
  dependsOn: [
    rbac
  ]
}

// ---------------------------------------------------------------------------------------------------------------
// Outputs (UPPER_SNAKE: azd exports them to the environment and the hooks)
// ---------------------------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output AZURE_FUNCTION_APP_HOSTNAME string = app.outputs.defaultHostName
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_USER_ASSIGNED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output EVENT_GRID_SYSTEM_TOPIC_NAME string = events.outputs.name
output INBOUND_CONTAINER string = dataContainers.INBOUND_CONTAINER
output DEAD_LETTER_CONTAINER string = deadLetterContainerName
output FNO_CREDENTIAL_NAME string = fnoClientSecretName
