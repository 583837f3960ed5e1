"""Problem codes and the report items that validation and building return instead of raising."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"  # F&O would reject or mis-import the package: do not send it
    WARNING = "warning"  # worth telling the user, but the package can be imported


class Code(StrEnum):
    # Zip container
    NOT_A_ZIP = "NOT_A_ZIP"
    ZIP_ENCRYPTED = "ZIP_ENCRYPTED"
    ZIP_BOMB = "ZIP_BOMB"
    ZIP_TOO_MANY_ENTRIES = "ZIP_TOO_MANY_ENTRIES"
    ZIP_NESTED_FOLDER = "ZIP_NESTED_FOLDER"
    ZIP_DUPLICATE_ENTRY = "ZIP_DUPLICATE_ENTRY"
    ZIP_CORRUPT = "ZIP_CORRUPT"
    ZIP_NOT_A_FILE = "ZIP_NOT_A_FILE"  # a symbolic link, device, pipe...: only regular files are allowed
    NAME_TOO_LONG = "NAME_TOO_LONG"
    PATH_TRAVERSAL = "PATH_TRAVERSAL"
    EMPTY_FILE = "EMPTY_FILE"
    EMPTY_PACKAGE = "EMPTY_PACKAGE"
    TOO_LARGE = "TOO_LARGE"
    UNREFERENCED_FILE = "UNREFERENCED_FILE"
    # Package XML files
    MISSING_MANIFEST = "MISSING_MANIFEST"
    MISSING_PACKAGE_HEADER = "MISSING_PACKAGE_HEADER"
    BAD_MANIFEST = "BAD_MANIFEST"
    BAD_PACKAGE_HEADER = "BAD_PACKAGE_HEADER"
    INPUT_FILE_MISSING = "INPUT_FILE_MISSING"
    NO_ENTITY_MAP = "NO_ENTITY_MAP"
    UNKNOWN_SOURCE_FORMAT = "UNKNOWN_SOURCE_FORMAT"
    UNKNOWN_ENTITY = "UNKNOWN_ENTITY"
    # Project / entity rules
    APOSTROPHE_IN_PROJECT = "APOSTROPHE_IN_PROJECT"
    COMPOSITE_NOT_ALONE = "COMPOSITE_NOT_ALONE"
    COMPOSITE_OVERWRITE = "COMPOSITE_OVERWRITE"
    # Data file content
    BAD_ENCODING = "BAD_ENCODING"
    LF_LINE_ENDINGS = "LF_LINE_ENDINGS"
    BAD_XML = "BAD_XML"
    BAD_EXCEL = "BAD_EXCEL"
    NO_HEADER = "NO_HEADER"
    NO_ROWS = "NO_ROWS"
    HEADER_MISMATCH = "HEADER_MISMATCH"
    DUPLICATE_COLUMN = "DUPLICATE_COLUMN"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    KEY_FIELD_MISSING = "KEY_FIELD_MISSING"
    DUPLICATE_KEY = "DUPLICATE_KEY"
    UNTERMINATED_QUOTE = "UNTERMINATED_QUOTE"
    RECORD_TOO_LONG = "RECORD_TOO_LONG"
    # Build / batch inputs
    BAD_FILE_NAME = "BAD_FILE_NAME"
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    TEMPLATE_INVALID = "TEMPLATE_INVALID"
    BAD_BATCH_MANIFEST = "BAD_BATCH_MANIFEST"
    # Pre-flight against the environment's entity metadata (dmf/package/preflight.py)
    MANDATORY_MISSING = "MANDATORY_MISSING"
    BAD_VALUE = "BAD_VALUE"
    VALUE_TOO_LONG = "VALUE_TOO_LONG"
    EXCEL_NUMBER_AS_TEXT = "EXCEL_NUMBER_AS_TEXT"
    EXCEL_FORMULA = "EXCEL_FORMULA"
    EXCEL_SERIAL_DATE = "EXCEL_SERIAL_DATE"
    EXCEL_DUMMY_TEXT = "EXCEL_DUMMY_TEXT"
    PREFLIGHT_SKIPPED = "PREFLIGHT_SKIPPED"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. ``message`` is for humans and names the file, entity or row concerned."""

    code: Code
    message: str
    severity: Severity = Severity.ERROR
    file: str | None = None
    entity: str | None = None
    row: int | None = None  # 1-based line of the data file (header = row 1)

    def __str__(self) -> str:
        return f"{self.severity}: {self.code}: {self.message}"


def has_errors(problems: list[Problem]) -> bool:
    return any(p.severity is Severity.ERROR for p in problems)
