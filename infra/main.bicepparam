// Parameters for pipelines: `az deployment sub create --location <region> --parameters infra/main.bicepparam`.
// Values come from the pipeline's environment (GitHub variables); no secret belongs here. The F&O client secret is
// written to Key Vault by a separate step (docs/DEPLOY.md).
using 'main.bicep'

param environmentName = readEnvironmentVariable('AZURE_ENV_NAME', 'fnodmf-dev')
param location = readEnvironmentVariable('AZURE_LOCATION', 'westeurope')
param principalId = readEnvironmentVariable('AZURE_PRINCIPAL_ID', '')
param principalType = readEnvironmentVariable('AZURE_PRINCIPAL_TYPE', 'ServicePrincipal')
param vnetEnabled = bool(readEnvironmentVariable('VNET_ENABLED', 'false'))

param instanceMemoryMB = int(readEnvironmentVariable('FUNCTION_INSTANCE_MEMORY_MB', '2048'))
param maximumInstanceCount = int(readEnvironmentVariable('FUNCTION_MAXIMUM_INSTANCE_COUNT', '100'))

param fnoBaseUrl = readEnvironmentVariable('FNO_BASE_URL')
param fnoDeployment = readEnvironmentVariable('FNO_DEPLOYMENT', 'cloud')
param fnoAuthMode = readEnvironmentVariable('FNO_AUTH_MODE', 'client_secret')
param fnoTenantId = readEnvironmentVariable('FNO_TENANT_ID', '')
param fnoAuthority = readEnvironmentVariable('FNO_AUTHORITY', '')
param fnoClientId = readEnvironmentVariable('FNO_CLIENT_ID')
param fnoLegalEntity = readEnvironmentVariable('FNO_LEGAL_ENTITY', 'USMF')
// Pushed completion: F&O's DMF import-status business event to /api/fno/events (docs/DEPLOY.md 2.5).
param fnoEventsEnabled = bool(readEnvironmentVariable('FNO_EVENTS_ENABLED', 'false'))

// Alerts notify this action group (docs/RUNBOOK.md); empty: alerts show in the portal only.
param opsActionGroupId = readEnvironmentVariable('OPS_ACTION_GROUP_ID', '')

// Jobs: recurring-integration exports to drain and scheduled ExportToPackage jobs (see docs/DEPLOY.md).
param recurringExports = []
param exportJobs = []
