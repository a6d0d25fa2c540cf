"""Library below, commands on top: the import graph of the package, read from the source (every import
statement, also those inside functions).

- no library module imports a command (megatron_wmss/commands/*, or the dispatcher megatron_wmss/cli.py);
- commands do not import each other (one that needs another subcommand goes through the dispatcher or
  starts it as a process);
- no import cycle between the package's folders and top-level modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "megatron_wmss"
COMMANDS = "megatron_wmss.commands"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The megatron_wmss modules `path` imports (a `from X import name` counts X and X.name)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "megatron_wmss" or m.startswith("megatron_wmss.")}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _is_command(module: str) -> bool:
    return module == "megatron_wmss.cli" or module.startswith(COMMANDS + ".")


def test_no_library_module_imports_a_command():
    bad = sorted(f"{m} -> {i}" for m, imported in _graph().items() if not _is_command(m) and m != COMMANDS
                 for i in imported if _is_command(i))
    assert not bad, bad


def test_commands_do_not_import_each_other():
    graph = _graph()
    assert len([m for m in graph if m.startswith(COMMANDS + ".")]) >= 9  # one per subcommand at least
    bad = sorted(f"{m} -> {i}" for m, imported in graph.items() if m.startswith(COMMANDS + ".")
                 for i in imported if i.startswith(COMMANDS + ".") and i != m)
    assert not bad, bad


def _unit(module: str) -> str:
    """The folder or top-level module of the package that `module` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle_between_folders():
    edges: dict[str, set[str]] = {}
    for module, imported in _graph().items():
        for target in imported:
            a, b = _unit(module), _unit(target)
            if a and b and a != b and (PACKAGE / b).exists() | (PACKAGE / f"{b}.py").exists():
                edges.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(path + [node, nxt])
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_the_checker_sees_function_local_and_relative_imports(tmp_path):
    """The parser above is what the three tests rely on: it must find imports inside functions and
    resolve relative ones."""
    imported = _imports(PACKAGE / "data" / "preprocess.py")
    assert "megatron_wmss.data.process" in imported  # `from . import process as proc`
    assert "megatron_wmss.models.build" in _imports(PACKAGE / "pipeline.py") or \
        "megatron_wmss.checkpoint" in _imports(PACKAGE / "pipeline.py")  # imports inside run_pipeline
