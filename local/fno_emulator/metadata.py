"""F&O's metadata service and the DMF target map, served from the emulator's catalogue.

Shapes as documented in ``../shared/reference/fno-metadata-and-events.md``: ``/Metadata/DataEntities``,
``/Metadata/PublicEntities``, ``/Metadata/PublicEnumerations`` (collections ``{"@odata.context", "value"}``,
single items ``Set('Name')`` as the bare object with an ``/$entity`` context, 404 when unknown),
``/Metadata/Labels(Id='…',Language='…')`` and ``/data/DataManagementTargetMapEntities``. Query options:
``$filter`` (``eq`` joined by ``or``/``and``, ``tolower()``), ``$select``, ``$top``, ``$skip``; pages of
``metadata_page_size`` items end with ``@odata.nextLink``. String lengths appear only in the target map
(``FieldLength``), as in F&O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote, urlencode

from .config import CatalogueEntity, EmulatorConfig, EntityField

_TYPES = {
    "string": "String",
    "int": "Int32",
    "decimal": "Real",
    "date": "Date",
    "datetime": "UtcDateTime",
    "enum": "Enum",
}
_EDM = {"string": "Edm.String", "int": "Edm.Int32", "decimal": "Edm.Decimal", "date": "Edm.Date",
        "datetime": "Edm.DateTimeOffset"}  # fmt: skip
_ITEM = re.compile(r"^(\w+)\((.*)\)$")
_COND = re.compile(
    r"^\(?\s*(?:tolower\((\w+)\)|(\w+))\s+eq\s+(?:tolower\('((?:[^']|'')*)'\)|'((?:[^']|'')*)'|(true|false))\s*\)?$",
    re.IGNORECASE,
)


def _public_name(e: CatalogueEntity) -> str:
    t = e.target_entity
    return t[: -len("Entity")] if t.endswith("Entity") and len(t) > 6 else t


def data_entity(e: CatalogueEntity) -> dict:
    pub = _public_name(e)
    return {
        "Name": e.target_entity,
        "PublicEntityName": pub,
        "PublicCollectionName": pub + "s",
        "LabelId": f"@DMF:{e.target_entity}Label",
        "DataServiceEnabled": True,
        "DataManagementEnabled": True,
        "EntityCategory": "Master",
        "IsReadOnly": False,
    }


def _prop(f: EntityField, keys: list[str]) -> dict:
    enum = f.type == "enum"
    return {
        "Name": f.property_name,
        "TypeName": f"Microsoft.Dynamics.DataEntities.{f.enum_name}" if enum else _EDM[f.type],
        "DataType": _TYPES[f.type],
        "LabelId": f"@DMF:{f.property_name}",
        "IsKey": f.name in keys,
        "IsMandatory": f.mandatory or f.name in keys,
        "ConfigurationEnabled": True,
        "AllowEdit": True,
        "AllowEditOnCreate": True,
        "IsDimension": False,
    }


def public_entity(e: CatalogueEntity) -> dict:
    pub = _public_name(e)
    props = [_prop(f, e.keys) for f in e.fields]
    # Company-specific entities carry dataAreaId as a key; DMF fills it from the import's legal entity.
    props.append({"Name": "dataAreaId", "TypeName": "Edm.String", "DataType": "String", "LabelId": "@SYS13342",
                  "IsKey": True, "IsMandatory": True, "ConfigurationEnabled": True, "AllowEdit": False,
                  "AllowEditOnCreate": True, "IsDimension": False})  # fmt: skip
    return {
        "Name": pub,
        "EntitySetName": pub + "s",
        "LabelId": f"@DMF:{e.target_entity}Label",
        "IsReadOnly": False,
        "ConfigurationEnabled": True,
        "Properties": props,
        "NavigationProperties": [],
        "PropertyGroups": [],
        "Actions": [],
    }


def enumerations(config: EmulatorConfig) -> list[dict]:
    out: dict[str, dict] = {}
    for e in config.catalogue:
        for f in e.fields:
            if f.type == "enum" and f.enum_name not in out:
                out[f.enum_name] = {
                    "Name": f.enum_name,
                    "LabelId": f"@DMF:{f.enum_name}",
                    "Members": [
                        {
                            "Name": v,
                            "LabelId": f"@DMF:{f.enum_name}{v}",
                            "Value": i,
                            "ConfigurationEnabled": True,
                        }
                        for i, v in enumerate(f.values or [])
                    ],
                }
    return list(out.values())


def target_map(config: EmulatorConfig) -> list[dict]:
    rows = []
    for e in config.catalogue:
        for f in e.fields:
            rows.append(
                {
                    "Entity": e.label,
                    "StagingField": f.name,
                    "ShortStagingField": f.name[:30],
                    "TargetField": f.property_name,
                    "FieldAOTName": f.property_name,
                    "FieldLength": f.max_length or 0,
                    "IsRequired": "Yes" if (f.mandatory or f.name in e.keys) else "No",
                    "EntityLabel": e.label,
                    "IsFieldEnabled": "Yes",
                    "IsSystem": "No",
                    "ArrayIndex": 0,
                }
            )
    return rows


def _matches(flt: str | None) -> Callable[[dict], bool]:
    if not flt:
        return lambda item: True
    ors = []
    for part in re.split(r"\s+or\s+", flt.strip(), flags=re.IGNORECASE):
        ands = []
        for cond in re.split(
            r"\s+and\s+", part.strip().strip("()") if " or " not in part else part, flags=re.IGNORECASE
        ):
            m = _COND.match(cond.strip())
            if not m:
                raise ValueError(f"The query specified in the URI is not valid: {flt}")
            lower = m.group(1) is not None
            prop = m.group(1) or m.group(2)
            if m.group(5):
                value: object = m.group(5).lower() == "true"
            else:
                value = (m.group(3) if m.group(3) is not None else m.group(4)).replace("''", "'")
            ands.append((prop, value, lower or m.group(3) is not None))
        ors.append(ands)

    def ok(item: dict) -> bool:
        for ands in ors:
            good = True
            for prop, value, lower in ands:
                have = item.get(prop)
                if isinstance(value, bool):
                    good = good and have is value
                elif lower:
                    good = good and str(have).lower() == str(value).lower()
                else:
                    good = good and have == value
            if good:
                return True
        return False

    return ok


def collection(
    api_root: str, set_name: str, items: list[dict], query: dict[str, str], page_size: int, base_path: str
) -> dict:
    """One page of a collection answer, with ``@odata.nextLink`` when more items match."""
    found = [i for i in items if _matches(query.get("$filter"))(i)]
    skip = int(query.get("$skip") or 0)
    top = int(query["$top"]) if query.get("$top") else None
    wanted = found[skip:] if top is None else found[skip : skip + top]
    page = wanted[:page_size]
    select = [s.strip() for s in query["$select"].split(",")] if query.get("$select") else None
    value = [{k: v for k, v in i.items() if k in select} if select else i for i in page]
    body: dict = {"@odata.context": f"{api_root}{base_path}/$metadata#{set_name}", "value": value}
    if len(wanted) > page_size:
        nq = {k: v for k, v in query.items() if k not in ("$skip", "$top")}
        nq["$skip"] = str(skip + page_size)
        if top is not None:
            nq["$top"] = str(top - page_size)
        body["@odata.nextLink"] = f"{api_root}{base_path}/{set_name}?" + urlencode(nq, quote_via=quote)
    return body


def single(api_root: str, set_name: str, item: dict) -> dict:
    return {"@odata.context": f"{api_root}/Metadata/$metadata#{set_name}/$entity", **item}


def parse_item(segment: str) -> tuple[str, dict[str, str]] | None:
    """``Set('X')`` → (Set, {"": "X"}); ``Labels(Id='a',Language='b')`` → (Labels, {...})."""
    m = _ITEM.match(segment)
    if not m:
        return None
    inner = m.group(2)
    args: dict[str, str] = {}
    for km in re.finditer(r"(?:(\w+)\s*=\s*)?'((?:[^']|'')*)'", inner):
        args[km.group(1) or ""] = km.group(2).replace("''", "'")
    return m.group(1), args
