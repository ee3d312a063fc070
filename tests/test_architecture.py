"""The package's import structure: floors, no circles, no reaching into another unit's private names, and a reason
on every import made inside a function.

Every module under ``src/corrective_unlearning`` is parsed with :mod:`ast` (nothing is imported), its imports
collected at module level *and* inside functions, relative imports resolved. A *unit* is a top-level module or
subpackage (``methods``, ``config``, ``fix``); the package's own ``__init__`` is the unit ``corrective_unlearning``.
The checks:

1. no circle between units (an import at function level counts: it only delays the circle to the first call);
2. no upward import: every unit sits on one floor of :data:`FLOORS` (top to bottom) and imports only units on its
   own floor or below;
3. no private name (leading underscore) is taken from another package: neither ``from x import _name`` nor
   ``x._name`` on a module imported from elsewhere (a subpackage such as ``runner/executors`` counts as its own
   package here: a private name is private to the folder that holds it);
4. every import inside a function carries a trailing ``# lazy: <reason>`` comment saying why it is not at the top
   (an optional dependency, a heavy import only some paths need, ...).

Allowed within a package: the registration pattern, where a package's ``__init__.py`` imports its submodules at
its bottom and they import the registry decorator from ``__init__`` (``methods``, ``suspects``, ``triggers``, ...).
That is a circle between modules, never between units, so the unit-level checks do not see it.

Run ``python tests/test_architecture.py`` to print the unit graph: units by floor, the edges between them, and
every function-level import with its reason.
"""
from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


PACKAGE = "corrective_unlearning"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE

# Top to bottom: a unit may import units on its own floor or below, never above. The package's face (its
# ``__init__``) re-exports the practitioner's entry points, so it sits above them.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli", PACKAGE),  # the two faces: the command line and `import corrective_unlearning`
    ("report",),
    ("runner",),
    ("fix",),
    ("suspects",),
    ("inputs",),  # the practitioner's data, flagged lists and model files; a benchmark run folder needs experiment
    ("methods", "experiment", "forget_sets", "references"),
    ("config",),  # a config is checked when it loads: manipulations' parameters and recipe A's fields
    ("proxies", "manipulations", "cache"),
    ("capacity", "evaluation"),
    ("models", "training", "triggers", "data", "reserve"),  # reserve: the clean part of the validation split
    ("registry", "records", "runtime", "checks", "progress", "selection", "hidden_count"),
)

LAZY = re.compile(r"#\s*lazy:\s*\S")


@dataclass(frozen=True)
class Import:
    """One imported module (``import x`` or ``from x import ...``), as the importing module sees it."""

    source: str  # the importing module, dotted
    target: str  # the imported module, dotted and resolved
    names: tuple[str, ...]  # the names taken from ``target`` (``from target import a, b``); () for a module import
    line: int
    lazy: bool  # made inside a function
    reason: str | None  # the ``# lazy: ...`` comment on the statement's lines

    @property
    def where(self) -> str:
        return f"{path_of(self.source).relative_to(ROOT.parent)}:{self.line}"


@dataclass(frozen=True)
class Access:
    """``alias._name`` where ``alias`` is bound to a module by an import."""

    source: str
    target: str  # the module ``alias`` stands for
    name: str
    line: int


# ---------------------------------------------------------------------------------------------- the parsed package
@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package's ``__init__.py`` is the package's name)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def path_of(module: str) -> Path:
    return modules()[module]


def is_package(module: str) -> bool:
    return path_of(module).name == "__init__.py"


def unit_of(module: str) -> str:
    """``corrective_unlearning.fix.core`` -> ``fix``; the package's ``__init__`` is its own unit."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def folder_of(module: str) -> str:
    """The package (folder) that holds ``module``: what its private names are private to."""
    return module if is_package(module) else module.rpartition(".")[0]


def _resolve(source: str, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` names, relative dots resolved against ``source``."""
    if not node.level:
        return node.module or ""
    base = source.split(".") if is_package(source) else source.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _comments(text: str) -> dict[int, str]:
    """Line number -> the comment on that line."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string
    return found


def _reason(node: ast.stmt, comments: dict[int, str]) -> str | None:
    """The ``# lazy: ...`` comment on any line of the statement (a long import wraps)."""
    for line in range(node.lineno, (node.end_lineno or node.lineno) + 1):
        if LAZY.search(comments.get(line, "")):
            return comments[line].split("lazy:", 1)[1].strip()
    return None


class _Collector(ast.NodeVisitor):
    """The imports of one module and the ``alias._name`` accesses on modules it imported."""

    def __init__(self, source: str, comments: dict[int, str]):
        self.source, self.comments = source, comments
        self.imports: list[Import] = []
        self.aliases: dict[str, str] = {}  # a local name bound to a package module -> that module
        self.accesses: list[Access] = []
        self.depth = 0  # functions entered

    def _function(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, node: ast.stmt, target: str, names: tuple[str, ...]) -> None:
        lazy = self.depth > 0
        self.imports.append(Import(self.source, target, names, node.lineno, lazy,
                                   _reason(node, self.comments) if lazy else None))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name, ())
            if alias.asname and alias.name in modules():
                self.aliases[alias.asname] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.source, node)
        names = []
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in modules():  # `from . import cells`: the module itself
                self._add(node, submodule, ())
                self.aliases[alias.asname or alias.name] = submodule
            else:
                names.append(alias.name)
        if names:
            self._add(node, base, tuple(names))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id in self.aliases and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            self.accesses.append(Access(self.source, self.aliases[node.value.id], node.attr, node.lineno))
        self.generic_visit(node)


@lru_cache(maxsize=None)
def parsed() -> tuple[tuple[Import, ...], tuple[Access, ...]]:
    """Every import of the package (of any module, inside or outside it) and every ``alias._name`` access."""
    imports, accesses = [], []
    for module, path in modules().items():
        text = path.read_text()
        collector = _Collector(module, _comments(text))
        collector.visit(ast.parse(text, str(path)))
        imports += collector.imports
        accesses += collector.accesses
    return tuple(imports), tuple(accesses)


def inner_imports() -> list[Import]:
    """The imports of package modules, resolved to the module imported."""
    return [i for i in parsed()[0] if i.target == PACKAGE or i.target.startswith(PACKAGE + ".")]


def _metadata(i: Import) -> bool:
    """``from corrective_unlearning import __version__``: the package's metadata, loaded before any of its modules
    (the import system runs the root ``__init__`` first), so reading it depends on nothing above."""
    return i.target == PACKAGE and bool(i.names) and all(n.startswith("__") for n in i.names)


def unit_edges() -> dict[tuple[str, str], list[Import]]:
    """(importing unit, imported unit) -> the imports that make that edge (metadata reads aside)."""
    edges: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for i in inner_imports():
        a, b = unit_of(i.source), unit_of(i.target)
        if a != b and not _metadata(i):
            edges[a, b].append(i)
    return dict(edges)


def units() -> list[str]:
    return sorted({unit_of(m) for m in modules()})


def floor_of(unit: str) -> int | None:
    """0 is the top floor; None: not on the list."""
    return next((n for n, floor in enumerate(FLOORS) if unit in floor), None)


def circles() -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan), each sorted."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in unit_edges():
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in units():
        if v not in index:
            visit(v)
    return sorted(found)


# ---------------------------------------------------------------------------------------------------- violations
def _listing(i: Import) -> str:
    what = f"{i.target} ({', '.join(i.names)})" if i.names else i.target
    return f"{i.where}: {unit_of(i.source)} -> {unit_of(i.target)}: imports {what}" + (" [in a function]" if i.lazy
                                                                                      else "")


def circle_violations() -> list[str]:
    edges = unit_edges()
    lines = []
    for component in circles():
        lines.append(f"circle between {', '.join(component)}:")
        lines += [f"  {_listing(i)}" for (a, b), found in sorted(edges.items())
                  if a in component and b in component for i in found]
    return lines


def unplaced_units() -> list[str]:
    return [f"unit {u} is on no floor: add it to FLOORS" for u in units() if floor_of(u) is None]


def floor_violations() -> list[str]:
    lines = []
    for (a, b), found in sorted(unit_edges().items()):
        fa, fb = floor_of(a), floor_of(b)
        if fa is not None and fb is not None and fb < fa:
            lines += [f"upward: {_listing(i)} (floor {fa} imports floor {fb})" for i in found]
    return lines


def private_violations() -> list[str]:
    imports, accesses = parsed()
    lines = [f"{i.where}: private name {name} taken from {i.target}" for i in inner_imports() for name in i.names
             if name.startswith("_") and not name.startswith("__") and folder_of(i.target) != folder_of(i.source)]
    lines += [f"{path_of(a.source).relative_to(ROOT.parent)}:{a.line}: private attribute {a.target}.{a.name}"
              for a in accesses if folder_of(a.target) != folder_of(a.source)]
    # a private module (``from . import _helpers``) is private to the folder that holds it
    lines += [f"{i.where}: private module {i.target} imported" for i in inner_imports()
              if _private_module(i.target) and not _inside(folder_of(i.source), i.target.rpartition(".")[0])]
    return lines


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _private_module(module: str) -> bool:
    name = module.rpartition(".")[2]
    return name.startswith("_") and not name.startswith("__")


def lazy_violations() -> list[str]:
    return [f"{i.where}: imports {i.target} inside a function without a '# lazy: <reason>' comment"
            for i in parsed()[0] if i.lazy and i.reason is None]


def _message(title: str, lines: list[str]) -> str:
    return f"{title} ({len(lines)}):\n" + "\n".join(f"  {line}" for line in lines)


# --------------------------------------------------------------------------------------------------------- tests
def test_the_parser_sees_the_package():
    """A guard on the checks themselves: they would pass vacuously on an empty or misread package."""
    assert f"{PACKAGE}.fix.core" in modules() and f"{PACKAGE}.cli" in modules()
    assert ("fix", "methods") in unit_edges()
    assert any(i.lazy for i in parsed()[0])
    assert {u for floor in FLOORS for u in floor} >= set(units()) - {"checks"}


def test_the_collector_reads_relative_function_level_and_private_imports():
    """The parser on a made-up body for runner/executors/__init__.py: what the checks below rely on."""
    text = ("from ..cells import _cell_fields\n\n\ndef f():\n"
            "    from ...suspects import rank_suspects  # lazy: why\n"
            "    from .. import store\n    return store._x\n")
    source = f"{PACKAGE}.runner.executors"
    collector = _Collector(source, _comments(text))
    collector.visit(ast.parse(text))
    assert {(i.target, i.names, i.lazy, i.reason) for i in collector.imports} == {
        (f"{PACKAGE}.runner.cells", ("_cell_fields",), False, None),
        (f"{PACKAGE}.suspects", ("rank_suspects",), True, "why"),
        (f"{PACKAGE}.runner.store", (), True, None)}
    assert [(a.target, a.name) for a in collector.accesses] == [(f"{PACKAGE}.runner.store", "_x")]


def test_every_unit_is_on_a_floor():
    lines = unplaced_units()
    assert not lines, _message("units missing from FLOORS", lines)


def test_no_import_goes_up():
    lines = floor_violations()
    assert not lines, _message("imports against the floors (FLOORS, top to bottom)", lines)


def test_no_circle_between_units():
    lines = circle_violations()
    assert not lines, _message("circles between units", lines)


def test_no_private_name_from_another_package():
    lines = private_violations()
    assert not lines, _message("private names used from another package", lines)


def test_every_function_level_import_says_why():
    lines = lazy_violations()
    assert not lines, _message("imports inside functions without a reason", lines)


def test_suspects_never_imports_fix():
    """The practitioner's inputs live below both: suspects reads them without reaching up into fix."""
    up = [_listing(i) for i in inner_imports() if unit_of(i.source) == "suspects" and unit_of(i.target) == "fix"]
    assert not up, _message("suspects importing fix", up)


# --------------------------------------------------------------------------------------------------- the picture
def describe() -> str:
    """The unit graph as text: floors, edges (with how many imports make each), function-level imports."""
    edges = unit_edges()
    out = ["floors (top to bottom):"]
    for n, floor in enumerate(FLOORS):
        present = [u for u in floor if u in units()]
        absent = [u for u in floor if u not in units()]
        out.append(f"  {n:2d}  {', '.join(present)}" + (f"   (not yet: {', '.join(absent)})" if absent else ""))
    out += [f"  ??  {u} (on no floor)" for u in units() if floor_of(u) is None]
    out.append("\nedges (importing unit -> imported unit: imports, of which in functions):")
    for (a, b), found in sorted(edges.items(), key=lambda e: (floor_of(e[0][0]) or 0, e[0])):
        lazy = sum(i.lazy for i in found)
        out.append(f"  {a} -> {b}: {len(found)}" + (f" ({lazy} in functions)" if lazy else ""))
    out.append("\nfunction-level imports (where: what -- reason):")
    for i in parsed()[0]:
        if i.lazy:
            out.append(f"  {i.where}: {i.target} -- {i.reason or 'NO REASON GIVEN'}")
    for title, lines in (("circles", circle_violations()), ("upward imports", unplaced_units() + floor_violations()),
                         ("private names", private_violations()), ("unexplained lazy imports", lazy_violations())):
        out.append("\n" + (_message(title, lines) if lines else f"{title}: none"))
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(describe() + "\n")
