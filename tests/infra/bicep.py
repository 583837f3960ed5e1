"""A small Bicep reader for tests: parses with tree-sitter-bicep and evaluates what can be known before deployment.

No Bicep compiler can be installed here, so the tests read the templates themselves. Values that exist only at
deployment time (resource ids, endpoints, uniqueString, listKeys, ...) evaluate to ``Unknown``, which keeps the
expression text, a printable sample and whether it carries a secret. Everything else (parameters, variables,
literals, union/concat/items, string interpolation, ternaries, loops, module parameters and outputs) is evaluated,
so the tests check the values ARM would receive rather than the shape of the source.

Only the subset of Bicep these templates use is supported; anything else raises ``BicepError`` so a test fails
loudly instead of passing on a value it did not understand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser


class BicepError(ValueError):
    """The template could not be parsed or uses syntax this reader does not evaluate."""


@cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_bicep.language()))


def syntax_errors(source: str) -> list[str]:
    """Every ERROR or MISSING node tree-sitter-bicep reports, as 'line:col: text'."""
    tree = _parser().parse(source.encode())
    out: list[str] = []

    def walk(n: Node) -> None:
        if n.type == "ERROR" or n.is_missing:
            out.append(
                f"{n.start_point[0] + 1}:{n.start_point[1] + 1}: {n.text.decode(errors='replace')[:80]!r}"
            )
        for c in n.children:
            walk(c)

    walk(tree.root_node)
    return out


@dataclass(frozen=True)
class Unknown:
    """A value known only at deployment time."""

    expr: str
    sample: str = "x"
    secret: bool = False

    def __str__(self) -> str:
        return self.sample


@dataclass
class ResourceRef:
    """A reference to a declared resource (what ``scope:``/``parent:`` receive)."""

    resource: Resource

    @property
    def type(self) -> str:
        return self.resource.type


@dataclass
class Resource:
    symbol: str
    type: str
    api_version: str
    existing: bool
    condition: Any
    props: dict[str, Any]
    file: Path
    parent: Resource | None = None
    decorators: list[str] = field(default_factory=list)

    @property
    def name(self) -> Any:
        """The full name ARM sees: a child (nested, or top-level with ``parent:``) is '<parent>/<own>'."""
        own = self.props.get("name")
        ref = self.props.get("parent")
        parent = self.parent or (ref.resource if isinstance(ref, ResourceRef) else None)
        if parent is not None and "/" not in str(own):
            return _concat_str([parent.name, "/", own])
        return own

    @property
    def deployed(self) -> bool:
        """False only when the template itself rules the resource out (condition false)."""
        return self.condition is not False


@dataclass
class Param:
    name: str
    type: str
    default: Node | None
    decorators: list[str]

    @property
    def secure(self) -> bool:
        return any(d.startswith("secure(") for d in self.decorators)


@dataclass
class Module:
    symbol: str
    path: str
    condition: Any
    params: dict[str, Any]
    template: Template


class _ModuleRef:
    def __init__(self, module: Module) -> None:
        self.module = module


class _Deferred:
    """A module's outputs, evaluated on access."""

    def __init__(self, template: Template) -> None:
        self.template = template


class _ScopeFn:
    """subscription(), tenant(), resourceGroup(), deployment(): every property is deployment-time."""

    def __init__(self, name: str) -> None:
        self.name = name


_ENVIRONMENT = {
    "name": "AzureCloud",
    "suffixes": {"storage": "core.windows.net", "keyvaultDns": ".vault.azure.net"},
}
# Printable stand-ins for deployment-time properties, so rendered settings look like the real ones.
_ZERO_GUID = "00000000-0000-0000-0000-000000000000"
_SAMPLES = {
    "clientId": _ZERO_GUID,
    "principalId": _ZERO_GUID,
    "tenantId": _ZERO_GUID,
    "vaultUri": "https://x.vault.azure.net/",
    "defaultHostName": "x.azurewebsites.net",
    "ConnectionString": f"InstrumentationKey={_ZERO_GUID};IngestionEndpoint=https://x.in.applicationinsights.azure.com/",
}
_ESCAPES = {"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}


def _concat_str(parts: list[Any]) -> Any:
    if any(isinstance(p, Unknown) for p in parts):
        return Unknown(
            expr="".join(p.expr if isinstance(p, Unknown) else _to_str(p) for p in parts),
            sample="".join(p.sample if isinstance(p, Unknown) else _to_str(p) for p in parts),
            secret=any(isinstance(p, Unknown) and p.secret for p in parts),
        )
    return "".join(_to_str(p) for p in parts)


def _to_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Unknown):
        return v.sample
    if isinstance(v, list | dict):
        return json.dumps(_plain(v), separators=(",", ":"))
    if v is None:
        return ""
    raise BicepError(f"cannot turn {v!r} into a string")


def _expr(v: Any) -> str:
    return v.expr if isinstance(v, Unknown) else repr(v)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, Unknown):
        return v.sample
    return v


def _named(n: Node) -> list[Node]:
    return [c for c in n.named_children if c.type != "comment"]


def _text(n: Node) -> str:
    return n.text.decode()


class Template:
    """One .bicep file evaluated with the given parameter values (defaults for the rest)."""

    def __init__(
        self,
        path: Path,
        params: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
        environ: Mapping[str, str] | None = None,
        _stack: tuple[Path, ...] = (),
    ) -> None:
        self.path = path.resolve()
        if self.path in _stack:
            raise BicepError(f"module cycle through {self.path}")
        self._stack = (*_stack, self.path)
        self.source = self.path.read_text() if source is None else source
        self._environ = dict(environ or {})
        errors = syntax_errors(self.source)
        if errors:
            raise BicepError(f"{path}: syntax errors: {errors}")
        self.root = _parser().parse(self.source.encode()).root_node
        self.target_scope = "resourceGroup"
        self.params: dict[str, Param] = {}
        self._var_nodes: dict[str, Node] = {}
        self._output_nodes: dict[str, Node] = {}
        self._resource_nodes: dict[str, Node] = {}
        self._module_nodes: dict[str, Node] = {}
        self._collect()
        given = dict(params or {})
        unknown = set(given) - set(self.params)
        if unknown:
            raise BicepError(f"{path}: no such parameters: {sorted(unknown)}")
        self._given = given
        self._values: dict[str, Any] = {}
        self._evaluating: set[str] = set()
        self._resources: dict[str, list[Resource]] | None = None
        self._modules: dict[str, Module] | None = None

    # -- declarations -------------------------------------------------------------------------------------------

    def _collect(self) -> None:
        pending: list[str] = []
        for n in _named(self.root):
            if n.type == "decorators":
                pending = [_text(d)[1:] for d in _named(n)]
                continue
            kids = _named(n)
            if n.type == "target_scope_assignment":
                self.target_scope = self._eval(kids[-1], {})
            elif n.type == "parameter_declaration":
                name = _text(kids[0])
                default = kids[2] if len(kids) > 2 else None
                self.params[name] = Param(name, _text(kids[1]), default, pending)
            elif n.type == "variable_declaration":
                self._var_nodes[_text(kids[0])] = kids[-1]
            elif n.type == "output_declaration":
                self._output_nodes[_text(kids[0])] = kids[-1]
            elif n.type == "resource_declaration":
                self._resource_nodes[_text(kids[0])] = n
            elif n.type == "module_declaration":
                self._module_nodes[_text(kids[0])] = n
            elif n.type in ("metadata_declaration", "comment"):
                pass
            else:
                raise BicepError(f"{self.path}: unsupported statement {n.type}")
            pending = []

    def param(self, name: str) -> Any:
        if name in self._given:
            return self._given[name]
        p = self.params[name]
        if p.default is None:
            raise BicepError(f"{self.path}: parameter {name} has no value and no default")
        return self._memo("param:" + name, lambda: self._eval(p.default, {}))

    def var(self, name: str) -> Any:
        return self._memo("var:" + name, lambda: self._eval(self._var_nodes[name], {}))

    def _memo(self, key: str, fn: Any) -> Any:
        if key not in self._values:
            if key in self._evaluating:
                raise BicepError(f"{self.path}: cycle evaluating {key}")
            self._evaluating.add(key)
            try:
                self._values[key] = fn()
            finally:
                self._evaluating.discard(key)
        return self._values[key]

    @property
    def outputs(self) -> dict[str, Any]:
        return {
            k: self._memo("out:" + k, lambda n=n: self._eval(n, {})) for k, n in self._output_nodes.items()
        }

    @property
    def output_nodes(self) -> dict[str, Node]:
        return dict(self._output_nodes)

    @property
    def variables(self) -> dict[str, Any]:
        return {k: self.var(k) for k in self._var_nodes}

    # -- resources and modules ----------------------------------------------------------------------------------

    @property
    def resources(self) -> list[Resource]:
        """Every resource declared in this file (children included), one per loop iteration."""
        return [r for rs in self._resource_map().values() for r in rs]

    def _resource_map(self) -> dict[str, list[Resource]]:
        if self._resources is None:
            self._resources = {}
            for symbol, node in self._resource_nodes.items():
                self._declare_resource(symbol, node, None, {}, "")
        return self._resources

    def _declare_resource(
        self, symbol: str, node: Node, parent: Resource | None, env: dict[str, Any], prefix: str
    ) -> None:
        kids = _named(node)
        type_api = self._eval(kids[1], env)
        rtype, _, api = type_api.partition("@")
        if parent is not None and "/" not in rtype.split("@")[0].removeprefix("Microsoft."):
            rtype = f"{parent.type}/{rtype}"
            api = api or parent.api_version
        existing = any(c.type == "existing" for c in node.children)
        body = kids[-1]
        key = prefix + symbol
        self._resources.setdefault(key, [])  # type: ignore[union-attr]
        for condition, item_env, obj in self._instances(body, env):
            res = Resource(key, rtype, api, existing, condition, {}, self.path, parent)
            self._resources[key].append(res)  # type: ignore[index]
            res.props = self._eval_object(obj, item_env, res)

    def _instances(self, body: Node, env: dict[str, Any]) -> Iterator[tuple[Any, dict[str, Any], Node]]:
        if body.type == "object":
            yield True, env, body
        elif body.type == "if_statement":
            cond_node, obj = _named(body)
            yield self._eval(cond_node, env), env, obj
        elif body.type == "for_statement":
            for item_env in self._loop_envs(body, env):
                yield True, item_env, _named(body)[-1]
        else:
            raise BicepError(f"{self.path}: unsupported resource body {body.type}")

    @property
    def modules(self) -> dict[str, Module]:
        if self._modules is None:
            self._modules = {}
            for symbol, node in self._module_nodes.items():
                kids = _named(node)
                path = self._eval(kids[1], {})
                if not isinstance(path, str) or path.startswith("br"):
                    raise BicepError(f"{self.path}: only local modules are read ({path})")
                bodies = list(self._instances(kids[-1], {}))
                if len(bodies) != 1:
                    raise BicepError(f"{self.path}: module loops are not supported ({symbol})")
                condition, env, obj = bodies[0]
                params: dict[str, Any] = {}
                for prop in _named(obj):
                    k = self._key(prop, env)
                    if k == "params":
                        params = self._eval(_named(prop)[-1], env)
                tpl = Template((self.path.parent / path), params, _stack=self._stack)
                self._modules[symbol] = Module(symbol, path, condition, params, tpl)
        return self._modules

    def all_templates(self) -> Iterator[tuple[Template, Any]]:
        """This template and every module below it, each with whether it is deployed in this evaluation."""
        yield self, True
        for m in self.modules.values():
            for tpl, cond in m.template.all_templates():
                yield tpl, (cond is not False and m.condition is not False)

    # -- expressions --------------------------------------------------------------------------------------------

    def _key(self, prop: Node, env: dict[str, Any]) -> str:
        k = _named(prop)[0]
        v = k.text.decode() if k.type == "identifier" else self._eval(k, env)
        return v.sample if isinstance(v, Unknown) else v

    def _eval_object(self, node: Node, env: dict[str, Any], owner: Resource | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for prop in _named(node):
            kids = _named(prop)
            if kids and kids[0].type == "resource_declaration":
                if owner is None:
                    raise BicepError(f"{self.path}: nested resource outside a resource")
                child = kids[0]
                self._declare_resource(_text(_named(child)[0]), child, owner, env, owner.symbol + "::")
                continue
            if prop.type != "object_property":
                raise BicepError(f"{self.path}: unsupported object member {prop.type}")
            out[self._key(prop, env)] = self._eval(kids[-1], env)
        return out

    def _loop_envs(self, node: Node, env: dict[str, Any]) -> Iterator[dict[str, Any]]:
        kids = _named(node)
        first = kids[0]
        names = [_text(c) for c in _named(first)] if first.type == "for_loop_parameters" else [_text(first)]
        collection = self._eval(kids[1], env)
        if isinstance(collection, Unknown):
            yield {**env, names[0]: Unknown(f"item of {collection.expr}"), **dict.fromkeys(names[1:], 0)}
            return
        if not isinstance(collection, list):
            raise BicepError(f"{self.path}: loop over {collection!r}")
        for i, item in enumerate(collection):
            yield {**env, names[0]: item, **({names[1]: i} if len(names) > 1 else {})}

    def _eval(self, n: Node, env: dict[str, Any]) -> Any:
        handler = _EVAL.get(n.type)
        if handler is None:
            raise BicepError(f"{self.path}:{n.start_point[0] + 1}: unsupported expression {n.type}")
        return handler(self, n, env)

    def _eval_string(self, n: Node, env: dict[str, Any]) -> Any:
        parts: list[Any] = []
        for c in n.named_children:
            if c.type == "string_content":
                parts.append(_text(c))
            elif c.type == "escape_sequence":
                parts.append(_ESCAPES.get(_text(c), _text(c)))
            elif c.type == "interpolation":
                parts.append(self._eval(_named(c)[0], env))
        return _concat_str(parts)

    def _eval_ternary(self, n: Node, env: dict[str, Any]) -> Any:
        cond = self._eval(n.child_by_field_name("condition"), env)
        yes, no = n.child_by_field_name("consequence"), n.child_by_field_name("alternative")
        if isinstance(cond, Unknown):
            a, b = self._eval(yes, env), self._eval(no, env)
            return Unknown(
                f"({cond.expr}) ? {_expr(a)} : {_expr(b)}", sample=_to_str(a if a is not None else b)
            )
        return self._eval(yes if cond else no, env)

    def _eval_unary(self, n: Node, env: dict[str, Any]) -> Any:
        op = _text(n.child_by_field_name("operator"))
        v = self._eval(n.child_by_field_name("argument"), env)
        if isinstance(v, Unknown):
            return Unknown(op + v.expr)
        if op == "!":
            return not v
        if op == "-":
            return -v
        raise BicepError(f"unsupported unary {op}")

    def _eval_subscript(self, n: Node, env: dict[str, Any]) -> Any:
        obj = self._eval(n.child_by_field_name("object"), env)
        idx = self._eval(n.child_by_field_name("index"), env)
        if isinstance(obj, Unknown) or isinstance(idx, Unknown):
            return Unknown(f"{_expr(obj)}[{_expr(idx)}]", secret=getattr(obj, "secret", False))
        if isinstance(obj, list) and isinstance(idx, int) and not isinstance(idx, bool):
            return obj[idx]
        return self._member(obj, idx)

    def _eval_resource(self, n: Node, env: dict[str, Any]) -> Any:
        parent = _text(n.child_by_field_name("object"))
        child = _text(n.child_by_field_name("resource"))
        refs = self._resource_map().get(f"{parent}::{child}")
        if not refs:
            raise BicepError(f"{self.path}: no nested resource {parent}::{child}")
        return ResourceRef(refs[0])

    def _binary(self, n: Node, env: dict[str, Any]) -> Any:
        op = _text(n.child_by_field_name("operator"))
        left = self._eval(n.child_by_field_name("left"), env)
        if op == "&&" and left is False:
            return False
        if op == "||" and left is True:
            return True
        if op == "??":
            return left if left is not None else self._eval(n.child_by_field_name("right"), env)
        right = self._eval(n.child_by_field_name("right"), env)
        if isinstance(left, Unknown) or isinstance(right, Unknown):
            return Unknown(f"{_expr(left)} {op} {_expr(right)}")
        ops = {
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "=~": lambda a, b: str(a).lower() == str(b).lower(),
            "&&": lambda a, b: a and b,
            "||": lambda a, b: a or b,
            "+": lambda a, b: a + b,
            "-": lambda a, b: a - b,
            "*": lambda a, b: a * b,
            "<": lambda a, b: a < b,
            ">": lambda a, b: a > b,
            "<=": lambda a, b: a <= b,
            ">=": lambda a, b: a >= b,
        }
        if op not in ops:
            raise BicepError(f"unsupported operator {op}")
        return ops[op](left, right)

    def _lookup(self, name: str, env: dict[str, Any]) -> Any:
        if name in env:
            return env[name]
        if name in self._var_nodes:
            return self.var(name)
        if name in self.params:
            return self.param(name)
        if name in self._resource_nodes:
            refs = self._resource_map()[name]
            if self._resource_nodes[name].named_children[-1].type == "for_statement":
                return [ResourceRef(r) for r in refs]
            return ResourceRef(refs[0])
        if name in self._module_nodes:
            return _ModuleRef(self.modules[name])
        raise BicepError(f"{self.path}: unknown symbol {name}")

    def _member(self, obj: Any, prop: Any) -> Any:
        if isinstance(obj, Unknown):
            sample = _SAMPLES.get(prop, "x")
            if obj.expr.endswith(".primaryEndpoints"):
                sample = f"https://x.{prop}.core.windows.net/"
            return Unknown(f"{obj.expr}.{prop}", sample=sample, secret=obj.secret)
        if isinstance(obj, ResourceRef):
            r = obj.resource
            if prop == "name":
                return r.name
            if prop == "id":
                return Unknown(f"resourceId({r.type}, {r.name})", sample=f"/resourceId/{r.type}/{r.name}")
            return Unknown(f"{r.symbol}.{prop}")
        if isinstance(obj, _ModuleRef):
            if prop != "outputs":
                return Unknown(f"{obj.module.symbol}.{prop}")
            return _Deferred(obj.module.template)
        if isinstance(obj, _Deferred):
            return obj.template.outputs[prop]
        if isinstance(obj, _ScopeFn):
            return Unknown(f"{obj.name}().{prop}")
        if isinstance(obj, dict):
            if prop not in obj:
                raise BicepError(f"{self.path}: no property {prop!r} in {sorted(obj)}")
            return obj[prop]
        raise BicepError(f"{self.path}: cannot read .{prop} of {obj!r}")

    def _call(self, n: Node, env: dict[str, Any]) -> Any:
        fn = _text(n.child_by_field_name("function"))
        args = [self._eval(a, env) for a in _named(n.child_by_field_name("arguments"))]
        found, value = self._call_opaque(fn, args)
        if found:
            return value
        if fn == "empty":
            return Unknown(f"empty({_expr(args[0])})") if _any_unknown(args) else not args[0]
        if fn in _COLLECTION_FUNCTIONS:
            return _COLLECTION_FUNCTIONS[fn](self, args)
        if _any_unknown(args):
            return Unknown(f"{fn}({', '.join(a.expr if isinstance(a, Unknown) else repr(a) for a in args)})")
        if fn in _SIMPLE_FUNCTIONS:
            return _SIMPLE_FUNCTIONS[fn](*args)
        raise BicepError(f"{self.path}: unsupported function {fn}()")

    def _call_opaque(self, fn: str, args: list[Any]) -> tuple[bool, Any]:
        """Functions of the deployment (scopes, ids, secrets, files, environment variables): (handled, value)."""
        if fn in ("subscription", "tenant", "resourceGroup", "deployment", "deployer"):
            return True, _ScopeFn(fn)
        if fn == "environment":
            return True, _ENVIRONMENT
        if fn in ("uniqueString", "guid", "resourceId", "reference", "newGuid", "utcNow"):
            return True, Unknown(f"{fn}(...)", sample="u" + re.sub(r"[^a-z0-9]", "", fn.lower())[:12])
        if fn.startswith("list"):
            return True, Unknown(f"{fn}(...)", sample="secret", secret=True)
        if fn == "subscriptionResourceId":
            return True, Unknown(f"{fn}({', '.join(map(str, args))})", sample="/".join(str(a) for a in args))
        if fn == "loadJsonContent":
            return True, json.loads((self.path.parent / args[0]).read_text())
        if fn == "loadTextContent":
            return True, (self.path.parent / args[0]).read_text()
        if fn == "readEnvironmentVariable":
            if args[0] in self._environ:
                return True, self._environ[args[0]]
            return True, args[1] if len(args) > 1 else Unknown(f"env:{args[0]}")
        return False, None

    def _union(self, args: list[Any]) -> Any:
        if all(isinstance(a, dict) for a in args):
            out: dict[str, Any] = {}
            for a in args:
                out.update(a)
            return out
        raise BicepError(f"{self.path}: union of non-objects {args!r}")


def _any_unknown(args: list[Any]) -> bool:
    return any(isinstance(a, Unknown) for a in args)


def _concat(args: list[Any]) -> Any:
    if all(isinstance(a, list) for a in args):
        return [x for a in args for x in a]
    return _concat_str(args)


# Expression node type → Template method (``_eval`` dispatches on the node's type).
_EVAL: dict[str, Callable[[Template, Node, dict[str, Any]], Any]] = {
    "string": Template._eval_string,
    "number": lambda t, n, env: int(_text(n)),
    "boolean": lambda t, n, env: _text(n) == "true",
    "null": lambda t, n, env: None,
    "array": lambda t, n, env: [t._eval(c, env) for c in _named(n)],
    "object": Template._eval_object,
    "parenthesized_expression": lambda t, n, env: t._eval(_named(n)[0], env),
    "identifier": lambda t, n, env: t._lookup(_text(n), env),
    "for_statement": lambda t, n, env: [t._eval(_named(n)[-1], e) for e in t._loop_envs(n, env)],
    "ternary_expression": Template._eval_ternary,
    "unary_expression": Template._eval_unary,
    "binary_expression": Template._binary,
    "member_expression": lambda t, n, env: t._member(
        t._eval(n.child_by_field_name("object"), env), _text(n.child_by_field_name("property"))
    ),
    "subscript_expression": Template._eval_subscript,
    "resource_expression": Template._eval_resource,
    "call_expression": Template._call,
}

# Functions over values that may hold unknowns (evaluated before the unknown check).
_COLLECTION_FUNCTIONS: dict[str, Callable[[Template, list[Any]], Any]] = {
    "union": Template._union,
    "concat": lambda t, args: _concat(args),
    "items": lambda t, args: [
        {"key": k, "value": v} for k, v in sorted(args[0].items(), key=lambda kv: kv[0].lower())
    ],
    "string": lambda t, args: args[0] if isinstance(args[0], Unknown | str) else _to_str(args[0]),
}

# Functions of known values only.
_SIMPLE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "toLower": lambda s: s.lower(),
    "toUpper": lambda s: s.upper(),
    "take": lambda s, k: s[:k],
    "int": int,
    "bool": lambda s: s if isinstance(s, bool) else str(s).lower() == "true",
    "length": len,
    "contains": lambda c, x: x in c,
    "replace": lambda s, a, b: s.replace(a, b),
}


def read_bicepparam(path: Path, environ: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """A .bicepparam file's template path and parameter values (readEnvironmentVariable reads ``environ``).

    tree-sitter-bicep does not know the .bicepparam dialect, whose only differences used here are ``using`` and
    untyped ``param x = value``; the text is rewritten to plain Bicep variables and evaluated as such.
    """
    text = path.read_text()
    m = re.search(r"^using\s+'([^']+)'\s*$", text, re.M)
    if not m:
        raise BicepError(f"{path}: no using statement")
    names = re.findall(r"^param\s+(\w+)\s*=", text, re.M)
    body = re.sub(r"^using\s+.*$", "", text, flags=re.M)
    body = re.sub(r"^param\s+(\w+)\s*=", r"var \1 =", body, flags=re.M)
    tpl = Template(path, source=body, environ=environ)
    return m.group(1), {name: tpl.var(name) for name in names}


def bicepparam_as_bicep(text: str) -> str:
    """The .bicepparam text as plain Bicep (for syntax checks by parsers that know only .bicep)."""
    body = re.sub(r"^using\s+.*$", "", text, flags=re.M)
    return re.sub(r"^param\s+(\w+)\s*=", r"var \1 =", body, flags=re.M)
