"""The package's import graph: no cycle, no tool importing a tool above it, `core/` self-contained.

Layers, lowest first: ``core`` (the TRL extension; the package root re-exports its public names), ``models`` (the
model loader every tool uses), ``data``, ``envs``, ``pipeline``, ``demo``, ``cli``. A module may import its own layer
and the layers below it. Every import that runs is counted, function-local ones included (read from the source, not
from `sys.modules`); imports under ``if TYPE_CHECKING:`` never run and are not. A ``__main__`` module is an entry
point that nothing imports: it may start the CLI. A module's own parent packages are loaded before it, so an import
of one is no edge.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dmpo_trl


PACKAGE = Path(dmpo_trl.__file__).parent
LAYERS = ("core", "models", "data", "envs", "pipeline", "demo", "cli")


def _module_name(path: Path) -> str:
    parts = ["dmpo_trl", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """Every dmpo_trl module `path` imports, anywhere in the file (``from pkg import name``: the submodule when `name`
    is one, else the package)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return {name for name in found if name == "dmpo_trl" or name.startswith("dmpo_trl.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = _imports(path, name, set(modules))
        missing = sorted(t for t in targets if t not in modules)
        assert not missing, f"{name} imports modules that do not exist: {missing}"
        graph[name] = targets - {name}
    return graph


def _layer(module: str) -> str | None:
    if module == "dmpo_trl":  # the root re-exports core's public names (lazily)
        return "core"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_layers_import_only_downwards():
    bad = []
    for module, targets in _graph().items():
        layer = _layer(module)
        if layer is None or module == "dmpo_trl" or module.endswith(".__main__"):
            continue
        for target in targets:
            other = _layer(target)
            if other is None or LAYERS.index(other) > LAYERS.index(layer):
                bad.append(f"{module} -> {target}")
    assert not bad, "imports from a lower layer to a higher one (or outside the layers):\n" + "\n".join(sorted(bad))


def test_core_imports_nothing_outside_core():
    core = [m for m in _graph() if m.startswith("dmpo_trl.core.")]
    assert "dmpo_trl.core.trainer" in core and "dmpo_trl.core.rows.tokenization" in core
    graph = _graph()
    bad = [f"{m} -> {t}" for m in core for t in graph[m] if not t.startswith("dmpo_trl.core")]
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = _graph()
    # packages import their submodules; a submodule importing its package `__init__` is what makes a cycle
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_graph_walk_sees_function_local_imports():
    """The walk reads function bodies: `cli.train` imports the row preparation (torch, datasets) inside a function."""
    assert "dmpo_trl.core.rows.preparation" in _graph()["dmpo_trl.cli.train"]


def test_importing_the_trainer_loads_only_core():
    code = (
        "import sys, dmpo_trl.core.trainer; "
        "print('\\n'.join(m for m in sys.modules if m.startswith('dmpo_trl.') and not m.startswith('dmpo_trl.core')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == []


# Packages a function may import without saying why: optional extras, or heavy libraries a light command must not load
# (`dmpo-trl --help` under 5 s, `dmpo-trl validate` without TRL).
LAZY_PACKAGES = {
    "accelerate",
    "bitsandbytes",
    "datasets",
    "deepspeed",
    "gguf",
    "huggingface_hub",
    "matplotlib",
    "peft",
    "py4j",
    "pyarrow",
    "safetensors",
    "scienceworld",
    "textworld_express",
    "tokenizers",
    "torch",
    "tqdm",
    "transformers",
    "trl",
}


def _function_local_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, has a comment on its line or above its run of imports) per import inside a function."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for func in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Import):
                name = node.names[0].name
            elif isinstance(node, ast.ImportFrom):
                name = "." * node.level + (node.module or "")
            else:
                continue
            above = node.lineno - 2  # a comment above a run of imports covers the run
            while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
                above -= 1
            commented = "#" in lines[node.lineno - 1] or (above >= 0 and lines[above].strip().startswith("#"))
            found.append((node.lineno, name, commented))
    return found


def test_function_local_imports_are_lazy_for_a_reason():
    """A function imports lazily only an optional or heavy package (`LAZY_PACKAGES`), or says why in a comment."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, name, commented in _function_local_imports(path):
            if name.split(".")[0] not in LAZY_PACKAGES and not commented:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name}")
    assert not bad, "function-local imports without a reason (move them to the top or add a `# reason`):\n" + (
        "\n".join(bad)
    )


def test_local_import_rule_catches_an_unexplained_import(tmp_path):
    module = tmp_path / "m.py"
    source = (
        "def f():\n    import json\n\n    import os\n\n\ndef g():\n    # lazy: why\n    import json\n    import os\n"
    )
    module.write_text(source)
    assert _function_local_imports(module) == [
        (2, "json", False),
        (4, "os", False),
        (9, "json", True),
        (10, "os", True),
    ]
