"""One typed settings object, read from app settings / environment variables.

Every setting is documented in ``docs/SETTINGS.md`` (a test keeps the two in step). Settings are validated
on first use (``get_settings()``), and a bad configuration raises ``SettingsError`` naming every missing or
invalid setting at once, so an operator fixes them in one pass.

F&O environments are named in ``FNO_ENVIRONMENTS`` (comma-separated); each reads ``FNO_<NAME>_<FIELD>``,
for example ``FNO_MAIN_BASE_URL``. Secrets arrive as Key Vault references resolved by the platform, so code
only ever reads environment variables.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    Json,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)

from dmf.package.limits import DEFAULT_LIMITS as _L
from dmf.routing import RoutesFile


class SettingsError(ValueError):
    """The configuration is incomplete or invalid; the message names each offending setting."""


class Deployment(StrEnum):
    CLOUD = "cloud"
    ONPREM = "onprem"


class AuthMode(StrEnum):
    CLIENT_SECRET = "client_secret"
    CERTIFICATE = "certificate"
    MANAGED_IDENTITY = "managed_identity"
    FEDERATED = "federated"  # managed identity token exchanged for the app registration: no secret


class FnoEnvironment(BaseModel):
    """One F&O environment the app talks to."""

    name: str
    base_url: str
    deployment: Deployment = Deployment.CLOUD
    auth_mode: AuthMode = AuthMode.CLIENT_SECRET
    tenant_id: str | None = None
    authority: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    certificate_path: str | None = None
    certificate_password: SecretStr | None = None
    managed_identity_client_id: str | None = None
    legal_entity: str = "USMF"
    import_permits: int = Field(default=1, ge=1, le=32)
    scope: str | None = None

    @field_validator("base_url")
    @classmethod
    def _https_base(cls, v: str) -> str:
        v = v.rstrip("/")
        if not v.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return v

    @property
    def api_root(self) -> str:
        """Root for /data and /api calls: on-premises F&O lives under /namespaces/AXSF."""
        if self.deployment is Deployment.ONPREM and not self.base_url.endswith("/namespaces/AXSF"):
            return self.base_url + "/namespaces/AXSF"
        return self.base_url

    @property
    def token_scope(self) -> str:
        return self.scope or f"{self.base_url}/.default"

    def problems(self) -> list[str]:
        """Cross-field checks, phrased with the setting names an operator sets."""
        p = f"FNO_{self.name.upper()}_"
        out: list[str] = []
        needs_client = self.auth_mode is not AuthMode.MANAGED_IDENTITY
        if needs_client and not self.client_id:
            out.append(f"{p}CLIENT_ID is required for auth mode {self.auth_mode.value}")
        if self.auth_mode is AuthMode.CLIENT_SECRET and not self.client_secret:
            out.append(f"{p}CLIENT_SECRET is required for auth mode client_secret")
        if self.auth_mode is AuthMode.CERTIFICATE and not self.certificate_path:
            out.append(f"{p}CERTIFICATE_PATH is required for auth mode certificate")
        if self.deployment is Deployment.CLOUD and needs_client and not self.tenant_id:
            out.append(f"{p}TENANT_ID is required for cloud environments")
        if self.deployment is Deployment.ONPREM:
            if not self.authority:
                out.append(f"{p}AUTHORITY (the AD FS URL) is required for on-premises environments")
            if self.auth_mode in (AuthMode.MANAGED_IDENTITY, AuthMode.FEDERATED):
                out.append(f"{p}AUTH_MODE {self.auth_mode.value} is not available with AD FS")
        return out


# FNO_<NAME>_<KEY> → FnoEnvironment field: the key is the field name in capitals.
ENV_FIELDS = {f.upper(): f for f in FnoEnvironment.model_fields if f != "name"}


class RecurringExport(BaseModel):
    """A recurring-integration export activity to drain (see RECURRING_EXPORTS)."""

    name: str
    environment: str
    activity_id: str


class ExportJob(BaseModel):
    """A scheduled ExportToPackage job (see EXPORT_JOBS)."""

    name: str
    environment: str
    data_project: str
    legal_entity: str | None = None
    schedule: str = "0 0 2 * * *"
    package_name: str = "{job}-{timestamp}"


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def _env_source(environ: Mapping[str, str] | None) -> Any:
    """pydantic-settings' environment source for ``Settings`` over ``environ`` (None: the process
    environment): names matched case-insensitively, empty values ignored, JSON fields left to pydantic.

    Imported on first use: reading settings is not on the path of importing the app.
    """
    from pydantic_settings import EnvSettingsSource
    from pydantic_settings.sources.utils import parse_env_vars

    class _EnvSource(EnvSettingsSource):
        def _load_env_vars(self) -> Mapping[str, str | None]:
            if environ is None:
                return super()._load_env_vars()
            return parse_env_vars(
                environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
            )

    return _EnvSource(Settings, case_sensitive=False, env_ignore_empty=True)  # type: ignore[arg-type]


class Settings(BaseModel):
    """App-wide settings. Field aliases are the exact app-setting names; ``load_settings`` reads them."""

    model_config = ConfigDict(extra="ignore", validate_default=True)

    # Storage: a connection string locally, service URIs + managed identity in Azure.
    data_storage: SecretStr | None = Field(default=None, validation_alias=_alias("DATA_STORAGE"))
    blob_service_uri: str | None = Field(
        default=None, validation_alias=_alias("DATA_STORAGE__blobServiceUri")
    )
    queue_service_uri: str | None = Field(
        default=None, validation_alias=_alias("DATA_STORAGE__queueServiceUri")
    )
    table_service_uri: str | None = Field(
        default=None, validation_alias=_alias("DATA_STORAGE__tableServiceUri")
    )
    storage_client_id: str | None = Field(default=None, validation_alias=_alias("DATA_STORAGE__clientId"))

    inbound_container: str = Field(default="inbound", validation_alias=_alias("INBOUND_CONTAINER"))
    staging_container: str = Field(default="staging", validation_alias=_alias("STAGING_CONTAINER"))
    processed_container: str = Field(default="processed", validation_alias=_alias("PROCESSED_CONTAINER"))
    failed_container: str = Field(default="failed", validation_alias=_alias("FAILED_CONTAINER"))
    rejected_container: str = Field(default="rejected", validation_alias=_alias("REJECTED_CONTAINER"))
    errors_container: str = Field(default="import-errors", validation_alias=_alias("ERRORS_CONTAINER"))
    archive_container: str = Field(default="archive", validation_alias=_alias("ARCHIVE_CONTAINER"))

    outcomes_table: str = Field(default="outcomes", validation_alias=_alias("OUTCOMES_TABLE"))
    gates_table: str = Field(default="gates", validation_alias=_alias("GATES_TABLE"))
    ledger_table: str = Field(default="ledger", validation_alias=_alias("LEDGER_TABLE"))

    fno_environments: str = Field(default="main", validation_alias=_alias("FNO_ENVIRONMENTS"))
    fno_ca_bundle: str | None = Field(default=None, validation_alias=_alias("FNO_CA_BUNDLE"))
    fno_http_timeout_seconds: float = Field(
        default=60.0, gt=0, validation_alias=_alias("FNO_HTTP_TIMEOUT_SECONDS")
    )
    fno_transfer_timeout_seconds: float = Field(
        default=3600.0, gt=0, validation_alias=_alias("FNO_TRANSFER_TIMEOUT_SECONDS")
    )
    fno_max_retries: int = Field(default=5, ge=0, le=20, validation_alias=_alias("FNO_MAX_RETRIES"))

    poll_initial_seconds: float = Field(default=15.0, gt=0, validation_alias=_alias("POLL_INITIAL_SECONDS"))
    poll_backoff_factor: float = Field(default=2.0, ge=1.0, validation_alias=_alias("POLL_BACKOFF_FACTOR"))
    poll_max_interval_seconds: float = Field(
        default=3600.0, gt=0, validation_alias=_alias("POLL_MAX_INTERVAL_SECONDS")
    )
    poll_deadline_minutes: float = Field(
        default=1440.0, gt=0, validation_alias=_alias("POLL_DEADLINE_MINUTES")
    )
    poll_not_found_grace_seconds: float = Field(
        default=600.0, ge=0, validation_alias=_alias("POLL_NOT_FOUND_GRACE_SECONDS")
    )

    gate_lease_seconds: float = Field(default=900.0, ge=30, validation_alias=_alias("GATE_LEASE_SECONDS"))
    gate_recheck_seconds: float = Field(default=60.0, gt=0, validation_alias=_alias("GATE_RECHECK_SECONDS"))
    # Pushed completion (F&O's DMF import-status business event): polling becomes the slower fallback.
    fno_events_enabled: bool = Field(default=False, validation_alias=_alias("FNO_EVENTS_ENABLED"))
    fno_events_fallback_poll_seconds: float = Field(
        default=300.0, ge=1, validation_alias=_alias("FNO_EVENTS_FALLBACK_POLL_SECONDS")
    )

    routes_file: str = Field(default="routes.json", validation_alias=_alias("ROUTES_FILE"))
    routes: Json[RoutesFile] | None = Field(default=None, validation_alias=_alias("ROUTES_JSON"))

    # Limits: defaults come from dmf.package.limits (the one copy); docs/INBOUND.md "Limits" lists them.
    package_max_rows: int = Field(
        default=_L.max_rows_per_package, ge=1, validation_alias=_alias("PACKAGE_MAX_ROWS")
    )
    package_max_bytes: int = Field(
        default=_L.max_bytes_per_package, ge=1024, validation_alias=_alias("PACKAGE_MAX_BYTES")
    )
    zip_max_uncompressed_bytes: int = Field(
        default=_L.max_uncompressed_bytes, ge=1024, validation_alias=_alias("ZIP_MAX_UNCOMPRESSED_BYTES")
    )
    zip_max_ratio: float = Field(default=_L.max_ratio, gt=1, validation_alias=_alias("ZIP_MAX_RATIO"))
    zip_max_entries: int = Field(default=_L.max_entries, ge=1, validation_alias=_alias("ZIP_MAX_ENTRIES"))
    file_name_max_chars: int = Field(
        default=_L.max_name_chars, ge=1, validation_alias=_alias("FILE_NAME_MAX_CHARS")
    )
    record_max_chars: int = Field(
        default=_L.max_record_chars, ge=1, validation_alias=_alias("RECORD_MAX_CHARS")
    )
    input_max_bytes: int = Field(default=_L.max_input_bytes, ge=1, validation_alias=_alias("INPUT_MAX_BYTES"))
    package_file_max_bytes: int = Field(
        default=_L.max_package_file_bytes, ge=1024, validation_alias=_alias("PACKAGE_FILE_MAX_BYTES")
    )

    # JSON settings: the default is JSON text too (pydantic-settings validates defaults like any value).
    recurring_exports: Json[list[RecurringExport]] = Field(
        default="[]", validation_alias=_alias("RECURRING_EXPORTS")
    )
    drain_max_messages: int = Field(default=200, ge=1, validation_alias=_alias("DRAIN_MAX_MESSAGES"))
    drain_max_seconds: float = Field(default=240.0, gt=0, validation_alias=_alias("DRAIN_MAX_SECONDS"))
    export_jobs: Json[list[ExportJob]] = Field(default="[]", validation_alias=_alias("EXPORT_JOBS"))
    history_retention_days: float = Field(
        default=30.0, gt=0, validation_alias=_alias("HISTORY_RETENTION_DAYS")
    )
    archive_retention_days: float = Field(
        default=0.0, ge=0, validation_alias=_alias("ARCHIVE_RETENTION_DAYS")
    )
    outcome_retention_days: float = Field(
        default=365.0, ge=0, validation_alias=_alias("OUTCOME_RETENTION_DAYS")
    )

    # Read by decorators / host.json as %NAME%; kept here so they are validated and documented in one place.
    task_hub_name: str = Field(
        default="fnodmf", pattern=r"^[A-Za-z][A-Za-z0-9]{2,44}$", validation_alias=_alias("TASKHUB_NAME")
    )
    inbound_blob_source: str = Field(
        default="EventGrid",
        pattern=r"^(EventGrid|LogsAndContainerScan)$",
        validation_alias=_alias("INBOUND_BLOB_SOURCE"),
    )
    drain_schedule: str = Field(default="0 */5 * * * *", validation_alias=_alias("DRAIN_SCHEDULE"))
    export_schedule: str = Field(default="0 * * * * *", validation_alias=_alias("EXPORT_SCHEDULE"))
    housekeeping_schedule: str = Field(
        default="0 30 2 * * *", validation_alias=_alias("HOUSEKEEPING_SCHEDULE")
    )
    gate_sweep_schedule: str = Field(default="0 * * * * *", validation_alias=_alias("GATE_SWEEP_SCHEDULE"))
    # Entity metadata and pre-flight (dmf/fno/metadata.py, dmf/package/preflight.py).
    metadata_container: str = Field(default="metadata", validation_alias=_alias("METADATA_CONTAINER"))
    metadata_refresh_schedule: str = Field(
        default="0 15 3 * * *", validation_alias=_alias("METADATA_REFRESH_SCHEDULE")
    )
    metadata_language: str = Field(default="en-us", validation_alias=_alias("METADATA_LANGUAGE"))
    preflight_default: str = Field(
        default="warn", pattern=r"^(off|warn|enforce)$", validation_alias=_alias("PREFLIGHT_DEFAULT")
    )

    applicationinsights_connection_string: SecretStr | None = Field(
        default=None, validation_alias=_alias("APPLICATIONINSIGHTS_CONNECTION_STRING")
    )
    log_level: str = Field(
        default="INFO",
        pattern=r"(?i)^(CRITICAL|FATAL|ERROR|WARN|WARNING|INFO|DEBUG|NOTSET)$",
        validation_alias=_alias("LOG_LEVEL"),
    )

    # Filled by load_settings() from FNO_<NAME>_<KEY>: not a setting of its own (never read from the environment).
    _environments: dict[str, FnoEnvironment] = PrivateAttr(default_factory=dict)

    @property
    def environments(self) -> dict[str, FnoEnvironment]:
        return self._environments

    def environment(self, name: str | None = None) -> FnoEnvironment:
        """The named F&O environment, or the first configured one."""
        if name is None:
            return next(iter(self.environments.values()))
        try:
            return self.environments[name.lower()]
        except KeyError:
            raise SettingsError(
                f"unknown F&O environment {name!r}; FNO_ENVIRONMENTS lists {sorted(self.environments)}"
            ) from None

    @property
    def uses_connection_string(self) -> bool:
        return self.data_storage is not None


def _env_name_for(settings_field: str) -> str:
    f = Settings.model_fields[settings_field]
    alias = f.validation_alias
    return alias.choices[0] if isinstance(alias, AliasChoices) else settings_field.upper()


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc) or "?"


def _read_settings(environ: Mapping[str, str] | None, problems: list[str]) -> tuple[Settings, Mapping]:
    """pydantic-settings reads the environment and pydantic validates it; each bad value is reported, then
    left out (its default applies) so the remaining checks still run. Returns the settings and the
    environment as the source read it (for the per-environment ``FNO_<NAME>_<KEY>`` settings)."""
    source = _env_source(environ)
    data = source()
    try:
        return Settings.model_validate(data), source.env_vars
    except ValidationError as exc:
        for e in exc.errors():
            problems.append(f"{_where(e['loc'])}: {e['msg']}")
            if e["loc"]:
                data.pop(str(e["loc"][0]), None)
        return Settings.model_validate(data), source.env_vars


def _environments(settings: Settings, env_vars: Mapping[str, str | None], problems: list[str]) -> None:
    """The F&O environments named in FNO_ENVIRONMENTS, each from its ``FNO_<NAME>_<KEY>`` settings."""
    names = [n.strip().lower() for n in settings.fno_environments.split(",") if n.strip()]
    if not names:
        problems.append("FNO_ENVIRONMENTS: names no environment")
    for name in names:
        prefix = f"FNO_{name.upper()}_"
        raw = {field: env_vars[(prefix + key).lower()] for key, field in ENV_FIELDS.items()
               if env_vars.get((prefix + key).lower()) is not None}  # fmt: skip
        if "base_url" not in raw:
            problems.append(
                f"{prefix}BASE_URL is required (environment {name!r} is listed in FNO_ENVIRONMENTS)"
            )
            continue
        try:
            fe = FnoEnvironment(name=name, **raw)
        except ValidationError as exc:
            for e in exc.errors():
                problems.append(f"{prefix}{_where(e['loc']).upper()}: {e['msg']}")
            continue
        problems.extend(fe.problems())
        settings.environments[name] = fe


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting (``environ``, else the process environment); raise SettingsError
    naming all problems at once."""
    problems: list[str] = []
    settings, env_vars = _read_settings(environ, problems)
    if not settings.data_storage and not (settings.blob_service_uri and settings.table_service_uri):
        problems.append(
            "DATA_STORAGE (a connection string) or DATA_STORAGE__blobServiceUri and "
            "DATA_STORAGE__tableServiceUri (managed identity) must be set"
        )
    _environments(settings, env_vars, problems)
    if problems:
        raise SettingsError("invalid settings:\n  - " + "\n  - ".join(problems))
    return settings


@functools.cache
def get_settings() -> Settings:
    """Process-wide settings, validated on first use (which also applies ``LOG_LEVEL``)."""
    settings = load_settings()
    from dmf.logs import apply_log_level

    apply_log_level(settings.log_level)
    return settings
