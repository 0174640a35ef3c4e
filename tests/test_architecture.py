"""The package keeps its layers (ARCHITECTURE.md): read every module's imports with ``ast`` and check who imports
whom, that no import circle exists, and that no module outgrows one job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fnac_lab"
MAX_LINES = 450
#: The package root, ``fnac_lab/__init__.py``: above every layer, and it imports nothing eagerly (lazy exports).
ROOT = "fnac_lab"

#: Layers, bottom up (ARCHITECTURE.md). A module may import its own layer or lower ones, never a higher one.
LAYERS = [
    {"utils", "coercion", "paper", "losses", "metrics", "audio", "distributed", "tensorboard_events"},
    {"data", "models", "methods", "ogl"},
    {"config", "parameters", "pretrain", "checkpoint", "published_checkpoints", "datasets", "scoring", "benchmark_evaluation", "train"},
    {"analysis", "viz", "ablate", "papermill_engine"},
    {"cli", "__main__"},
    {ROOT},
]
PURE = {"coercion", "losses", "metrics", "audio"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or ROOT


def imports_of(path: Path) -> set[str]:
    """The ``fnac_lab`` modules a file imports (at module level or inside functions), as dotted names."""
    name = module_name(path)
    package = [] if name == ROOT else name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import x
                    found.update(".".join(base + [alias.name]) for alias in node.names)
                    continue
            elif node.module and node.module.startswith("fnac_lab"):
                target = node.module[len("fnac_lab."):] if "." in node.module else ""
            else:
                continue
            found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name[len("fnac_lab."):] for a in node.names if a.name.startswith("fnac_lab."))
    return {t for t in found if t and resolve(t)}


def resolve(dotted: str) -> str | None:
    """The module a dotted name refers to (a name imported from a module resolves to that module)."""
    parts = dotted.split(".")
    while parts:
        candidate = PACKAGE.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts = parts[:-1]
    return None


GRAPH = {module_name(p): {resolve(t) for t in imports_of(p)} - {module_name(p)}
         for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_every_module_has_a_layer():
    """Each module's top-level name is in exactly one layer, and each name in a layer is a module that exists."""
    tops = {m.split(".")[0] for m in GRAPH}
    for top in tops:
        assert sum(top in names for names in LAYERS) == 1, f"{top} is in no layer or in several (ARCHITECTURE.md)"
    listed = set().union(*LAYERS)
    assert listed == tops, f"layers name modules that do not exist: {sorted(listed - tops)}"


def test_the_package_root_imports_nothing_eagerly():
    """``import fnac_lab.losses, fnac_lab.metrics`` loads neither timm nor the models (lazy root exports), and every
    lazily exported name exists in the module it points at."""
    import subprocess
    import sys

    assert GRAPH[ROOT] == set()
    code = ("import sys, fnac_lab.losses, fnac_lab.metrics; "
            "print(sorted(m for m in sys.modules if m == 'timm' or m.startswith('fnac_lab')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['fnac_lab', 'fnac_lab.losses', 'fnac_lab.metrics', 'fnac_lab.utils']"
    import fnac_lab

    for name in fnac_lab.__all__:
        assert callable(getattr(fnac_lab, name)), name


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_nothing_imports_upward(module):
    upward = sorted(t for t in GRAPH[module] if layer(t) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports {upward}"


def test_no_import_circle():
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1  # on the current path
        for target in sorted(GRAPH[node]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[node] = 2  # done

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def in_data(module: str) -> bool:
    return module.split(".")[0] == "data"


def test_the_data_package_knows_no_model_loop_or_configuration():
    for module, targets in GRAPH.items():
        if in_data(module):
            allowed = {t for t in targets if in_data(t) or t in {"audio", "metrics", "utils"}}
            assert targets == allowed, f"{module} imports {sorted(targets - allowed)}"


def test_pure_modules_configuration_and_models():
    for module in PURE:
        assert GRAPH[module] <= {"utils"}, f"{module} imports {sorted(GRAPH[module])}"
    assert GRAPH["config"] <= {"utils", "coercion", "losses", "metrics", "audio", "data.catalogue", "methods",
                               "methods.settings"}, sorted(GRAPH["config"])
    methods = {t for m, targets in GRAPH.items() if m.split(".")[0] == "methods" for t in targets}
    assert {t.split(".")[0] for t in methods} <= {"methods", "losses", "coercion", "utils"}, sorted(methods)
    assert GRAPH["data.catalogue"] == set()
    assert not {t for t in GRAPH["models"] if t.split(".")[0] in {"data", "config", "train", "scoring"}}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by job"


def test_the_checker_sees_imports():
    """The checker itself: relative, nested and function-level imports all count."""
    assert {"checkpoint", "datasets", "scoring", "data.sampling"} <= GRAPH["train"]
    assert "train" in GRAPH["analysis.runs"] and "benchmark_evaluation" in GRAPH["cli"]  # cli imports inside functions
    assert "data.catalogue" in GRAPH["config"]


MAX_FUNCTION_LINES = 80


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_stay_short(path):
    """No function of ``fnac_lab`` is over 80 lines: a longer one is several named steps."""
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: {', '.join(long)}"
