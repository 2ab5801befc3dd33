"""The package keeps the layer table of DESIGN.md and has no import cycles.

Every module of `lutnas/` is parsed with `ast` (nothing is imported), and every import it contains
is read: module-level ones, those inside functions and methods, and those under
`if TYPE_CHECKING:`. Imports inside functions count because they run just the same when the
function is called; the redesign's cycles were hidden exactly there. So do `importlib.import_module`
calls whose module can be read from the source: a string constant naming a lutnas module, or an
f-string `f"lutnas.pkg.{name}"` (also `f"{__name__}.{name}"`), which is taken to import
`lutnas.pkg.<c>` for every string constant `c` of the same file that completes it to a module.

TYPE_CHECKING-only imports are held to the layer table (an annotation that names a type from a
higher layer is still a dependency on it) but are left out of the cycle graph: they never execute,
so they cannot close a cycle at run time, and a type named in an annotation of both sides is the
ordinary way to type two cooperating modules.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "lutnas"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# DESIGN.md's layer table as data: folder -> the folders it may import (besides itself and BASE).
# `cli` may import everything, so it is not limited here.
LAYERS: dict[str, frozenset[str]] = {
    "space": frozenset(),
    "supernet": frozenset({"space"}),
    "device_agents": frozenset(),
    "tables": frozenset({"space", "device_agents"}),
    "predictors": frozenset({"space", "tables"}),
    "profiler": frozenset({"space", "supernet", "device_agents", "tables", "predictors"}),
    "search": frozenset({"space", "tables", "predictors", "supernet"}),
}
UNLIMITED = frozenset({"cli"})
# Top-level modules every layer may import; they themselves import nothing of lutnas but these.
BASE = frozenset({"lutnas", "lutnas.errors", "lutnas.plotting", "lutnas.fileio"})
# `python -m lutnas` is the CLI's entry point, so it sits on the CLI's floor.
MODULE_LAYER_OVERRIDES = {"lutnas.__main__": "cli"}

# What lutnas/space may import from outside lutnas: the standard library, numpy and pyyaml.
SPACE_THIRD_PARTY = frozenset({"numpy", "yaml"})


@dataclass(frozen=True)
class Import:
    """One import statement's target, as a module name of lutnas or a third-party top-level name."""

    importer: str
    imported: str
    line: int
    type_checking_only: bool
    dynamic: bool = False  # found in an importlib.import_module call


def module_name(path: Path) -> str:
    """lutnas/space/kinds.py -> lutnas.space.kinds; lutnas/space/__init__.py -> lutnas.space."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    """Module name -> file, for every .py file under lutnas/."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, type_checking: bool):
    """Yield (import node, under TYPE_CHECKING) for every import anywhere below `node`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, type_checking
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk_stmt(stmt, True)
            for stmt in child.orelse:
                yield from _walk_stmt(stmt, type_checking)
        else:
            yield from _walk(child, type_checking)


def _walk_stmt(stmt: ast.stmt, type_checking: bool):
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        yield stmt, type_checking
    else:
        yield from _walk(stmt, type_checking)


def _is_import_module_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("import_module", "__import__")


def _dynamic_targets(tree: ast.Module, importer: str, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(module, line) of the lutnas modules `importlib.import_module` calls can be read to import."""
    constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    calls = [n for n in ast.walk(tree) if _is_import_module_call(n)]
    found = []
    for call in calls:
        arg = call.args[0]
        if isinstance(arg, ast.JoinedStr) and len(arg.values) >= 2:
            head, rest = arg.values[0], arg.values[1:]
            if isinstance(head, ast.FormattedValue) and getattr(head.value, "id", "") == "__name__":
                prefix = importer
            elif isinstance(head, ast.Constant):
                prefix = str(head.value).rstrip(".")
            else:
                continue
            tail = "".join(str(v.value) for v in rest if isinstance(v, ast.Constant))
            if tail not in (".", "") or not prefix.startswith(PACKAGE):
                continue
            found += [(f"{prefix}.{c}", call.lineno) for c in sorted(constants)
                      if f"{prefix}.{c}" in modules]
        else:
            # A constant, or a name bound to constants: every lutnas module named in the file.
            names = [arg.value] if isinstance(arg, ast.Constant) else sorted(constants)
            found += [(str(n), call.lineno) for n in names if str(n) in modules and str(n) != importer]
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The most specific known module `name` refers to (`lutnas.space.BlockSpec` -> `lutnas.space`)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _absolute_base(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The module a `from ... import` reads from, with relative levels resolved against `importer`."""
    if not node.level:
        return node.module or ""
    package = importer if is_package else importer.rsplit(".", 1)[0]
    for _ in range(node.level - 1):
        package = package.rsplit(".", 1)[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(importer: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import in one file: lutnas targets as module names, others as their top-level name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: dict[Import, None] = {}  # ordered set: `from m import a, b` is one import of m
    for node, tc in _walk(tree, False):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _absolute_base(node, importer, path.name == "__init__.py")
            if base == "__future__":
                continue
            # `from pkg import name` imports the submodule pkg.name when there is one.
            targets = [f"{base}.{alias.name}" for alias in node.names] if base else []
        for target in targets:
            if target.split(".")[0] == PACKAGE:
                target = _resolve(target, modules)
            else:
                target = target.split(".")[0]
            found[Import(importer, target, node.lineno, tc)] = None
    for target, line in _dynamic_targets(tree, importer, modules):
        found[Import(importer, target, line, False, dynamic=True)] = None
    return list(found)


def all_imports() -> list[Import]:
    modules = all_modules()
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def layer_of(module: str) -> str | None:
    """The folder (layer) a lutnas module belongs to; None for the BASE modules."""
    if module in MODULE_LAYER_OVERRIDES:
        return MODULE_LAYER_OVERRIDES[module]
    if module in BASE:
        return None
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def layer_violation(imp: Import) -> str | None:
    """Why `imp` runs up the table, or None when it is allowed."""
    if not imp.imported.startswith(PACKAGE + ".") and imp.imported != PACKAGE:
        return None
    src, dst = layer_of(imp.importer), layer_of(imp.imported)
    if imp.imported in BASE or src == dst or src in UNLIMITED:
        return None
    if src is None:
        return f"{imp.importer} is a base module and may import only {sorted(BASE)}"
    if dst is None:
        return f"unknown top-level module {imp.imported} (add it to BASE or to a folder)"
    if src not in LAYERS:
        return f"folder {src!r} is not in the layer table"
    if dst not in LAYERS[src]:
        allowed = ", ".join(sorted(LAYERS[src])) or "nothing"
        return f"{src} may import only {allowed} (and errors, plotting, fileio)"
    return None


def _format(imp: Import, rule: str) -> str:
    tag = " [TYPE_CHECKING]" if imp.type_checking_only else " [importlib]" if imp.dynamic else ""
    return f"{imp.importer}:{imp.line} -> {imp.imported}{tag} ({rule})"


def test_every_module_is_parsed():
    modules = all_modules()
    assert "lutnas.space.kinds" in modules and "lutnas.cli" in modules
    # A folder missing from the table would slip through the layer check unnoticed.
    folders = {layer_of(m) for m in modules} - {None}
    assert folders <= set(LAYERS) | UNLIMITED, f"folders not in the layer table: {folders - set(LAYERS)}"


def test_imports_respect_the_layer_table():
    offending = [_format(imp, rule) for imp in all_imports() if (rule := layer_violation(imp))]
    assert not offending, (f"{len(offending)} import(s) run up DESIGN.md's layer table:\n  "
                           + "\n  ".join(offending))


def _graph(imports: list[Import]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in all_modules()}
    for imp in imports:
        if not imp.type_checking_only and imp.imported in graph and imp.imported != imp.importer:
            graph[imp.importer].add(imp.imported)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module (each holds at least one cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def cycles_in(component: list[str], graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each module of a component (deduplicated), found by BFS."""
    members, cycles, seen = set(component), [], set()
    for start in component:
        parents: dict[str, str | None] = {start: None}
        queue, cycle = [start], None
        while queue and cycle is None:
            node = queue.pop(0)
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    cycle = list(reversed(path))
                    break
                if nxt not in parents:
                    parents[nxt] = node
                    queue.append(nxt)
        if cycle:
            i = cycle.index(min(cycle))  # rotate so the same cycle prints the same way
            canonical = tuple(cycle[i:] + cycle[:i])
            if canonical not in seen:
                seen.add(canonical)
                cycles.append(list(canonical))
    return cycles


def test_no_import_cycles():
    imports = all_imports()
    graph = _graph(imports)
    where: dict[tuple[str, str], str] = {}
    for i in imports:  # imports_of lists a file's importlib targets last: a plain import names the edge
        if not i.type_checking_only:
            where.setdefault((i.importer, i.imported), f"{i.line}{' [importlib]' if i.dynamic else ''}")
    lines = []
    for component in strongly_connected(graph):
        for cycle in cycles_in(component, graph):
            hops = [f"{a}:{where[a, b]} -> {b}" for a, b in zip(cycle, cycle[1:] + cycle[:1])]
            lines.append(" ; ".join(hops) + " (cycle)")
    assert not lines, f"{len(lines)} import cycle(s) between lutnas modules:\n  " + "\n  ".join(lines)


def test_space_imports_only_stdlib_numpy_yaml():
    allowed = set(sys.stdlib_module_names) | SPACE_THIRD_PARTY
    offending = []
    for imp in all_imports():
        if layer_of(imp.importer) != "space":
            continue
        top = imp.imported.split(".")[0]
        if top == PACKAGE:
            ok = layer_of(imp.imported) == "space" or imp.imported in {PACKAGE, "lutnas.errors"}
        else:
            ok = top in allowed
        if not ok:
            offending.append(_format(imp, "space imports only stdlib, numpy, yaml and lutnas.errors"))
    assert not offending, "lutnas/space imports outside its allowance:\n  " + "\n  ".join(offending)


# Self-checks of the parser on tiny sources, so a green run means "no violations", not "saw nothing".
@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    root = tmp_path / PACKAGE
    for rel, text in {
        "__init__.py": "",
        "errors.py": "",
        "space/__init__.py": "from .kinds import X\n",
        "space/kinds.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                           "    from lutnas.tables.table import T\n"
                           "def f():\n    from lutnas.space import X\n    import torch\n"),
        "tables/table.py": "from lutnas.space import kinds\nfrom .. import errors\n",
        "tables/io.py": ("import importlib\nNAMES = ('table', 'nothing')\n"
                         "def load(n):\n    return importlib.import_module(f'lutnas.tables.{n}')\n"),
        "tables/__init__.py": ("from importlib import import_module\n"
                               "def f(n):\n    import_module(f'{__name__}.{n}')\nX = 'io'\n"),
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", root)
    return root


def test_parser_sees_relative_function_and_type_checking_imports(fake_package):
    got = {(i.importer, i.imported, i.type_checking_only) for i in all_imports()}
    assert ("lutnas.space", "lutnas.space.kinds", False) in got
    assert ("lutnas.space.kinds", "lutnas.tables.table", True) in got
    assert ("lutnas.space.kinds", "lutnas.space", False) in got
    assert ("lutnas.space.kinds", "torch", False) in got
    assert ("lutnas.tables.table", "lutnas.space.kinds", False) in got
    assert ("lutnas.tables.table", "lutnas.errors", False) in got
    dynamic = {(i.importer, i.imported) for i in all_imports() if i.dynamic}
    assert dynamic == {("lutnas.tables.io", "lutnas.tables.table"), ("lutnas.tables", "lutnas.tables.io")}
    rules = {(i.importer, i.imported) for i in all_imports() if layer_violation(i)}
    assert rules == {("lutnas.space.kinds", "lutnas.tables.table")}
    graph = _graph(all_imports())
    assert [sorted(c) for c in strongly_connected(graph)] == [["lutnas.space", "lutnas.space.kinds"]]


# Run in a fresh interpreter: a finder at the front of sys.meta_path notes the lutnas frames on the
# stack when torch is first looked up, so a failure names the import chain that pulled it in.
_TORCH_PROBE = """
import sys, traceback
class Probe:
    chain = None
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and Probe.chain is None:
            Probe.chain = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()
                           if "lutnas" in f.filename and "importlib" not in f.filename]
        return None
sys.meta_path.insert(0, Probe())
import {module}
if "torch" in sys.modules:
    loaded = sorted(m for m in sys.modules if m.startswith("lutnas"))
    print("torch imported via:", *Probe.chain, sep="\\n  ")
    print("lutnas modules loaded:", ", ".join(loaded))
    sys.exit(1)
"""


@pytest.mark.parametrize("module", ["lutnas.space", "lutnas.tables"])
def test_import_does_not_load_torch(module):
    import subprocess

    result = subprocess.run([sys.executable, "-c", _TORCH_PROBE.replace("{module}", module)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT.parent)
    assert result.returncode == 0, f"import {module} loaded torch:\n{result.stdout}{result.stderr}"
