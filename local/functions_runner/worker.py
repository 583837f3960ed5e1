"""The real Python worker's indexing and binding code, driven the way the host drives it.

The 4.x worker ships inside the Functions host; ``azure-functions-runtime`` (installed by
``scripts/setup.sh`` from ``requirements-worker.txt``) carries the same loader, function registry and
(deferred) binding converters. Indexing runs ``loader.process_indexed_function`` on every function, as
the worker does on the host's FunctionsMetadataRequest: a function it refuses makes the whole app fail to
load in Azure, so the runner refuses to start with the worker's own messages.

Invocations go through the worker's ``from_incoming_proto`` / ``to_outgoing_proto`` with real
``FunctionRpc`` protos, so a function receives exactly what the worker would hand it, and its return value
is checked and encoded as the worker does (a non-None return without a ``$return`` binding fails).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PROTOS_PACKAGE = "_functions_worker_rpc"  # private name: the wheel ships them as a top-level `tests`
_PROTOS_ENV = "FUNCTIONS_WORKER_PROTOS_DIR"


class WorkerUnavailable(RuntimeError):
    """The real worker's code is not installed (run scripts/setup.sh)."""


def _protos_dir() -> Path:
    if os.environ.get(_PROTOS_ENV):
        return Path(os.environ[_PROTOS_ENV])
    # scripts/setup.sh installs azure-functions-runtime-v1 with --target beside the venv's interpreter.
    return Path(sys.prefix) / "functions-worker-protos" / "tests" / "protos"


def load_protos() -> types.ModuleType:
    """The worker's compiled ``FunctionRpc_pb2`` module (without its grpc stubs, which need grpcio)."""
    mod_name = f"{_PROTOS_PACKAGE}.FunctionRpc_pb2"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    path = _protos_dir()
    if not (path / "FunctionRpc_pb2.py").exists():
        raise WorkerUnavailable(
            f"the Functions worker's RPC protos are not at {path}: run scripts/setup.sh "
            f"(or set {_PROTOS_ENV})"
        )
    pkg = types.ModuleType(_PROTOS_PACKAGE)
    pkg.__path__ = [str(path)]  # a namespace for the relative imports inside FunctionRpc_pb2
    sys.modules[_PROTOS_PACKAGE] = pkg
    return importlib.import_module(mod_name)


def _runtime() -> tuple[Any, Any, Any, Any]:
    try:
        from azure_functions_runtime import functions, loader
        from azure_functions_runtime.bindings import context, meta
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise WorkerUnavailable(
            f"azure-functions-runtime is not installed ({exc}): run scripts/setup.sh"
        ) from exc
    return functions, loader, meta, context


@dataclass
class Refusal:
    function: str
    message: str


class WorkerIndexError(RuntimeError):
    """The worker refused functions: on the host, indexing fails and no function of the app loads."""

    def __init__(self, refusals: list[Refusal], total: int) -> None:
        self.refusals = refusals
        lines = "\n".join(f"  {r.function}: {r.message}" for r in refusals)
        super().__init__(
            f"the Functions worker refused {len(refusals)} of {total} functions "
            f"(in Azure no function of this app would load):\n{lines}"
        )


def index(indexed_functions: list[Any], directory: str) -> tuple[Any, dict[str, Any], list[Refusal]]:
    """Run the worker's indexing on ``app.get_functions()``; return its registry, metadata and refusals."""
    functions, loader, meta, _ = _runtime()
    protos = load_protos()
    meta.load_binding_registry()
    registry = functions.Registry()
    metadata: dict[str, Any] = {}
    refusals: list[Refusal] = []
    for fn in indexed_functions:
        try:
            results, _logs = loader.process_indexed_function(protos, registry, [fn], directory)
        except Exception as exc:  # FunctionLoadError and whatever else the worker raises, as the host sees it
            refusals.append(Refusal(fn.get_function_name(), str(exc)))
            continue
        metadata[fn.get_function_name()] = results[0]
    return registry, metadata, refusals


class Worker:
    """Index an app with the real worker, then invoke its functions through the worker's converters."""

    def __init__(self, indexed_functions: list[Any], directory: str | None = None) -> None:
        self.directory = directory or os.getcwd()
        self.protos = load_protos()
        registry, self.metadata, refusals = index(indexed_functions, self.directory)
        if refusals:
            raise WorkerIndexError(refusals, len(indexed_functions))
        self._by_name = {md.name: registry.get_function(md.function_id) for md in self.metadata.values()}

    def info(self, name: str) -> Any:
        return self._by_name[name]

    def raw_bindings(self, name: str) -> list[dict[str, Any]]:
        """The bindings as the worker reports them to the host (deferred-binding properties included)."""
        return [json.loads(b) for b in self.metadata[name].raw_bindings]

    # ------------------------------------------------------------------ typed data the host would send
    def json_data(self, value: str) -> Any:
        return self.protos.TypedData(json=value)

    def string_data(self, value: str) -> Any:
        return self.protos.TypedData(string=value)

    def bytes_data(self, value: bytes) -> Any:
        return self.protos.TypedData(bytes=value)

    def http_data(
        self, method: str, url: str, headers: Mapping[str, str], query: Mapping[str, str],
        params: Mapping[str, str], body: bytes,
    ) -> Any:  # fmt: skip
        p = self.protos
        return p.TypedData(http=p.RpcHttp(
            method=method, url=url, headers=dict(headers), query=dict(query), params=dict(params),
            body=p.TypedData(bytes=body),
        ))  # fmt: skip

    def model_binding_data(self, source: str, content: dict[str, Any]) -> Any:
        p = self.protos
        return p.TypedData(model_binding_data=p.ModelBindingData(
            version="1.0", source=source, content_type="application/json", content=json.dumps(content).encode(),
        ))  # fmt: skip

    # ------------------------------------------------------------------ invocation
    def arguments(
        self, name: str, inputs: Mapping[str, Any], trigger_metadata: Mapping[str, Any] | None = None,
        invocation_id: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Decode each input binding with the worker's converters, as its invocation_request does."""
        _, _, meta, context = _runtime()
        fi = self._by_name[name]
        args: dict[str, Any] = {}
        for binding_name, data in inputs.items():
            tinfo = fi.input_types[binding_name]
            is_trigger = meta.is_trigger_binding(tinfo.binding_name)
            args[binding_name] = meta.from_incoming_proto(
                tinfo.binding_name,
                self.protos.ParameterBinding(name=binding_name, data=data),
                trigger_metadata=dict(trigger_metadata or {}) if is_trigger else None,
                pytype=tinfo.pytype,
                function_name=fi.name,
                is_deferred_binding=tinfo.deferred_bindings_enabled,
            )
        missing = set(fi.input_types) - set(args)
        if missing:
            raise RuntimeError(f"function {name}: no data for input bindings {sorted(missing)}")
        if fi.requires_context:
            req = self.protos.InvocationRequest(invocation_id=invocation_id or str(uuid.uuid4()))
            args["context"] = context.get_context(req, fi.name, self.directory)
        return args

    def encode_result(self, name: str, result: Any) -> Any:
        """The worker's checks and encoding of a return value: a TypedData, or None."""
        _, _, meta, _ = _runtime()
        fi = self._by_name[name]
        if result is not None and not fi.has_return:
            raise RuntimeError(f"function {fi.name!r} without a $return binding returned a non-None value")
        if fi.return_type is None:
            return None
        return meta.to_outgoing_proto(
            fi.return_type.binding_name, result, pytype=fi.return_type.pytype, protos=self.protos
        )

    def invoke(
        self, name: str, inputs: Mapping[str, Any], call: Callable[[Any, dict[str, Any], bool], Any],
        trigger_metadata: Mapping[str, Any] | None = None,
    ) -> Any:  # fmt: skip
        """Decode, call (``call(func, kwargs, is_async)``), check and encode: returns the result's TypedData."""
        fi = self._by_name[name]
        args = self.arguments(name, inputs, trigger_metadata)
        return self.encode_result(name, call(fi.func, args, fi.is_async))


def typed_value(td: Any) -> Any:
    """A TypedData's payload as the host reads it (JSON text, string, bytes, or an RpcHttp)."""
    if td is None:
        return None
    kind = td.WhichOneof("data")
    return None if kind is None else getattr(td, kind)


def index_app_file(script: Path) -> tuple[dict[str, list[dict[str, Any]]], list[Refusal]]:
    """The worker's whole indexing path on a ``function_app.py``: import it as the worker does
    (``loader.index_function_app``), then process every function. Returns each indexed function's raw
    bindings (what the host receives) and the refusals."""
    _, loader, _, _ = _runtime()
    directory = str(script.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    indexed = loader.index_function_app(str(script))
    _registry, metadata, refusals = index(indexed, directory)
    bindings = {name: [json.loads(b) for b in md.raw_bindings] for name, md in metadata.items()}
    return bindings, refusals
