"""The module structure of ``ragrec``: no import cycles, no reaching into private modules.

The graph holds module-level imports only (those inside functions run late, on use, and
those under ``if TYPE_CHECKING:`` never run); a ``from package import name`` counts as an
import of ``package.name`` when that is a module (and of ``package`` only when a name
is not a module: the package's own namespace must be initialised then).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ragrec

SRC = Path(ragrec.__file__).parent
ROOT = "ragrec"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, *, runtime: bool) -> set[str]:
    """The ragrec modules ``module`` imports: with ``runtime``, those at module level
    that run on import (not under ``if TYPE_CHECKING:``); else every import statement,
    inside functions too."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                names = [f"{target}.{alias.name}" for alias in node.names]
                found.update(names)
                if not all(name in MODULES for name in names):
                    found.add(target)  # a name defined in the package itself
            elif isinstance(node, ast.If):
                if not (runtime and _is_type_checking(node.test)):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    tree = ast.parse(path.read_text(encoding="utf-8"))
    visit(tree.body if runtime else [n for n in ast.walk(tree) if isinstance(n, ast.stmt)])
    return {name for name in found if name in MODULES and name != module}


def _package_of(module: str) -> str:
    """The package a module belongs to: ``ragrec.eval`` for ``ragrec.eval._runner``;
    ``ragrec`` for the top-level modules (``ragrec._version``, ``ragrec.config``)."""
    if MODULES[module].name == "__init__.py":
        return module
    return module.rpartition(".")[0]


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read() -> None:
    graph = {m: _imports(m, runtime=True) for m in MODULES}
    assert "ragrec.errors" in graph["ragrec.config"]
    assert "ragrec.eval._rankers" in graph["ragrec.eval._runner"]


def test_no_import_cycle() -> None:
    graph = {m: _imports(m, runtime=True) for m in MODULES}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _private_imports() -> list[str]:
    found = []
    for module in MODULES:
        for target in sorted(_imports(module, runtime=False)):
            private = any(part.startswith("_") for part in target.split(".")[1:])
            owner = _package_of(target)
            if private and owner != ROOT and not (module + ".").startswith(owner + "."):
                found.append(f"{module} imports {target}")
    return found


def test_no_private_import_across_packages() -> None:
    assert _private_imports() == []


def test_loading_the_config_skips_the_heavy_eval_modules() -> None:
    code = (
        "import sys, ragrec.config\n"
        "heavy = ['ragrec.eval._runner', 'ragrec.eval._llm_ranker', 'ragrec.eval._cf_rankers',"
        " 'ragrec.eval._retrieval_rankers', 'ragrec.eval._grid', 'ragrec.eval._protocol']\n"
        "ragrec.config.load_config(eval={'ranker': 'als', 'metrics': ['ndcg@10']})\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_name_of_ragrec_eval_resolves() -> None:
    import ragrec.eval

    for name in ragrec.eval.__all__:
        assert getattr(ragrec.eval, name) is not None, name
    assert set(ragrec.eval.__all__) <= set(dir(ragrec.eval))
    with pytest.raises(AttributeError, match="no_such_name"):
        ragrec.eval.no_such_name  # noqa: B018
