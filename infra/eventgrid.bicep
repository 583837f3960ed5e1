// Phase 2 of 2, deployed after the code: the blob-created subscription that feeds the inbound blob trigger.
// It needs the blobs_extension system key, which the host creates only once the code is deployed and indexed;
// deploying this earlier fails Event Grid's webhook validation.
targetScope = 'resourceGroup'

param functionAppName string
param storageAccountName string
param systemTopicName string

@description('Container the blob trigger watches (INBOUND_CONTAINER).')
param inboundContainer string = 'inbound'

@description('Container for events Event Grid could not deliver.')
param deadLetterContainer string = 'eventgrid-deadletter'

@description('Python function name of the Event Grid blob trigger.')
param functionName string = 'on_inbound_blob'

@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

resource app 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

// The key goes straight into the subscription (a write-only property); it is never an output.
var blobsExtensionKey = listKeys('${app.id}/host/default', '2024-04-01').systemKeys.blobs_extension
var webhookUrl = 'https://${app.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'

resource blobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'inbound-blob-created'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: webhookUrl
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${inboundContainer}/'
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    // Written with the topic's own identity: the storage account refuses shared keys.
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainer
        }
      }
    }
  }
}

output EVENT_GRID_SUBSCRIPTION_NAME string = blobCreated.name
