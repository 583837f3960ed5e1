"""Typed results of F&O calls, parsed leniently from the shapes F&O is documented (and observed) to return."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"


class _LenientStrEnum(StrEnum):
    """Case-insensitive lookup; a value F&O adds later is kept (name ``UNRECOGNISED``), never an error."""

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        return {}

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        key = value.strip().lower()
        for member in cls:
            if member.value.lower() == key:
                return member
        alias = cls._aliases().get(key)
        if alias is not None:
            return cls(alias)
        # A pseudo-member keeps the exact string for logs and tables.
        pseudo = str.__new__(cls, value)
        pseudo._name_ = "UNRECOGNISED"
        pseudo._value_ = value
        return pseudo

    @property
    def recognised(self) -> bool:
        return self._name_ != "UNRECOGNISED"


class ExecutionStatus(_LenientStrEnum):
    """DMFExecutionSummaryStatus, plus NOT_FOUND for HTTP 400 "Execution details were not found"."""

    UNKNOWN = "Unknown"
    NOT_RUN = "NotRun"
    EXECUTING = "Executing"
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"
    CANCELED = "Canceled"
    NOT_FOUND = "NotFound"

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        return {"cancelled": "Canceled"}

    @property
    def is_terminal(self) -> bool:
        # Unknown is ambiguous (RIS treats it as failure); callers decide with a deadline, so not terminal.
        return self in _EXEC_TERMINAL


_EXEC_TERMINAL = frozenset(
    {
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.PARTIALLY_SUCCEEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELED,
    }
)


class MessageStatus(_LenientStrEnum):
    """Recurring-integration message status (GetMessageStatus); both documented spellings accepted."""

    ENQUEUED = "Enqueued"
    DEQUEUED = "Dequeued"
    DOWNLOADED = "Downloaded"
    ACKED = "Acked"
    PREPROCESSING = "Preprocessing"
    PROCESSING = "Processing"
    PROCESSED = "Processed"
    PREPROCESSING_ERROR = "PreProcessingError"
    PROCESSED_WITH_ERRORS = "ProcessedWithErrors"
    POSTPROCESSING_FAILED = "PostProcessingFailed"

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        # The RI doc and Microsoft's RIS enum spell these differently.
        return {
            "postprocessingerror": "PostProcessingFailed",
            "preprocessingfailed": "PreProcessingError",
        }

    @property
    def is_terminal(self) -> bool:
        return self in _MSG_TERMINAL

    @property
    def is_failure(self) -> bool:
        return self in _MSG_FAILURE


_MSG_FAILURE = frozenset(
    {
        MessageStatus.PREPROCESSING_ERROR,
        MessageStatus.PROCESSED_WITH_ERRORS,
        MessageStatus.POSTPROCESSING_FAILED,
    }
)
_MSG_TERMINAL = _MSG_FAILURE | {MessageStatus.PROCESSED}


class WriteUrl(BaseModel):
    """GetAzureWriteUrl's result. ``blob_url`` carries a short-lived SAS: use it at once, never log it raw."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    blob_id: str = Field(alias="BlobId")
    blob_url: str = Field(alias="BlobUrl")

    def __repr__(self) -> str:
        from dmf.redact import redact_url

        return f"WriteUrl(blob_id={self.blob_id!r}, blob_url={redact_url(self.blob_url)!r})"

    __str__ = __repr__


class ExecutionError(BaseModel):
    """One row of GetExecutionErrors."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="allow")

    record_id: str | None = Field(default=None, alias="RecordId")
    field: str | None = Field(default=None, alias="Field")
    error_message: str = Field(default="", alias="ErrorMessage")


class DequeuedMessage(BaseModel):
    """A dequeued recurring-export message.

    ``raw`` is the dequeue response body exactly as received: ack must send it back verbatim. It is a
    string (UTF-8 decoded losslessly) so the message can cross durable activity boundaries as JSON;
    rebuild with ``DequeuedMessage.from_raw(raw)``.
    """

    model_config = ConfigDict(frozen=True)

    correlation_id: str
    pop_receipt: str
    download_location: str
    is_download_file_exist: bool | None = None
    file_download_error_message: str | None = None
    last_dequeue_datetime: str | None = None
    raw: str

    @classmethod
    def from_raw(cls, raw: str | bytes) -> DequeuedMessage:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("dequeue response is not a JSON object")
        return cls(
            correlation_id=str(doc["CorrelationId"]),
            pop_receipt=str(doc["PopReceipt"]),
            download_location=https_download_location(str(doc["DownloadLocation"])),
            is_download_file_exist=doc.get("IsDownLoadFileExist"),
            file_download_error_message=doc.get("FileDownLoadErrorMessage") or None,
            last_dequeue_datetime=doc.get("LastDequeueDateTime") or None,
            raw=text,
        )


def https_download_location(url: str) -> str:
    """F&O behind its load balancer may hand out http:// download links: rewrite to https (drop :80)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        return url
    netloc = parts.netloc
    if parts.port == 80:
        netloc = netloc.rsplit(":", 1)[0]
    return urlunsplit(("https", netloc, parts.path, parts.query, parts.fragment))


def unwrap_value(doc: Any) -> Any:
    """OData action result: ``{"value": X}``, sometimes nested (``{"value": {"value": X}}``)."""
    while isinstance(doc, dict) and "value" in doc:
        doc = doc["value"]
    return doc


def parse_json_string(value: Any) -> Any:
    """Several actions return JSON serialised inside a string ``value``; accept either form."""
    for _ in range(3):  # tolerate double encoding ("\"[...]\"")
        if not isinstance(value, str):
            break
        text = value.strip()
        if text[:1] not in ("{", "[", '"'):
            break
        value = json.loads(text)
    return value


def optional_url(value: Any) -> str | None:
    """F&O answers "" (or null) while a file is not ready."""
    value = unwrap_value(value)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def optional_execution_id(value: Any) -> str | None:
    value = unwrap_value(value)
    if value is None:
        return None
    text = str(value).strip().strip("{}")
    if not text or text.lower() == EMPTY_GUID:
        return None
    return str(unwrap_value(value)).strip()


def parse_execution_errors(value: Any) -> list[ExecutionError]:
    value = unwrap_value(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    try:
        rows = parse_json_string(value)
    except ValueError:
        # Not JSON after all: keep F&O's text rather than lose it.
        return [ExecutionError(ErrorMessage=str(value))]
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list):
        return [ExecutionError(ErrorMessage=str(rows))]
    return [
        ExecutionError.model_validate(r) if isinstance(r, dict) else ExecutionError(ErrorMessage=str(r))
        for r in rows
    ]


def parse_bool(value: Any) -> bool:
    value = unwrap_value(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)
