"""Emulator configuration: environment, credentials, data projects, entity catalogue, timings, faults.

Loaded from JSON (``EmulatorConfig.load``) or built in code. ``EmulatorConfig()`` is the demo default.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FieldType = Literal["string", "int", "decimal", "date", "datetime", "enum"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EntityField(_Model):
    name: str  # DMF field name as in EntityMap/EntityField, upper case (e.g. CUSTOMERGROUPID)
    type: FieldType = "string"
    max_length: int | None = None
    values: list[str] | None = None  # enum values (labels as written in files)
    mandatory: bool = False
    # The entity property this staging field feeds (metadata: TargetField / PublicEntities property name)
    # and, for enums, the enum's name (PublicEnumerations). Derived when unset.
    target_field: str | None = None
    enum_type: str | None = None

    @property
    def property_name(self) -> str:
        return self.target_field or self.name[:1] + self.name[1:].lower()

    @property
    def enum_name(self) -> str:
        if self.enum_type:
            return self.enum_type
        if self.values == ["No", "Yes"]:
            return "NoYes"
        return self.property_name + "Enum"


class CatalogueEntity(_Model):
    label: str  # DMF entity label, what manifests carry in EntityName ("Customer groups")
    target_entity: str  # AOT entity name ("CustCustomerGroupEntity")
    keys: list[str]
    fields: list[EntityField]
    composite: bool = False
    # Extended entities: mapped fields missing from the catalogue are accepted as untyped strings.
    open_fields: bool = False
    # For a composite entity: labels of the child entities, root first; records nest in that order in XML.
    children: list[str] = Field(default_factory=list)

    def field(self, name: str) -> EntityField | None:
        upper = name.upper()
        return next((f for f in self.fields if f.name == upper), None)


class ProjectEntity(_Model):
    entity: str  # label
    source_format: str = "CSV-Unicode"


class DataProject(_Model):
    name: str
    operation: Literal["import", "export"] = "import"
    entities: list[ProjectEntity] = Field(default_factory=list)
    base_seconds: float | None = None  # None: EmulatorConfig.timings defaults
    per_row_seconds: float | None = None


class SourceFormat(_Model):
    """A DMF data-source format. ``unicode`` formats need UTF-16 LE with BOM, as F&O checks."""

    name: str
    kind: Literal["delimited", "excel", "xml-attribute", "xml-element"]
    delimiter: str = ","
    unicode: bool = False
    encoding: str = "utf-8"  # for non-unicode delimited files (code page 65001)
    first_row_header: bool = True


class Credential(_Model):
    tenant: str
    client_id: str
    client_secret: str


class RecurringActivity(_Model):
    activity_id: str  # GUID with braces as F&O shows it on "Manage scheduled data jobs"
    direction: Literal["import", "export"]
    data_project: str
    legal_entity: str = "USMF"
    use_company_from_message: bool = True
    entity: str | None = None  # default entity label for "File" jobs
    source_format: str = "CSV-Unicode"
    package: bool = False  # "Data package" job: body is a zip with Manifest.xml


class Timings(_Model):
    not_found_seconds: float = 1.0  # GetExecutionSummaryStatus answers 400 "not found" this long
    queue_seconds: float = 2.0  # NotRun phase before Executing
    import_base_seconds: float = 5.0
    import_per_row_seconds: float = 0.01
    export_base_seconds: float = 5.0
    export_per_row_seconds: float = 0.005
    error_keys_file_seconds: float = 2.0  # GetImportTargetErrorKeysFileUrl is "" this long after Generate
    exported_url_delay_seconds: float = 0.0  # GetExportedPackageUrl is "" this long after Succeeded
    recurring_pickup_seconds: float = 5.0  # Enqueued -> Processing
    visibility_timeout_seconds: float = 1800.0  # un-acked outbound message dequeues again after this
    sas_ttl_seconds: float = 2100.0  # ~35 min, as observed
    retention_seconds: float = 7 * 24 * 3600.0  # DMF blob files are deleted after 7 days
    token_lifetime_seconds: int = 3599


class FaultRule(_Model):
    endpoint: str  # action name (ImportFromPackage), "token", "enqueue", "dequeue", "ack", "download", or "*"
    # Before the handler (nothing happens): 429, 500, 502, 503, slow, drop. After the handler (its effects
    # stay, the answer is lost): after_500, after_502, after_503 (the client gets that error instead),
    # after_drop (connection reset instead of the answer), after_hang (no answer for delay_seconds of real
    # time, then a reset: set it above the client's timeout). In the answer: sas_expired (the handler runs,
    # but a SAS URL it hands out expires delay_seconds after issue, by real and emulator time; 0 = already).
    kind: Literal[
        "429", "500", "502", "503", "slow", "drop", "after_500", "after_502", "after_503", "after_drop",
        "after_hang", "sas_expired",
    ]  # fmt: skip
    rate: float | None = None  # probability per call
    next_n: int | None = None  # the next N matching calls
    retry_after: int | None = None  # seconds: Retry-After of a 429 (1 when unset); of a 5xx only when set
    delay_seconds: float = 2.0  # for slow and after_hang; the SAS lifetime for sas_expired
    until: datetime | None = None  # the rule stops applying at this emulator time (an outage window)

    @model_validator(mode="after")
    def _one_trigger(self) -> FaultRule:
        if self.rate is None and self.next_n is None:
            raise ValueError("a fault needs rate or next_n")
        return self


def _f(name: str, type_: FieldType = "string", **kw: object) -> EntityField:
    return EntityField(name=name, type=type_, **kw)  # type: ignore[arg-type]


def default_catalogue() -> list[CatalogueEntity]:
    yes_no = ["No", "Yes"]
    return [
        CatalogueEntity(
            label="Customer groups",
            target_entity="CustCustomerGroupEntity",
            keys=["CUSTOMERGROUPID"],
            fields=[
                _f("CUSTOMERGROUPID", max_length=10),
                _f("DESCRIPTION", max_length=60),
                _f("PAYMENTTERMID", max_length=10),
                _f("CLEARINGPERIODPAYMENTTERMNAME", max_length=10),
                _f("DEFAULTDIMENSIONDISPLAYVALUE", max_length=500),
                _f("ISSALESTAXINCLUDEDINPRICE", "enum", values=yes_no),
                _f("TAXGROUPID", max_length=10),
                _f("WRITEOFFREASON", max_length=10),
            ],
        ),
        CatalogueEntity(
            label="Customers V3",
            target_entity="CustCustomerV3Entity",
            keys=["CUSTOMERACCOUNT"],
            fields=[
                _f("CUSTOMERACCOUNT", max_length=20),
                _f("ORGANIZATIONNAME", max_length=100),
                _f("CUSTOMERGROUPID", max_length=10, mandatory=True),
                _f("CURRENCY", max_length=3),
                _f("CREDITLIMIT", "decimal"),
                _f("PAYMENTTERMS", max_length=10),
                _f("SALESCURRENCYCODE", max_length=3),
                _f("PARTYTYPE", "enum", values=["Organization", "Person"]),
                _f("CREDITRATING", max_length=10),
                _f("CUSTOMERSINCEDATE", "date"),
                _f("INVOICEACCOUNT", max_length=20),
                _f("ADDRESSCITY", max_length=60),
                _f("ADDRESSCOUNTRYREGIONID", max_length=10),
                _f("PRIMARYCONTACTEMAIL", max_length=255),
            ],
        ),
        CatalogueEntity(
            label="Customer definitions",
            target_entity="CustCustomerBaseEntity",
            keys=["CUSTOMERACCOUNT"],
            fields=[
                _f("CUSTOMERACCOUNT", max_length=20),
                _f("ORGANIZATIONNAME", max_length=100),
                _f("CUSTOMERGROUPID", max_length=10),
                _f("PARTYTYPE", "enum", values=["Organization", "Person"]),
                _f("PARTYNUMBER", max_length=40),
                _f("NAMEALIAS", max_length=20),
                _f("CURRENCY", max_length=3),
                _f("CREDITLIMIT", "decimal"),
                _f("ADDRESSBOOKS", max_length=200),
                _f("ADDRESSCITY", max_length=60),
                _f("ADDRESSCOUNTRYREGIONID", max_length=10),
                _f("ADDRESSCOUNTRYREGIONISOCODE", max_length=10),
                _f("ADDRESSCOUNTY", max_length=10),
                _f("ADDRESSDESCRIPTION", max_length=60),
                _f("ADDRESSDISTRICTNAME", max_length=60),
                _f("LANGUAGEID", max_length=7),
                _f("PAYMENTTERMS", max_length=10),
                _f("SALESCURRENCYCODE", max_length=3),
                _f("PERSONFIRSTNAME", max_length=25),
                _f("PERSONLASTNAME", max_length=25),
            ],
            open_fields=True,  # customers' extensions add fields (the shared F&O sample maps ~200)
        ),
        CatalogueEntity(
            label="Fixed asset major type",
            target_entity="AssetMajorTypeEntity",
            keys=["MAJORTYPEID"],
            fields=[_f("MAJORTYPEID", max_length=20), _f("DESCRIPTION", max_length=60)],
        ),
        CatalogueEntity(
            label="Sales order headers V2",
            target_entity="SalesOrderHeaderV2Entity",
            keys=["SALESORDERNUMBER"],
            fields=[
                _f("SALESORDERNUMBER", max_length=20),
                _f("ORDERINGCUSTOMERACCOUNTNUMBER", max_length=20, mandatory=True),
                _f("CURRENCYCODE", max_length=3),
                _f("REQUESTEDSHIPPINGDATE", "date"),
            ],
        ),
        CatalogueEntity(
            label="Sales order lines V2",
            target_entity="SalesOrderLineV2Entity",
            keys=["SALESORDERNUMBER", "LINENUMBER"],
            fields=[
                _f("SALESORDERNUMBER", max_length=20),
                _f("LINENUMBER", "decimal"),
                _f("ITEMNUMBER", max_length=20, mandatory=True),
                _f("ORDEREDSALESQUANTITY", "decimal"),
                _f("SALESPRICE", "decimal"),
            ],
        ),
        CatalogueEntity(
            label="Sales orders composite V3",
            target_entity="SalesOrderV3CompositeEntity",
            keys=["SALESORDERNUMBER"],
            fields=[],
            composite=True,
            children=["Sales order headers V2", "Sales order lines V2"],
        ),
    ]


def default_source_formats() -> list[SourceFormat]:
    return [
        SourceFormat(name="CSV-Unicode", kind="delimited", unicode=True),
        SourceFormat(name="CSV", kind="delimited"),
        SourceFormat(name="EXCEL", kind="excel"),
        SourceFormat(name="XML-Attribute", kind="xml-attribute"),
        SourceFormat(name="XML-Element", kind="xml-element"),
    ]


def default_projects() -> list[DataProject]:
    return [
        DataProject(name="CustomerGroups-Import", entities=[ProjectEntity(entity="Customer groups")]),
        DataProject(
            name="CustomerGroups-Export",
            operation="export",
            entities=[ProjectEntity(entity="Customer groups")],
        ),
        DataProject(name="Customers-Import", entities=[ProjectEntity(entity="Customers V3")]),
        DataProject(
            name="Customers-Export", operation="export", entities=[ProjectEntity(entity="Customers V3")]
        ),
        DataProject(
            name="CustomerDefinitions-Import",
            entities=[ProjectEntity(entity="Customer definitions", source_format="XML-Attribute")],
        ),
        DataProject(
            name="Asset-Major-Types",
            entities=[ProjectEntity(entity="Fixed asset major type", source_format="EXCEL")],
        ),
        DataProject(
            name="SalesOrders-Import",
            entities=[ProjectEntity(entity="Sales orders composite V3", source_format="XML-Element")],
        ),
    ]


class EmulatorConfig(_Model):
    deployment: Literal["cloud", "onprem"] = "cloud"
    credentials: list[Credential] = Field(
        default_factory=lambda: [
            Credential(
                tenant="emulator-tenant",
                client_id="emulator-client",
                client_secret="emulator-secret-not-real",
            )
        ]
    )
    legal_entities: list[str] = Field(default_factory=lambda: ["USMF", "USRT", "DEMF"])
    data_projects: list[DataProject] = Field(default_factory=default_projects)
    catalogue: list[CatalogueEntity] = Field(default_factory=default_catalogue)
    source_formats: list[SourceFormat] = Field(default_factory=default_source_formats)
    recurring: list[RecurringActivity] = Field(
        default_factory=lambda: [
            RecurringActivity(
                activity_id="{6D31E09F-0249-459F-94F0-AAD9C2C47B64}",
                direction="export",
                data_project="CustomerGroups-Export",
                package=True,
            ),
            RecurringActivity(
                activity_id="{A0F6F6E5-6F1B-4E4A-9B7D-1E2C3D4F5A6B}",
                direction="import",
                data_project="CustomerGroups-Import",
                entity="Customer groups",
            ),
        ]
    )
    timings: Timings = Field(default_factory=Timings)
    faults: list[FaultRule] = Field(default_factory=list)
    parallel_imports: int = 1  # >1 models "enhanced parallel package import"
    require_crlf: bool = True  # LF-only delimited files fail with F&O's misleading mapping error
    download_location_http: bool = False  # DownloadLocation comes back as http:// (behind the LB)
    nested_value_quirk: bool = False  # ExportToPackage/GetExportedPackageUrl as the docs print them
    blob_container: str = "dmf"
    max_enqueue_bytes: int | None = None  # enqueue bodies above this get 413 (a 50 MB XML did, RIS #135)
    admin_key: str | None = None  # when set, /_emulator/* requires header x-emulator-admin-key
    fault_seed: int | None = None
    call_log_size: int = 200_000  # calls kept for admin.calls(); admin.call_counts() counts them all
    # DMF import-status business event (business_events.py): posted here when an import finishes
    business_events_url: str | None = None
    business_events_key: str | None = None
    metadata_page_size: int = 1000  # items per page of /Metadata and /data collections (@odata.nextLink)
    # Real-time delay before every F&O call (Package API, OData, recurring connector including download), to
    # measure clients against F&O-like round trips (benchmarks). Not the token endpoint (Entra ID is another
    # service, and tokens are cached) nor the /_emulator admin routes.
    api_latency_ms: float = 0.0

    @classmethod
    def load(cls, path: str | Path) -> EmulatorConfig:
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))

    def latency_seconds(self, endpoint: str) -> float:
        """The delay ``api_latency_ms`` adds to a call routed to ``endpoint`` (0 for token and admin)."""
        if endpoint in ("token", "discovery", "not-found") or endpoint.startswith("admin"):
            return 0.0
        return self.api_latency_ms / 1000

    def entity(self, name: str, label_only: bool = False) -> CatalogueEntity | None:
        """Look up by label or (unless ``label_only``, as for manifests) by target entity name,
        case-insensitively."""
        low = name.strip().lower()
        return next(
            (
                e
                for e in self.catalogue
                if e.label.lower() == low or (not label_only and e.target_entity.lower() == low)
            ),
            None,
        )

    def project(self, name: str) -> DataProject | None:
        low = name.lower()
        return next((p for p in self.data_projects if p.name.lower() == low), None)

    def source_format(self, name: str) -> SourceFormat | None:
        low = name.lower()
        return next((s for s in self.source_formats if s.name.lower() == low), None)

    def activity(self, activity_id: str) -> RecurringActivity | None:
        norm = activity_id.strip("{} ").lower()
        return next((a for a in self.recurring if a.activity_id.strip("{}").lower() == norm), None)
