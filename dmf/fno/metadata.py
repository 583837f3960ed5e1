"""Entity metadata from the F&O environment itself, as a compact snapshot for pre-flight checks.

Sources (``../shared/reference/fno-metadata-and-events.md``; V = verified there, I = inferred):

- ``/Metadata/DataEntities`` ($select Name, PublicEntityName, PublicCollectionName, LabelId): every entity's
  AOT name ↔ public entity name ↔ entity set name (V). Read once per snapshot, streamed item by item, so
  only three short strings per entity are kept (for the label mapping and "did you mean" suggestions).
- ``/data/DataManagementTargetMapEntities?$filter=Entity eq '<label>'``: the DMF label's staging fields
  (``StagingField``), the entity property each feeds (``TargetField``), ``FieldLength`` and ``IsRequired``
  (V: entity exists; field semantics I). This is the only source of string lengths; absent = no length check.
- ``/Metadata/PublicEntities('<public name>')``: each property's ``DataType``, ``IsMandatory``, ``IsKey``
  and ``TypeName`` (the enum's name for Enum properties) (V).
- ``/Metadata/PublicEnumerations('<enum>')``: the enum's ``Members`` (``Name``, ``Value``) (V).
- ``/Metadata/Labels(Id='…',Language='…')``: a label's text, used only to find the entity of a DMF label
  that neither the catalogue nor the names list maps (V: no label search, so candidates come from difflib).

Only what the routes need is fetched (their fixed entity labels and the catalogue's); a label met later
is looked up once and cached (``Snapshot.unknown`` remembers labels with no DMF mapping). Every call goes
through the environment's ``FnoHttp`` (same auth and retry rules as the Package API: GETs are safe to repeat).
Large answers are parsed incrementally (``iter_odata_items``): pages of ``@odata.nextLink`` are followed and
no page is held whole.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from dmf.fno.errors import FnoError
from dmf.fno.http import FnoHttp

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
_ENUM_PREFIX = "Microsoft.Dynamics.DataEntities."
_CHUNK = 64 * 1024
MAX_ITEM_CHARS = 16 * 1024 * 1024  # one OData item bigger than this is refused (bounded memory)
_TYPES = {
    "String": "string",
    "Int32": "int",
    "Int64": "int",
    "Real": "real",
    "Date": "date",
    "UtcDateTime": "datetime",
    "Enum": "enum",
    "Guid": "guid",
}
# Properties F&O fills from the import's legal entity: never "missing" in a file.
_IMPLICIT = {"DATAAREAID"}


class MetadataError(ValueError):
    """An answer of the metadata service that cannot be read."""


# -- streaming OData reader ------------------------------------------------------------------------
def iter_json_array_items(chunks: Iterable[str], key: str = "value") -> Iterator[tuple[str, Any]]:
    """Yield ``("item", obj)`` for each element of the top-level ``key`` array of a JSON object read
    from text ``chunks``, then ``("tail", dict)`` with the object's other top-level properties (e.g.
    ``@odata.nextLink``). Holds one item (plus one chunk) at a time."""
    dec = json.JSONDecoder()
    text = _Text(chunks)
    head = _before_array(text, key)
    while (obj := _next_item(text, dec)) is not _END:
        yield "item", obj
    yield "tail", _tail(head, text.drain())


class _Text:
    """The text read so far from the chunks, and the position of the next character to read."""

    def __init__(self, chunks: Iterable[str]) -> None:
        self.it = iter(chunks)
        self.buf = ""
        self.pos = 0

    def more(self) -> bool:
        """Read the next non-empty chunk (dropping what was read before ``pos``); False at the end."""
        for c in self.it:
            if c:
                self.buf = self.buf[self.pos :] + c
                self.pos = 0
                return True
        return False

    def drain(self) -> str:
        """The rest of the text, bounded (it follows the array: a few small properties)."""
        rest = self.buf[self.pos :]
        for c in self.it:
            rest += c
            if len(rest) > MAX_ITEM_CHARS:
                raise MetadataError("the answer's tail is too large")
        return rest


_END = object()


def _before_array(text: _Text, key: str) -> str:
    """Find the array: everything before it is small (the context, maybe a count or a nextLink)."""
    marker = re.compile(r'"' + re.escape(key) + r'"\s*:\s*\[')
    while True:
        m = marker.search(text.buf)
        if m:
            text.pos = m.end()
            return text.buf[: m.start()]
        if len(text.buf) > MAX_ITEM_CHARS or not text.more():
            raise MetadataError(f"no {key!r} array in the answer")


def _next_item(text: _Text, dec: json.JSONDecoder) -> Any:
    """The array's next element, or ``_END`` past its closing bracket."""
    while True:
        while text.pos < len(text.buf) and text.buf[text.pos] in " \t\r\n,":
            text.pos += 1
        if text.pos >= len(text.buf):
            if not text.more():
                raise MetadataError("the answer ends inside its array")
            continue
        if text.buf[text.pos] == "]":
            text.pos += 1
            return _END
        try:
            obj, text.pos = dec.raw_decode(text.buf, text.pos)
            return obj
        except json.JSONDecodeError:
            if len(text.buf) - text.pos > MAX_ITEM_CHARS:
                raise MetadataError(f"an item is larger than {MAX_ITEM_CHARS} characters") from None
            if not text.more():
                raise MetadataError("the answer ends inside an item") from None


def _tail(head: str, rest: str) -> dict[str, Any]:
    """The object's properties before and after the array."""
    tail: dict[str, Any] = {}
    for part in (head.strip().rstrip(",").lstrip("{"), rest.strip().lstrip(",").rstrip().rstrip("}")):
        if part.strip():
            try:
                tail.update(json.loads("{" + part + "}"))
            except json.JSONDecodeError as exc:
                raise MetadataError(f"unreadable properties beside the array: {exc}") from None
    return tail


def _text_chunks(resp: Any) -> Iterator[str]:
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8-sig")("replace")
    try:
        for b in resp.iter_content(_CHUNK):
            yield decoder.decode(b)
        yield decoder.decode(b"", final=True)
    finally:
        resp.close()


# -- client ------------------------------------------------------------------------------------------
class MetadataApi:
    """GETs against ``{api_root}/Metadata`` and ``{api_root}/data``; safe to repeat (idempotent)."""

    def __init__(self, http: FnoHttp, api_root: str) -> None:
        self.http = http
        self.root = api_root.rstrip("/")

    def _get(self, url: str, action: str, params: dict[str, str] | None = None) -> Any:
        return self.http.request(
            "GET",
            url,
            action=action,
            idempotent=True,
            params=params,
            headers={"Accept": "application/json", "OData-Version": "4.0"},
            stream=True,
        )

    def iter_collection(self, path: str, params: dict[str, str] | None = None) -> Iterator[dict]:
        """Every item of an OData collection, following ``@odata.nextLink`` page by page."""
        url: str | None = f"{self.root}/{path}"
        action = path.split("?")[0].split("(")[0]
        pages = 0
        while url:
            resp = self._get(url, action, params)
            params = None  # a nextLink carries its own query
            next_url = None
            for kind, obj in iter_json_array_items(_text_chunks(resp)):
                if kind == "item":
                    yield obj
                else:
                    next_url = obj.get("@odata.nextLink")
            pages += 1
            if pages > 100_000:
                raise MetadataError(f"{action}: too many pages")
            url = next_url

    def item(self, path: str) -> dict | None:
        """One item (``Set('Key')``); None when F&O answers 404."""
        try:
            resp = self._get(f"{self.root}/{path}", path.split("(")[0])
        except FnoError as exc:
            if exc.status == 404:
                return None
            raise
        try:
            raw = resp.raw.read(MAX_ITEM_CHARS + 1, decode_content=True)
        finally:
            resp.close()
        if len(raw) > MAX_ITEM_CHARS:
            raise MetadataError(f"{path}: the answer is larger than {MAX_ITEM_CHARS} bytes")
        return json.loads(raw.decode("utf-8-sig"))

    def data_entities(self) -> Iterator[dict]:
        return self.iter_collection(
            "Metadata/DataEntities", {"$select": "Name,PublicEntityName,PublicCollectionName,LabelId"}
        )

    def target_map(self, label: str) -> list[dict]:
        flt = f"Entity eq '{_odata_quote(label)}'"
        return list(self.iter_collection("data/DataManagementTargetMapEntities", {"$filter": flt}))

    def public_entity(self, name: str) -> dict | None:
        return self.item(f"Metadata/PublicEntities('{quote(_odata_quote(name), safe='')}')")

    def enumeration(self, name: str) -> dict | None:
        return self.item(f"Metadata/PublicEnumerations('{quote(_odata_quote(name), safe='')}')")

    def label_text(self, label_id: str, language: str) -> str | None:
        item = self.item(
            f"Metadata/Labels(Id='{quote(_odata_quote(label_id), safe='@')}',"
            f"Language='{quote(_odata_quote(language), safe='')}')"
        )
        return None if item is None else item.get("Value")


def _odata_quote(text: str) -> str:
    return text.replace("'", "''")


# -- snapshot ------------------------------------------------------------------------------------------
@dataclass
class FieldMeta:
    staging: str  # DMF staging field name, upper case (what file headers and manifests use)
    type: str = "string"  # string | int | real | date | datetime | enum | guid | other
    mandatory: bool = False
    key: bool = False
    length: int | None = None  # from DataManagementTargetMapEntities.FieldLength (0/absent: unknown)
    enum: str | None = None
    prop: str | None = None  # the entity property (TargetField)

    def compact(self) -> list:
        return [self.type, int(self.mandatory), int(self.key), self.length, self.enum, self.prop]

    @classmethod
    def from_compact(cls, staging: str, v: list) -> FieldMeta:
        return cls(staging, v[0], bool(v[1]), bool(v[2]), v[3], v[4], v[5])


@dataclass
class EntityMeta:
    label: str
    name: str | None  # AOT entity name
    public: str | None  # public entity name
    entity_set: str | None
    fields: dict[str, FieldMeta] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)


@dataclass
class Snapshot:
    environment: str
    fetched_at: str
    language: str = "en-us"
    names: list[list[str]] = field(default_factory=list)  # [AOT name, public name, set name, label id]
    entities: dict[str, EntityMeta] = field(default_factory=dict)  # by casefolded label
    enums: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # labels with no DMF mapping

    def entity(self, label: str) -> EntityMeta | None:
        return self.entities.get(label.strip().casefold())

    def is_unknown(self, label: str) -> bool:
        return label.strip().casefold() in {u.casefold() for u in self.unknown}

    def names_map(self) -> dict[str, list[str]]:
        """AOT name / public name / set name (casefolded) → the entity's three names."""
        out: dict[str, list[str]] = {}
        for row in self.names:
            for n in row[:3]:
                if n:
                    out.setdefault(n.casefold(), row)
        return out

    def suggestions(self, label: str, n: int = 3) -> list[str]:
        """Closest known labels (then entity names) to ``label``."""
        labels = [e.label for e in self.entities.values()]
        found = difflib.get_close_matches(label, labels, n=n, cutoff=0.6)
        if len(found) < n:
            pool = {x for row in self.names for x in row[:2] if x}
            squashed = label.replace(" ", "")
            found += [
                m
                for m in difflib.get_close_matches(squashed, sorted(pool), n=n, cutoff=0.6)
                if m not in found
            ]
        return found[:n]

    def to_json(self) -> dict:
        return {
            "format": SNAPSHOT_FORMAT,
            "environment": self.environment,
            "fetched_at": self.fetched_at,
            "language": self.language,
            "names": self.names,
            "entities": {
                k: {
                    "label": e.label,
                    "name": e.name,
                    "public": e.public,
                    "set": e.entity_set,
                    "sources": e.sources,
                    "fields": {s: f.compact() for s, f in e.fields.items()},
                }
                for k, e in self.entities.items()
            },
            "enums": {k: [list(m) for m in v] for k, v in self.enums.items()},
            "unknown": self.unknown,
        }

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: dict) -> Snapshot:
        if data.get("format") != SNAPSHOT_FORMAT:
            raise MetadataError(f"unsupported snapshot format {data.get('format')!r}")
        snap = cls(data["environment"], data["fetched_at"], data.get("language", "en-us"))
        snap.names = data.get("names", [])
        for k, e in data.get("entities", {}).items():
            snap.entities[k] = EntityMeta(
                e["label"],
                e.get("name"),
                e.get("public"),
                e.get("set"),
                {s: FieldMeta.from_compact(s, v) for s, v in e.get("fields", {}).items()},
                e.get("sources", []),
            )
        snap.enums = {k: [(m[0], int(m[1])) for m in v] for k, v in data.get("enums", {}).items()}
        snap.unknown = list(data.get("unknown", []))
        return snap

    @classmethod
    def loads(cls, raw: bytes | str) -> Snapshot:
        return cls.from_json(json.loads(raw))


# -- building a snapshot ---------------------------------------------------------------------------------
def _camel_words(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("Entity", "").strip()


def _no_yes(v: Any) -> bool:
    return str(v).strip().casefold() in ("yes", "true", "1")


class SnapshotBuilder:
    """Fetches what the given labels need and folds it into a ``Snapshot``."""

    def __init__(self, api: MetadataApi, environment: str, language: str = "en-us") -> None:
        self.api = api
        self.snapshot = Snapshot(environment, datetime.now(UTC).isoformat(timespec="seconds"), language)
        self._by_name: dict[str, list[str]] | None = None

    @classmethod
    def extend(cls, api: MetadataApi, snapshot: Snapshot) -> SnapshotBuilder:
        b = cls(api, snapshot.environment, snapshot.language)
        b.snapshot = snapshot
        return b

    def load_names(self) -> None:
        names: list[list[str]] = []
        for item in self.api.data_entities():
            row = [
                item.get("Name") or "",
                item.get("PublicEntityName") or "",
                item.get("PublicCollectionName") or "",
                item.get("LabelId") or "",
            ]
            names.append(row)
        self.snapshot.names = names
        self._by_name = None

    def _names(self) -> dict[str, list[str]]:
        if self._by_name is None:
            self._by_name = self.snapshot.names_map()
        return self._by_name

    def _resolve_names(self, label: str, hint: str | None) -> list[str] | None:
        """The [AOT, public, set] names of a DMF label: the catalogue's hint, a name equal to the label
        without spaces, else the label texts of the closest names (difflib) compared in the language."""
        by = self._names()
        for cand in (hint, label.replace(" ", ""), label.replace(" ", "") + "Entity"):
            if cand and cand.casefold() in by:
                return by[cand.casefold()]
        words = {_camel_words(row[0]).casefold(): row for row in self.snapshot.names if row[0]}
        for cand in difflib.get_close_matches(label.casefold(), list(words), n=8, cutoff=0.4):
            row = words[cand]
            label_id = row[3] if len(row) > 3 else ""
            if (
                label_id
                and (self.api.label_text(label_id, self.snapshot.language) or "").casefold()
                == label.casefold()
            ):
                return row
        return None

    def add_label(self, label: str, hint: str | None = None) -> EntityMeta | None:
        """Fetch one DMF label's fields; None (and remembered as unknown) when F&O maps nothing for it."""
        rows = self.api.target_map(label)
        key = label.strip().casefold()
        if not rows:
            if key not in {u.casefold() for u in self.snapshot.unknown}:
                self.snapshot.unknown.append(label.strip())
            self.snapshot.entities.pop(key, None)
            return None
        self.snapshot.unknown = [u for u in self.snapshot.unknown if u.casefold() != key]
        names = self._resolve_names(label, hint)
        ent = EntityMeta(
            label.strip(),
            names[0] if names else hint,
            names[1] if names else None,
            names[2] if names else None,
            sources=["DataManagementTargetMapEntities"],
        )
        for r in rows:
            staging = str(r.get("StagingField") or "").strip().upper()
            if not staging:
                continue
            length = r.get("FieldLength")
            ent.fields[staging] = FieldMeta(
                staging,
                length=int(length) if isinstance(length, int | float) and length > 0 else None,
                mandatory=_no_yes(r.get("IsRequired")) if "IsRequired" in r else False,
                prop=(r.get("TargetField") or None),
            )
        if ent.public:
            pe = self.api.public_entity(ent.public)
            if pe is not None:
                ent.sources.append("PublicEntities")
                self._apply_properties(ent, pe.get("Properties") or [])
        self.snapshot.entities[key] = ent
        return ent

    def _apply_properties(self, ent: EntityMeta, props: list[dict]) -> None:
        by_target = {(f.prop or "").casefold(): f for f in ent.fields.values() if f.prop}
        for p in props:
            name = str(p.get("Name") or "")
            f = by_target.get(name.casefold()) or ent.fields.get(name.upper())
            if f is None:
                continue
            f.prop = f.prop or name
            f.type = _TYPES.get(str(p.get("DataType") or ""), "other")
            f.key = bool(p.get("IsKey"))
            if f.staging not in _IMPLICIT:
                f.mandatory = f.mandatory or bool(p.get("IsMandatory")) or f.key
            else:
                f.mandatory = False
            type_name = str(p.get("TypeName") or "")
            if f.type == "enum" and type_name.startswith(_ENUM_PREFIX):
                f.enum = type_name[len(_ENUM_PREFIX) :]
                if f.enum not in self.snapshot.enums:
                    self._add_enum(f.enum)
                if f.enum not in self.snapshot.enums:
                    f.type = "string"  # members unknown: no value check

    def _add_enum(self, name: str) -> None:
        item = self.api.enumeration(name)
        if item is None:
            return
        members = [
            (str(m.get("Name")), int(m.get("Value", i))) for i, m in enumerate(item.get("Members") or [])
        ]
        self.snapshot.enums[name] = members


def build_snapshot(
    api: MetadataApi,
    environment: str,
    labels: Iterable[tuple[str, str | None]],
    language: str = "en-us",
    on_error: Callable[[str, Exception], None] | None = None,
) -> Snapshot:
    """A fresh snapshot: the names list, then each (label, AOT name hint) the routes need."""
    b = SnapshotBuilder(api, environment, language)
    b.load_names()
    for label, hint in labels:
        try:
            b.add_label(label, hint)
        except (FnoError, MetadataError) as exc:
            if on_error is None:
                raise
            on_error(label, exc)
    return b.snapshot
