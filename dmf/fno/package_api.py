"""The DMF Package API (OData actions on DataManagementDefinitionGroups) and the upload to its SAS URL."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from azure.core.exceptions import AzureError
from azure.storage.blob import BlobClient, ContentSettings

from dmf.fno.errors import ExecutionNotFound, PermanentFnoError, TransientFnoError
from dmf.fno.http import FnoHttp
from dmf.fno.models import (
    ExecutionError,
    ExecutionStatus,
    MessageStatus,
    WriteUrl,
    optional_execution_id,
    optional_url,
    parse_bool,
    parse_execution_errors,
    parse_json_string,
    unwrap_value,
)
from dmf.fno.transfer import DownloadStream, chunk_source
from dmf.redact import redact_url, scrub
from dmf.storage.transfer import SINGLE_PUT_MAX, upload_stream

log = logging.getLogger(__name__)

ACTION_PATH = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."
# Block sizes for the SAS upload: 4 MiB blocks keep memory flat and stay far below the 50,000-block cap
# for any package F&O will accept; anything up to 8 MiB goes in one Put Blob. Larger uploads stage
# UPLOAD_CONCURRENCY blocks at once (the SDK's own chunking: at most that many blocks in memory).
MAX_SINGLE_PUT = 8 * 2**20
BLOCK_SIZE = 4 * 2**20
UPLOAD_CONCURRENCY = 4


class PackageApi:
    """Typed calls to one F&O environment's Package API. Every call has a timeout; see ``FnoHttp``."""

    def __init__(self, http: FnoHttp, api_root: str, *, upload_concurrency: int = UPLOAD_CONCURRENCY) -> None:
        self.http = http
        self.api_root = api_root.rstrip("/")
        self.upload_concurrency = upload_concurrency

    # -- plumbing ---------------------------------------------------------------------------------------

    def _call(
        self,
        action: str,
        payload: dict[str, Any],
        *,
        idempotent: bool = True,
        transfer: bool = False,
        retry_refused: bool = True,
    ):
        resp = self.http.request(
            "POST",
            self.api_root + ACTION_PATH + action,
            action=action,
            idempotent=idempotent,
            json=payload,
            headers={"Accept": "application/json"},
            transfer=transfer,
            retry_refused=retry_refused,
        )
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return unwrap_value(resp.json())
        except ValueError:
            raise PermanentFnoError(
                f"F&O {action}: response is not JSON ({resp.headers.get('Content-Type', '?')})",
                status=resp.status_code,
                fno_message=resp.text[:300],
                action=action,
            ) from None

    # -- upload -----------------------------------------------------------------------------------------

    def get_azure_write_url(self, unique_file_name: str) -> WriteUrl:
        """A fresh SAS URL to upload a package to; valid for minutes, so request it right before use."""
        value = self._call("GetAzureWriteUrl", {"uniqueFileName": unique_file_name})
        try:
            return WriteUrl.model_validate(parse_json_string(value))
        except ValueError as exc:
            raise PermanentFnoError(
                f"F&O GetAzureWriteUrl: unexpected value: {scrub(exc)}", action="GetAzureWriteUrl"
            ) from None

    def upload_to_write_url(
        self, blob_url: str, data: IO[bytes] | Iterable[bytes] | bytes, length: int | None
    ) -> None:
        """Stream ``data`` to the SAS URL as a block blob: one streamed Put Blob when ``length`` is known (up
        to ``SINGLE_PUT_MAX``), else a single put when small and blocks when large.

        Blocks go up ``upload_concurrency`` at a time; the SDK reads the source in order (or, for a
        seekable file of known ``length``, each block's own range) and holds at most that many blocks.
        Put Block is idempotent, so the storage SDK's own retries are safe here.
        """
        blob = BlobClient.from_blob_url(
            blob_url,
            connection_verify=self.http.verify,
            connection_timeout=self.http.timeout,
            read_timeout=self.http.transfer_timeout,
            max_single_put_size=MAX_SINGLE_PUT,
            max_block_size=BLOCK_SIZE,
            min_large_block_upload_threshold=BLOCK_SIZE + 1,
        )
        try:
            if length is not None and length <= SINGLE_PUT_MAX:
                # One streamed Put Blob (dmf.storage.transfer.upload_stream): Put Block costs the storage
                # service several times the work per byte, and the write URL takes up to 5,000 MiB at once.
                source, attempts = chunk_source(data)
                upload_stream(
                    source, length, blob, content_type="application/octet-stream", attempts=attempts
                )
                return
            blob.upload_blob(
                data,
                length=length,
                blob_type="BlockBlob",
                overwrite=True,
                content_settings=ContentSettings(content_type="application/octet-stream"),
                max_concurrency=self.upload_concurrency,
            )
        except AzureError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            cls = PermanentFnoError if status in (400, 403, 404, 409, 413) else TransientFnoError
            raise cls(
                f"upload to {redact_url(blob_url.split('?', 1)[0])} failed: {type(exc).__name__}: "
                f"{scrub(exc.message if hasattr(exc, 'message') else exc)}",
                status=status,
                action="UploadPackage",
            ) from None
        finally:
            blob.close()

    def upload_package(
        self, unique_file_name: str, data: IO[bytes] | Iterable[bytes] | bytes, length: int | None
    ) -> WriteUrl:
        """Request a write URL and upload to it at once (the SAS expires within minutes)."""
        url = self.get_azure_write_url(unique_file_name)
        self.upload_to_write_url(url.blob_url, data, length)
        log.info("uploaded package %s as blob %s", unique_file_name, url.blob_id)
        return url

    # -- start jobs (sent once, never repeated here: callers check by execution id first) --------------
    # A refusal (``FnoError.refused``: 429, or 503 with Retry-After) is raised with ``retry_after`` too: the
    # orchestrator waits that long with a durable timer and calls again (the only retry layer for starts).

    def import_from_package(
        self,
        package_url: str,
        definition_group_id: str,
        execution_id: str,
        *,
        execute: bool = True,
        overwrite: bool = True,
        legal_entity_id: str,
        use_async: bool = True,
    ) -> str:
        """Start an import; returns the execution id. Sent once: not repeated on 429/5xx or a lost connection."""
        action = "ImportFromPackageAsync" if use_async else "ImportFromPackage"
        return self._start(
            action,
            {
                "packageUrl": package_url,
                "definitionGroupId": definition_group_id,
                "executionId": execution_id,
                "execute": execute,
                "overwrite": overwrite,
                "legalEntityId": legal_entity_id,
            },
            use_async,
        )

    def export_to_package(
        self,
        definition_group_id: str,
        package_name: str,
        execution_id: str,
        *,
        re_execute: bool = False,
        legal_entity_id: str,
        use_async: bool = True,
    ) -> str:
        """Start an export; returns the execution id. Sent once: not repeated on 429/5xx or a lost connection."""
        action = "ExportToPackageAsync" if use_async else "ExportToPackage"
        return self._start(
            action,
            {
                "definitionGroupId": definition_group_id,
                "packageName": package_name,
                "executionId": execution_id,
                "reExecute": re_execute,
                "legalEntityId": legal_entity_id,
            },
            use_async,
        )

    def _start(self, action: str, payload: dict[str, Any], use_async: bool) -> str:
        """Send a job start once (see above); the execution id F&O answers, else the one sent."""
        value = self._call(
            action,
            payload,
            idempotent=False,
            transfer=not use_async,  # the synchronous variant answers only when the job is done
            retry_refused=False,
        )
        return optional_execution_id(value) or payload["executionId"]

    # -- status and results (safe to repeat) -----------------------------------------------------------

    def get_execution_summary_status(self, execution_id: str) -> ExecutionStatus:
        """The job's status; ``NOT_FOUND`` while F&O has no execution details yet (HTTP 400)."""
        try:
            value = self._call("GetExecutionSummaryStatus", {"executionId": execution_id})
        except ExecutionNotFound:
            return ExecutionStatus.NOT_FOUND
        if value is None or not str(value).strip():
            return ExecutionStatus.UNKNOWN
        return ExecutionStatus(str(value))

    def get_exported_package_url(self, execution_id: str) -> str | None:
        """SAS URL of the exported package; None while F&O has not produced it yet."""
        return optional_url(self._call("GetExportedPackageUrl", {"executionId": execution_id}))

    def get_execution_errors(self, execution_id: str) -> list[ExecutionError]:
        return parse_execution_errors(self._call("GetExecutionErrors", {"executionId": execution_id}))

    def get_import_staging_error_file_url(self, execution_id: str, entity_name: str) -> str | None:
        payload = {"executionId": execution_id, "entityName": entity_name}
        return optional_url(self._call("GetImportStagingErrorFileUrl", payload))

    def generate_import_target_error_keys_file(self, execution_id: str, entity_name: str) -> bool:
        """True when target errors exist (then poll ``get_import_target_error_keys_file_url``)."""
        payload = {"executionId": execution_id, "entityName": entity_name}
        return parse_bool(self._call("GenerateImportTargetErrorKeysFile", payload))

    def get_import_target_error_keys_file_url(self, execution_id: str, entity_name: str) -> str | None:
        payload = {"executionId": execution_id, "entityName": entity_name}
        return optional_url(self._call("GetImportTargetErrorKeysFileUrl", payload))

    def get_message_status(self, message_id: str) -> MessageStatus:
        value = self._call("GetMessageStatus", {"messageId": message_id})
        return MessageStatus(str(value if value is not None else "").strip())

    def get_execution_id_by_message_id(self, message_id: str) -> str | None:
        """None while the enqueued message has not been picked up (F&O answers the empty GUID)."""
        return optional_execution_id(self._call("GetExecutionIdByMessageId", {"_messageId": message_id}))

    def get_execution_summary_page_url(self, execution_id: str) -> str | None:
        return optional_url(self._call("GetExecutionSummaryPageUrl", {"executionId": execution_id}))

    # -- files F&O hands out as SAS URLs (no bearer token: the SAS is the credential) ------------------

    @contextmanager
    def open_url(self, url: str, *, action: str = "DownloadFile") -> Iterator[DownloadStream]:
        """Stream a file from a URL F&O returned (exported package, error files)."""
        resp = self.http.request(
            "GET", url, action=action, idempotent=True, authorize=False, stream=True, transfer=True,
            allow_redirects=True,
        )  # fmt: skip
        try:
            yield DownloadStream(resp)
        finally:
            resp.close()
