"""Every retry number the orchestrators use, in one place (the budget is stated in docs/RETRIES.md).

``RetryOptions`` re-runs an activity that *raised*; activities turn every F&O error into a result object,
so these only cover unexpected errors (our storage, the worker) and never repeat a call F&O answered.
The ``MAX_*`` counts bound the orchestrators' own loops on such results. Each loop is the one retry layer of
the F&O calls it repeats: the F&O client sends those once (``dmf.fno.http.SENT_ONCE``), so one logical step
makes at most the loop's count of calls. The budget tests (``tests/*/test_retry_budget.py``) hold the docs
table, these numbers and the calls measured under a fault storm to each other.
"""

from __future__ import annotations

import azure.durable_functions as df

from dmf.pipeline.polling import PollPolicy

# Activities of one package's import, the outbound orchestrations and the drop's own steps.
RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=4)
# The drop and retry orchestrations' bookkeeping activities.
DROP_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=3)
# One drain batch: a failed batch is cheap to run again (messages not acked come back).
BATCH_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2_000, max_number_of_attempts=2)

# Start calls that reached nothing in F&O: the import's write URL or upload failed, an enqueue was refused.
MAX_START_RETRIES = 5
# ImportFromPackage / ExportToPackage called again after an ambiguous start (timeout, 5xx) F&O still does not
# know after the grace. Safe to repeat: the call carries the same execution id, which F&O refuses to start
# twice (that refusal reads as "started"). Four, not two: with 20% of calls failing, three failed starts in a
# row lost a scheduled export in the fault matrix; each recall is one call, a grace apart, within the deadline.
MAX_RECALLS = 4
TARGET_KEY_TRIES = 6  # error keys F&O has not generated yet (or could not be asked)
# Refusals (429, 503 + Retry-After) between those tries are waited out, not counted: up to this, in all.
TARGET_KEY_REFUSALS = PollPolicy(initial=15, factor=2, max_interval=240, deadline=900, not_found_grace=0)
MAX_URL_TRIES = 10  # an export's package URL not handed out yet
# An export's package URL or download failing. GetExportedPackageUrl is sent once per try (this loop is its
# retry layer), so six tries ride out about 8 minutes of F&O failing (timers 15, 30, 60, 120, 240 s).
MAX_FETCH_FAILURES = 6
