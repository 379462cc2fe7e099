"""The package's import graph is one-way: no cycle, and no layer imports a higher one.

Every module of ``src/pointrend`` is parsed with ``ast``; every import counts, at module level and
inside functions (a function-local import is still a dependency, only a later one). The layers,
lowest first:

0. the core and its helpers: ``points``, ``head``, ``render``, ``settings``, ``options``,
   ``backbones``, ``data``, ... (every module not named below);
1. the task packages: ``instance``, ``semantic``; and ``evaluation``, which reads their outputs
   (compact instance masks);
2. ``interop`` (other frameworks' checkpoints as task models);
3. ``engine`` and what runs on it: ``export``, ``demo``;
4. the public entry points: the package itself (``pointrend``: its lazy ``Predictor``),
   ``models`` (its ``from_zoo`` loads through the engine), the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "pointrend"

LAYERS = {  # module prefix -> layer; the longest matching prefix wins, the rest is layer 0
    "pointrend.instance": 1,
    "pointrend.semantic": 1,
    "pointrend.evaluation": 1,
    "pointrend.interop": 2,
    "pointrend.engine": 3,
    "pointrend.export": 3,
    "pointrend.demo": 3,
    "pointrend.models": 4,
    "pointrend.cli": 4,
    "pointrend.cli_convert": 4,
    "pointrend.cli_options": 4,
    "pointrend.__main__": 4,
}
LAYER_NAMES = ("core", "tasks", "interop", "engine", "entry points")


def module_files(root: Path = SRC / PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` of the package (``__init__``: the package)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` (its file ``path``) imports, anywhere in the file.

    ``from X import Y`` is an import of ``X.Y`` when that is a module, else of ``X``; relative
    imports are resolved against ``name`` (a package's ``__init__`` is the package itself).
    """
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                source = ".".join(anchor + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" for alias in node.names]
            targets = [t if t in known else source for t in targets]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import a.b.c``: the module a.b.c
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None`` (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer(module: str) -> int:
    if module == PACKAGE:
        return len(LAYER_NAMES) - 1
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(matches, key=len)] if matches else 0


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``"a (layer) imports b (layer)"`` for every import of a higher layer."""
    found = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer(target) > layer(source):
                found.append(
                    f"{source} ({LAYER_NAMES[layer(source)]}) imports "
                    f"{target} ({LAYER_NAMES[layer(target)]})"
                )
    return found


def test_the_graph_sees_every_kind_of_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .a import f\n")
    (package / "a.py").write_text("def f():\n    from .sub import b\n    import pkg.sub.c\n")
    (package / "sub" / "__init__.py").write_text("from .. import a\n")
    (package / "sub" / "b.py").write_text("from ..x import g\n")
    (package / "x.py").write_text("g = 1\n")
    (package / "sub" / "c.py").write_text("from . import b\nfrom .b import f\n")
    files = module_files(package)
    graph = {n: imported_modules(n, p, set(files)) for n, p in files.items()}
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b", "pkg.sub.c"},
        "pkg.sub": {"pkg.a"},
        "pkg.sub.b": {"pkg.x"},
        "pkg.sub.c": {"pkg.sub.b"},
        "pkg.x": set(),
    }
    assert find_cycle(graph) is None
    graph["pkg.sub.b"].add("pkg.a")
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    if cycle:
        pytest.fail("import cycle: " + " -> ".join(cycle))


def test_no_layer_imports_a_higher_one():
    found = upward_imports(import_graph())
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_every_layer_prefix_names_a_module():
    graph = import_graph()
    assert all(any(m == p or m.startswith(p + ".") for m in graph) for p in LAYERS)
