"""Simple type checks for config values, from a source annotation (AST) or a runtime type.

Only what a YAML value can be is modelled: null, bool, int, float, str, lists and mappings,
unions and literals. Anything else (a tensor type, a callable, a class of the project) becomes
`ANY`, which accepts every value: the check is there to catch `lr=fast`, not to type-check
Python.
"""

from __future__ import annotations

import ast
import types
import typing
from dataclasses import dataclass

from rizzrun.config.errors import show


@dataclass(frozen=True)
class Spec:
    kind: str  # any | none | bool | int | float | str | list | dict | union | literal
    args: tuple = ()


ANY, NONE = Spec("any"), Spec("none")
_SCALARS = {"int": Spec("int"), "float": Spec("float"), "bool": Spec("bool"), "str": Spec("str")}
_STR_LIKE = {"str", "Path", "PurePath", "PathLike", "StrPath"}
_LIST_LIKE = {"list", "List", "tuple", "Tuple", "Sequence", "MutableSequence", "Iterable",
              "Collection", "set", "Set", "frozenset", "FrozenSet"}
_DICT_LIKE = {"dict", "Dict", "Mapping", "MutableMapping"}


def union(*specs: Spec) -> Spec:
    flat: list[Spec] = []
    for s in specs:
        for part in (s.args if s.kind == "union" else (s,)):
            if part not in flat:
                flat.append(part)
    if ANY in flat:
        return ANY
    return flat[0] if len(flat) == 1 else Spec("union", tuple(flat))


def optional(spec: Spec) -> Spec:
    return union(spec, NONE)


# --- from source (AST) -------------------------------------------------------------------------

def _last_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def from_ast(node: ast.expr | None) -> Spec:
    """Spec of an annotation as written in source; unknown forms are ANY."""
    if node is None:
        return ANY
    if isinstance(node, ast.Constant):
        if node.value is None:
            return NONE
        if isinstance(node.value, str):  # a string annotation, e.g. "int | None"
            try:
                return from_ast(ast.parse(node.value, mode="eval").body)
            except SyntaxError:
                return ANY
        return ANY
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return union(from_ast(node.left), from_ast(node.right))
    if isinstance(node, ast.Subscript):
        base = _last_name(node.value)
        inner = node.slice
        items = list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]
        if base == "Optional":
            return optional(from_ast(items[0]))
        if base == "Union":
            return union(*(from_ast(i) for i in items))
        if base == "Literal":
            try:
                return Spec("literal", tuple(ast.literal_eval(i) for i in items))
            except ValueError:
                return ANY
        if base == "Annotated":
            return from_ast(items[0])
        if base in _LIST_LIKE:
            elems = [i for i in items if not (isinstance(i, ast.Constant) and i.value is Ellipsis)]
            return Spec("list", (union(*(from_ast(i) for i in elems)) if elems else ANY,))
        if base in _DICT_LIKE:
            return Spec("dict")
        return ANY
    name = _last_name(node)
    if name in _SCALARS:
        return _SCALARS[name]
    if name in _STR_LIKE:
        return _SCALARS["str"]
    if name in _LIST_LIKE:
        return Spec("list", (ANY,))
    if name in _DICT_LIKE:
        return Spec("dict")
    return ANY


# --- from runtime types (the schema dataclasses) ------------------------------------------------

def from_type(tp) -> Spec:
    if tp is type(None) or tp is None:
        return NONE
    if tp in (int, float, bool, str):
        return _SCALARS[tp.__name__]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return union(*(from_type(a) for a in args))
    if origin is typing.Literal:
        return Spec("literal", tuple(args))
    if origin in (list, tuple) or tp in (list, tuple):
        return Spec("list", (union(*(from_type(a) for a in args if a is not Ellipsis)) if args else ANY,))
    if origin is dict or tp is dict:
        return Spec("dict")
    return ANY


# --- checking ---------------------------------------------------------------------------------

def matches(value, spec: Spec) -> bool:
    k = spec.kind
    if k == "any":
        return True
    if k == "none":
        return value is None
    if k == "bool":
        return isinstance(value, bool)
    if k == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if k == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if k == "str":
        return isinstance(value, str)
    if k == "list":
        return isinstance(value, (list, tuple)) and all(matches(v, spec.args[0]) for v in value)
    if k == "dict":
        return isinstance(value, dict)
    if k == "union":
        return any(matches(value, s) for s in spec.args)
    if k == "literal":
        # `trainer.precision=32` arrives as the int 32; it means the string "32".
        return any(value == a and type(value) is type(a) or (isinstance(a, str) and not isinstance(value, (bool, str))
                   and value is not None and str(value) == a) for a in spec.args)
    raise ValueError(f"unknown spec kind {k!r}")


def describe(spec: Spec) -> str:
    k = spec.kind
    if k == "none":
        return "null"
    if k in ("any", "bool", "int", "float", "str", "dict"):
        return {"any": "anything", "bool": "true or false", "dict": "a mapping"}.get(k, k)
    if k == "list":
        inner = spec.args[0]
        return "a list" if inner == ANY else f"a list of {describe(inner)}"
    if k == "literal":
        return "one of " + ", ".join(show(a) for a in spec.args)
    if k == "union":
        return " or ".join(describe(s) for s in spec.args)
    raise ValueError(f"unknown spec kind {k!r}")


def literal_choices(spec: Spec) -> tuple:
    """The allowed values when `spec` is a Literal (possibly Optional), else ()."""
    if spec.kind == "literal":
        return spec.args
    if spec.kind == "union":
        return tuple(a for s in spec.args if s.kind == "literal" for a in s.args)
    return ()


def type_name(value) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", tuple: "list",
            dict: "mapping"}.get(type(value), type(value).__name__)
