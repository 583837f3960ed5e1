"""Every retry number the orchestrators use, in one place (the budget is stated in docs/RETRIES.md).

``RetryOptions`` re-runs an activity that *raised*; activities turn expected failures (F&O errors after the
HTTP layer's own retries) into result objects, so these only cover unexpected errors (storage, worker).
The ``MAX_*`` counts bound the orchestrators' own loops on such results.
"""

from __future__ import annotations

import azure.durable_functions as df

# Activities of one package's import, the outbound orchestrations and the drop's own steps.
RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=4)
# The drop and retry orchestrations' bookkeeping activities.
DROP_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=3)
# One drain batch: a failed batch is cheap to run again (messages not acked come back).
BATCH_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2_000, max_number_of_attempts=2)

MAX_START_RETRIES = 5  # start calls that reached nothing in F&O (write URL or upload failed)
MAX_RECALLS = 2  # ImportFromPackage / ExportToPackage re-called after an ambiguous start F&O never saw
TARGET_KEY_TRIES = 6  # error keys F&O has not generated yet
MAX_URL_TRIES = 10  # an export's package URL not handed out yet
MAX_FETCH_FAILURES = 3  # an export's package download failing
