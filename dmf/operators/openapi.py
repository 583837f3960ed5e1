"""The OpenAPI 3 document of the app's HTTP API (``GET /api/openapi.json``), written by hand.

``tests/operators/test_openapi.py`` checks every HTTP route the app registers is described here.
"""

from __future__ import annotations

from typing import Any

_ERR = {
    "description": "why not",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_CHECK = {
    "description": "started: the standard Durable Functions check-status payload (Location header too)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CheckStatus"}}},
}


def _q(name: str, desc: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": desc,
        "schema": {"type": "string"},
    }


def _p(name: str, desc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": desc, "schema": {"type": "string"}}


def _ok(desc: str, schema: str | None = None, mime: str = "application/json") -> dict[str, Any]:
    content = {mime: {"schema": {"$ref": f"#/components/schemas/{schema}"} if schema else {"type": "string"}}}
    return {"description": desc, "content": content}


_DAY = _q("day", "UTC day, yyyyMMdd (default: today)")
_PAGE = [_q("top", "page size, 1-200 (default 50)"), _q("continuationToken", "from the previous page")]


def _listing(summary: str, kind: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "tags": ["outbound" if kind != "drop" else "inbound"],
            "parameters": [_DAY, *(extra or []), *_PAGE],
            "responses": {"200": _ok(f"a page of {kind} rows", "Page"), "400": _ERR},
        }
    }


PATHS: dict[str, dict[str, Any]] = {
    "/api/health": {
        "get": {
            "summary": "Settings validate (cheap); with deep=1: a token per F&O environment, storage, gates",
            "tags": ["health"],
            "parameters": [_q("deep", "1 for the deep check")],
            "responses": {
                "200": _ok("healthy", "Health"),
                "500": _ok("misconfigured", "Health"),
                "503": _ok("unhealthy: problems named", "Health"),
            },
        }
    },
    "/api/drops": _listing(
        "One day's drops, newest last, filtered",
        "drop",
        [
            _q("status", "e.g. Failed"),
            _q("environment", "F&O environment name"),
            _q("project", "DMF data project"),
            _q("legalEntity", "legal entity (company)"),
            _q("source", "source blob prefix, container/path"),
        ],
    ),
    "/api/drops/{id}": {
        "get": {
            "summary": "A drop: packages, F&O's errors, error-file links (read SAS, 15 minutes), retries, live progress",
            "tags": ["inbound"],
            "parameters": [_p("id", "drop id (drop-…)"), _q("day", "its day, if known (saves a lookup)")],
            "responses": {"200": _ok("the drop", "Drop"), "400": _ERR, "404": _ERR},
        }
    },
    "/api/drops/{id}/retry": {
        "post": {
            "summary": "Import again the packages that ended Failed or TimedOut (never a Succeeded one), new execution ids",
            "tags": ["inbound"],
            "parameters": [_p("id", "drop id")],
            "responses": {"202": _CHECK, "404": _ERR, "409": _ERR},
        }
    },
    "/api/drops/{id}/cancel": {
        "post": {
            "summary": "Cancel a drop waiting at the import gate (nothing reaches F&O)",
            "tags": ["inbound"],
            "parameters": [_p("id", "drop id")],
            "responses": {"202": _ok("canceled", "Canceled"), "404": _ERR, "409": _ERR},
        }
    },
    "/api/files": {
        "get": {
            "summary": "Every drop of one blob name, newest first (from the index, never a scan)",
            "tags": ["inbound"],
            "parameters": [_q("path", "container/name of the dropped blob", True)],
            "responses": {"200": _ok("its drops", "FileHistory"), "400": _ERR},
        }
    },
    "/api/fno/events": {
        "post": {
            "summary": "F&O's DMF import-status business event (or an Event Grid delivery of it): wakes the waiting "
            "import; unknown, duplicate and late events are acknowledged and ignored",
            "tags": ["inbound"],
            "responses": {"200": _ok("accepted or ignored, with why"), "400": _ERR, "404": _ERR},
        }
    },
    "/api/metadata/refresh": {
        "post": {
            "summary": "Refresh the entity metadata snapshots pre-flight reads (per F&O environment)",
            "tags": ["inbound"],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "environment": {
                                    "type": "string",
                                    "description": "one environment (default: all)",
                                },
                            },
                        }
                    }
                },
            },
            "responses": {"200": _ok("refreshed"), "400": _ERR, "502": _ERR},
        }
    },
    "/api/gates": {
        "get": {
            "summary": "Holders, waiters and pause state of every environment's import gate (read-only)",
            "tags": ["gates"],
            "responses": {"200": _ok("the gates", "Gates")},
        }
    },
    "/api/gates/{environment}/pause": {
        "post": {
            "summary": "No new import starts; imports in flight finish; waiters keep their place",
            "tags": ["gates"],
            "parameters": [_p("environment", "F&O environment name")],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "properties": {"reason": {"type": "string"}}}
                    }
                },
            },
            "responses": {"200": _ok("the gate now", "Gate"), "404": _ERR},
        }
    },
    "/api/gates/{environment}/resume": {
        "post": {
            "summary": "Let imports start again (the first waiters are woken at once)",
            "tags": ["gates"],
            "parameters": [_p("environment", "F&O environment name")],
            "responses": {"200": _ok("the gate now", "Gate"), "404": _ERR},
        }
    },
    "/api/outbound/drains": _listing("One day's drain runs of recurring exports", "drain"),
    "/api/outbound/messages": _listing("One day's drained messages", "message"),
    "/api/outbound/exports": _listing("One day's scheduled export runs", "export"),
    "/api/outbound/drains/{name}": {
        "post": {
            "summary": "Drain one configured recurring export now (same no-overlap guard as the timer)",
            "tags": ["outbound"],
            "parameters": [_p("name", "RECURRING_EXPORTS entry")],
            "responses": {"202": _CHECK, "404": _ERR, "409": _ERR},
        }
    },
    "/api/outbound/exports/{name}": {
        "post": {
            "summary": "Run one configured export job now, outside its schedule",
            "tags": ["outbound"],
            "parameters": [_p("name", "EXPORT_JOBS entry")],
            "responses": {"202": _CHECK, "404": _ERR, "409": _ERR},
        }
    },
    "/api/openapi.json": {
        "get": {
            "summary": "This document",
            "tags": ["docs"],
            "responses": {"200": {"description": "OpenAPI 3.0"}},
        }
    },
    "/api/console": {
        "get": {
            "summary": "The operators' console (HTML); open it with ?code=<function key>",
            "tags": ["docs"],
            "responses": {"200": _ok("the page", None, "text/html")},
        }
    },
}

_obj = {"type": "object", "additionalProperties": True}
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
    "CheckStatus": {
        "type": "object",
        "properties": {
            k: {"type": "string"}
            for k in (
                "id",
                "statusQueryGetUri",
                "sendEventPostUri",
                "terminatePostUri",
                "rewindPostUri",
                "purgeHistoryDeleteUri",
                "restartPostUri",
                "suspendPostUri",
                "resumePostUri",
            )
        },
        "required": ["id", "statusQueryGetUri"],
    },
    "Page": {
        "type": "object",
        "properties": {
            "day": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Row"}},
            "continuationToken": {"type": "string", "nullable": True},
        },
    },
    "Row": {
        "type": "object",
        "description": "an outcome row (docs/OUTCOMES.md), columns in camelCase",
        "properties": {
            k: {"type": "string"}
            for k in (
                "id",
                "kind",
                "status",
                "reason",
                "source",
                "environment",
                "legalEntity",
                "project",
                "startedAt",
                "finishedAt",
            )
        },
        "additionalProperties": True,
    },
    "ErrorFile": {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "url": {"type": "string", "description": "read-only SAS link"},
            "expires": {"type": "string"},
        },
    },
    "Package": {
        "allOf": [
            {"$ref": "#/components/schemas/Row"},
            {
                "type": "object",
                "properties": {
                    "seq": {"type": "integer"},
                    "errorFiles": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorFile"}},
                },
            },
        ]
    },
    "Drop": {
        "allOf": [
            {"$ref": "#/components/schemas/Row"},
            {
                "type": "object",
                "properties": {
                    "packages": {"type": "array", "items": {"$ref": "#/components/schemas/Package"}},
                    "rejected": {"type": "array", "items": _obj},
                    "retries": {"type": "array", "items": _obj},
                    "retriable": {"type": "array", "items": {"type": "integer"}},
                    "live": {
                        "type": "object",
                        "nullable": True,
                        "description": "the orchestration's custom status",
                    },
                },
            },
        ]
    },
    "FileHistory": {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "drops": {"type": "array", "items": {"$ref": "#/components/schemas/Row"}},
        },
    },
    "Canceled": {
        "type": "object",
        "properties": {
            "drop": {"type": "string"},
            "canceled": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Gate": {
        "type": "object",
        "properties": {
            "environment": {"type": "string"},
            "permits": {"type": "integer"},
            "paused": {"type": "boolean"},
            "paused_by": {"type": "string", "nullable": True},
            "holders": {"type": "array", "items": _obj},
            "waiters": {"type": "array", "items": _obj},
        },
    },
    "Gates": {
        "type": "object",
        "properties": {"gates": {"type": "array", "items": {"$ref": "#/components/schemas/Gate"}}},
    },
    "Health": {
        "type": "object",
        "properties": {
            "status": {"type": "string"},
            "problems": {"type": "array", "items": {"type": "string"}},
            "checks": _obj,
        },
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "F&O DMF integration: operators' API",
            "version": "1",
            "description": "Every route needs a function key (x-functions-key header or ?code=), or App Service "
            "authentication in front (docs/OPERATIONS.md).",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
            },
        },
        "security": [{"functionKey": []}, {"functionKeyQuery": []}],
        "paths": PATHS,
    }
