"""Read a `_target_`'s signature, docstring and class attributes from its source, never importing it.

The validator must answer in well under a second and before torch is imported, so targets are
located on disk (the top-level package's location from `importlib.util.find_spec`, which does
not execute it; then plain path lookups for the submodules) and read with `ast`. Followed:
re-exports (`from .ce import CrossEntropy`, `import *`), base classes (for a missing `__init__`
and for inherited class attributes such as `batch_kind`) and dataclass fields.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

class _Unknown:
    def __repr__(self) -> str:
        return "<not a literal>"

    def __reduce__(self) -> str:
        return "UNKNOWN"  # pickled by name: the one UNKNOWN survives the disk cache


UNKNOWN: Any = _Unknown()  # a default or attribute that is not a literal


class TargetNotFound(Exception):
    """The `_target_` names a module, file or name that does not exist."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # positional_only | normal | keyword_only | var_positional | var_keyword
    required: bool
    default: Any = UNKNOWN
    annotation: ast.expr | None = None


@dataclass
class Target:
    """What the source says about one `_target_`."""

    target: str
    file: Path
    kind: str  # class | function | other (an assignment: nothing to bind against)
    params: tuple[Param, ...] | None  # None: not readable (e.g. inherits from a compiled base)
    doc: str | None
    attrs: dict[str, Any] = field(default_factory=dict)  # literal class attributes, inherited too
    module: str = ""  # the module that defines it (after following re-exports); '' when unknown

    def keyword_params(self) -> list[Param]:
        return [p for p in self.params or () if p.kind in ("normal", "keyword_only")]

    def takes_any_keyword(self) -> bool:
        return any(p.kind == "var_keyword" for p in self.params or ())


# --- finding modules on disk -------------------------------------------------------------------

@dataclass(frozen=True)
class _Module:
    name: str
    file: Path | None  # None: a namespace package or a compiled module (no source to read)
    locations: tuple[Path, ...]  # where its submodules live; () for a plain module

    @property
    def is_package(self) -> bool:
        return bool(self.locations)


def _top_level(name: str) -> _Module | None:
    loaded = sys.modules.get(name)
    if loaded is not None:
        file = getattr(loaded, "__file__", None)
        locations = tuple(Path(p) for p in getattr(loaded, "__path__", ()) or ())
    else:
        try:
            spec = importlib.util.find_spec(name)  # a top-level name: located, not executed
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        file = spec.origin if spec.has_location else None
        locations = tuple(Path(p) for p in spec.submodule_search_locations or ())
    source = Path(file) if file and str(file).endswith(".py") else None
    return _Module(name, source, locations)


def _child(parent: _Module, part: str) -> _Module | None:
    name = f"{parent.name}.{part}"
    portions = []
    for loc in parent.locations:
        package = loc / part
        if (package / "__init__.py").is_file():
            return _Module(name, package / "__init__.py", (package,))
        if (loc / f"{part}.py").is_file():
            return _Module(name, loc / f"{part}.py", ())
        if any((loc / f"{part}{suffix}").is_file() for suffix in importlib.machinery.EXTENSION_SUFFIXES):
            return _Module(name, None, ())
        if package.is_dir():
            portions.append(package)
    return _Module(name, None, tuple(portions)) if portions else None


def find_module(name: str) -> _Module | None:
    """Locate module `name` without executing it (or any of its parents); None if absent."""
    parts = name.split(".")
    module = _top_level(parts[0])
    for part in parts[1:]:
        if module is None or not module.is_package:
            return None
        module = _child(module, part)
    return module


def expected_file(module_name: str) -> str:
    return module_name.replace(".", "/") + ".py"


# --- parsing ---------------------------------------------------------------------------------

@lru_cache(maxsize=256)
def _parse(path: Path, mtime_ns: int) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _tree(path: Path) -> ast.Module:
    _read.append(path)
    return _parse(path, path.stat().st_mtime_ns)


def _top_statements(body: list[ast.stmt]):
    """Module-level statements, looking inside `if`/`try` blocks (guarded imports)."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            yield from _top_statements(stmt.body)
            yield from _top_statements(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody, *(h.body for h in stmt.handlers)):
                yield from _top_statements(block)
        else:
            yield stmt


def _absolute(module: _Module, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def _binding(module: _Module, tree: ast.Module, name: str):
    """How `name` is bound at the top of `tree`: ('def', node) | ('alias', dotted target) |
    ('assign', node) | ('star', [modules]) | None."""
    stars = []
    found = None
    for stmt in _top_statements(tree.body):
        if isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == name:
            found = ("def", stmt)
        elif isinstance(stmt, ast.ImportFrom):
            source = _absolute(module, stmt.level, stmt.module)
            for alias in stmt.names:
                if alias.name == "*":
                    stars.append(source)
                elif (alias.asname or alias.name) == name:
                    found = ("alias", f"{source}.{alias.name}")
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname == name:
                    found = ("alias", alias.name)
                elif alias.asname is None and alias.name.split(".")[0] == name:
                    found = ("alias", name)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found = ("assign", stmt)
    if found is None and stars:
        return ("star", stars)
    return found


def _module_names(tree: ast.Module) -> list[str]:
    names = []
    for stmt in _top_statements(tree.body):
        if isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.append(stmt.name)
    return names


# --- resolving a dotted target -------------------------------------------------------------------

def resolve(target: str) -> Target:
    """Read `target` ("pkg.module.Name" or "pkg.module.Outer.Inner") from source.

    Raises TargetNotFound naming the file that was looked for and the closest existing name.
    Returns kind "other" with params None when the source cannot be read (compiled code).
    An answer is kept on disk with the size and mtime of every file read for it (parsing the
    sources is most of a validation's own time) and reused while those files are unchanged.
    """
    found = _DiskCache.get(target)
    if found is not None:
        return found
    _read.clear()
    found = _resolve(target, depth=0)
    _DiskCache.put(target, found, sorted(set(_read)))
    return found


_read: list[Path] = []  # the source files the resolution under way has parsed


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


class _DiskCache:
    """target -> (python version, [(file, size, mtime)], Target), in one pickle under
    $RIZZRUN_CACHE (else ~/.cache/rizzrun)/signatures.pkl; loaded once per process, written when
    it gained an entry. Unreadable or unwritable: every target is read from source."""

    entries: dict | None = None
    _VERSION = 1

    @classmethod
    def _path(cls) -> Path:
        from rizzrun.paths import cache_root

        return cache_root() / "signatures.pkl"

    @classmethod
    def _load(cls) -> dict:
        if cls.entries is None:
            import pickle

            try:
                data = pickle.loads(cls._path().read_bytes())
                cls.entries = data["entries"] if data.get("version") == (cls._VERSION, sys.version_info[:2]) else {}
            except Exception:  # noqa: BLE001 - no cache yet, or an unreadable one: start afresh
                cls.entries = {}
        return cls.entries

    @staticmethod
    def _key(target: str) -> str:
        """The target as read from this checkout of rizzrun: two checkouts sharing a cache (a
        second clone, a git worktree) each keep their own entries, naming their own files."""
        return f"{target}|{Path(__file__).resolve().parents[1]}"

    @classmethod
    def get(cls, target: str) -> Target | None:
        entry = cls._load().get(cls._key(target))
        if entry is None:
            return None
        files, found = entry
        try:
            if all(_stamp(Path(f)) == (size, mtime) for f, size, mtime in files):
                return found
        except OSError:
            pass
        return None

    @classmethod
    def put(cls, target: str, found: Target, files: list[Path]) -> None:
        import pickle

        try:
            cls._load()[cls._key(target)] = ([(str(f), *_stamp(f)) for f in files], found)
            from rizzrun.files import write_atomic

            write_atomic(cls._path(), pickle.dumps({"version": (cls._VERSION, sys.version_info[:2]),
                                                    "entries": cls.entries}, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:  # noqa: BLE001 - read-only home, full disk: read the sources next time
            pass


def _resolve(target: str, depth: int) -> Target:
    if depth > 20:
        raise TargetNotFound(f"{target}: re-exports go round in a circle")
    parts = target.split(".")
    if len(parts) < 2:
        raise TargetNotFound(f"'{target}' is not a dotted path 'package.module.Name'")
    for i in range(len(parts) - 1, 0, -1):
        module = find_module(".".join(parts[:i]))
        if module is not None:
            break
    else:
        raise TargetNotFound(f"cannot find module '{parts[0]}' (is it installed?)")
    names = parts[i:]
    if module.file is None:
        if module.is_package:  # a namespace package: the next part should have been a file
            looked = ", ".join(str(p) for p in module.locations)
            raise TargetNotFound(f"cannot find {expected_file(module.name + '.' + names[0])} "
                                 f"(looked in {looked})")
        return Target(target, Path(module.name), "other", None, None)  # compiled
    tree = _tree(module.file)
    binding = _binding(module, tree, names[0])
    if binding is None:
        if module.is_package and len(names) > 1:
            raise TargetNotFound(f"cannot find {expected_file(module.name + '.' + names[0])} "
                                 f"(looked in {module.file.parent})")
        from rizzrun.config.errors import suggest
        hint = suggest(names[0], _module_names(tree))
        raise TargetNotFound(f"{module.file} defines no '{names[0]}'" + (f"; {hint}" if hint else ""))
    how, what = binding
    if how == "alias":
        return _resolve(".".join([what, *names[1:]]), depth + 1)
    if how == "star":
        for source in what:
            try:
                return _resolve(".".join([source, *names]), depth + 1)
            except TargetNotFound:
                continue
        raise TargetNotFound(f"{module.file} defines no '{names[0]}'")
    if how == "assign":
        return Target(target, module.file, "other", None, None)
    node = what
    for inner in names[1:]:
        if not isinstance(node, ast.ClassDef):
            raise TargetNotFound(f"{target}: '{node.name}' in {module.file} is not a class, "
                                 f"so it has no '{inner}'")
        nested = [s for s in node.body if isinstance(s, (ast.ClassDef, ast.FunctionDef)) and s.name == inner]
        if not nested:
            raise TargetNotFound(f"class {node.name} in {module.file} defines no '{inner}'")
        node = nested[0]
    if isinstance(node, ast.ClassDef):
        return _class_target(target, module, tree, node, depth)
    return Target(target, module.file, "function", _params(node.args, drop_self=False),
                  ast.get_docstring(node), module=module.name)


def _params(args: ast.arguments, drop_self: bool) -> tuple[Param, ...]:
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    out = []
    for index, (arg, default) in enumerate(zip(positional, defaults)):
        if drop_self and index == 0:
            continue
        kind = "positional_only" if index < len(args.posonlyargs) else "normal"
        out.append(Param(arg.arg, kind, default is None, _literal(default), arg.annotation))
    if args.vararg is not None:
        out.append(Param(args.vararg.arg, "var_positional", False))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        out.append(Param(arg.arg, "keyword_only", default is None, _literal(default), arg.annotation))
    if args.kwarg is not None:
        out.append(Param(args.kwarg.arg, "var_keyword", False))
    return tuple(out)


def _literal(node: ast.expr | None):
    if node is None:
        return UNKNOWN
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return UNKNOWN


def _is_dataclass(node: ast.ClassDef) -> bool:
    for deco in node.decorator_list:
        deco = deco.func if isinstance(deco, ast.Call) else deco
        if (isinstance(deco, ast.Name) and deco.id == "dataclass") or (
                isinstance(deco, ast.Attribute) and deco.attr == "dataclass"):
            return True
    return False


def _dataclass_fields(node: ast.ClassDef) -> list[Param]:
    out = []
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        if "ClassVar" in ast.unparse(stmt.annotation):
            continue
        default = stmt.value
        if isinstance(default, ast.Call) and getattr(default.func, "id", getattr(default.func, "attr", "")) == "field":
            kws = {k.arg: k.value for k in default.keywords}
            default = kws.get("default", kws.get("default_factory"))
        out.append(Param(stmt.target.id, "normal", default is None, _literal(default), stmt.annotation))
    return out


def _class_attrs(node: ast.ClassDef) -> dict[str, Any]:
    attrs = {}
    for stmt in node.body:
        if isinstance(stmt, ast.Assign):
            for t in stmt.targets:
                if isinstance(t, ast.Name):
                    attrs[t.id] = _literal(stmt.value)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            attrs[stmt.target.id] = _literal(stmt.value)
    return attrs


def _bases(module: _Module, node: ast.ClassDef, depth: int) -> list[Target | None]:
    """The resolved base classes, in order; None for one that cannot be read."""
    out: list[Target | None] = []
    for base in node.bases:
        dotted = ast.unparse(base)
        if dotted in ("object", "Generic", "Protocol", "ABC") or dotted.startswith(("Generic[", "Protocol[")):
            continue
        try:  # looked up as a name of this module: a class here, or one it imports
            found = _resolve(f"{module.name}.{dotted}", depth + 1)
        except (TargetNotFound, OSError, SyntaxError):
            found = None
        out.append(found if found is not None and found.kind == "class" else None)
    return out


def _class_target(target: str, module: _Module, tree: ast.Module, node: ast.ClassDef, depth: int) -> Target:
    init = next((s for s in node.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"), None)
    own_attrs = _class_attrs(node)
    bases = _bases(module, node, depth)
    attrs: dict[str, Any] = {}
    for base in reversed(bases):
        if base is not None:
            attrs.update(base.attrs)
    attrs.update(own_attrs)
    if init is not None:
        params = _params(init.args, drop_self=True)
    elif _is_dataclass(node):
        inherited = [p for b in bases if b is not None for p in (b.params or ())]
        own = _dataclass_fields(node)
        own_names = {p.name for p in own}
        params = tuple([p for p in inherited if p.name not in own_names] + own)
    elif not bases:
        params = ()
    else:
        params = bases[0].params if bases[0] is not None else None
    return Target(target, module.file, "class", params, ast.get_docstring(node), attrs, module=module.name)
