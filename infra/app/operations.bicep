// Operations: an Azure Monitor workbook and log search alert rules over the app's telemetry in the workspace.
// The queries read the app's `event` log lines (dmf/logs.py ops_event: custom dimensions in AppTraces.Properties)
// and the host's FunctionAppLogs. What each alert means and what to do: docs/RUNBOOK.md.
param location string
param tags object = {}
@description('Log Analytics workspace the app and host log to (App Insights is workspace-based).')
param workspaceId string
@description('Suffix that keeps alert rule names unique per deployment.')
param nameSuffix string
param workbookEnabled bool = true
param alertsEnabled bool = true
@description('Action group resource id the alerts notify; empty: alerts show in the portal only.')
param actionGroupId string = ''
@minValue(5)
@description('Alert when an import-gate permit is held longer than this many minutes.')
param gateHeldMinutes int = 120
@minValue(1)
@description('Alert when a recurring-export drain stops on its budget this many times within an hour.')
param drainBacklogRuns int = 3

var alertDefinitions = [
  {
    name: 'failed-imports'
    displayName: 'F&O DMF: imports failed, canceled or timed out'
    description: 'A package import ended Failed, Canceled or TimedOut. Runbook: docs/RUNBOOK.md, "File stuck or failed".'
    severity: 2
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
    query: loadTextContent('queries/alert-failed-imports.kql')
  }
  {
    name: 'poison-blobs'
    displayName: 'F&O DMF: poison blob (a dropped file the host gave up on)'
    description: 'The blob trigger failed 5 times for a file and moved it to webjobs-blobtrigger-poison. Runbook: docs/RUNBOOK.md, "Poison blob".'
    severity: 1
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
    query: loadTextContent('queries/alert-poison-blobs.kql')
  }
  {
    name: 'gate-held'
    displayName: 'F&O DMF: import gate held too long'
    description: 'An import-gate permit has been held longer than the threshold: imports behind it wait. Runbook: docs/RUNBOOK.md, "Gate stuck".'
    severity: 2
    evaluationFrequency: 'PT15M'
    windowSize: 'P1D'
    autoMitigate: true
    query: replace(loadTextContent('queries/alert-gate-held.kql'), '{gateHeldMinutes}', string(gateHeldMinutes))
  }
  {
    name: 'drain-backlog'
    displayName: 'F&O DMF: recurring-export drain backlog'
    description: 'Drains keep stopping on their budget with messages left in F&O, or failed. Runbook: docs/RUNBOOK.md, "Outbound backlog and redeliveries".'
    severity: 3
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    autoMitigate: true
    query: replace(loadTextContent('queries/alert-drain-backlog.kql'), '{drainBacklogRuns}', string(drainBacklogRuns))
  }
]
var alerts = alertsEnabled ? alertDefinitions : []
var actionGroups = empty(actionGroupId) ? [] : [
  actionGroupId
]

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = if (workbookEnabled) {
  name: guid(resourceGroup().id, nameSuffix, 'operations-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'F&O DMF integration: operations'
    category: 'workbook'
    sourceId: workspaceId
    version: 'Notebook/1.0'
    serializedData: replace(loadTextContent('workbooks/operations.json'), '__WORKSPACE_ID__', workspaceId)
  }
}

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for a in alerts: {
  name: 'alert-${a.name}-${nameSuffix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: a.displayName
    description: a.description
    severity: a.severity
    enabled: true
    evaluationFrequency: a.evaluationFrequency
    windowSize: a.windowSize
    scopes: [
      workspaceId
    ]
    criteria: {
      allOf: [
        {
          query: a.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: a.autoMitigate
    actions: {
      actionGroups: actionGroups
    }
  }
}]

output workbookEnabled bool = workbookEnabled
output alertRuleNames array = [for a in alerts: 'alert-${a.name}-${nameSuffix}']
