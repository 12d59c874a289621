"""The layout is part of the product: layers that import only downwards, no circles, small modules.

The layers themselves are an import-linter contract in pyproject.toml (`lint-imports`, run by
scripts/test.sh); these tests check it too, so `pytest` alone catches a wrong-way import.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

PACKAGE = Path(__file__).resolve().parents[1] / "solo_cli"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_REASON = "# long:"  # a function over the limit says why, on the line above its def


def test_the_layers_contract_is_kept():
    assert lint_imports(config_filename=str(PACKAGE.parent / "pyproject.toml")) == 0, "run lint-imports for the imports"


def test_no_module_imports_itself_in_a_circle():
    graph = grimp.build_graph("solo_cli")
    sorter = graphlib.TopologicalSorter({m: graph.find_modules_directly_imported_by(m) for m in graph.modules})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules (over {MAX_MODULE_LINES} lines): {long}"


def test_long_functions_say_why():
    unexplained = []
    for path in _modules():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            body = node.body[1:] if ast.get_docstring(node) and len(node.body) > 1 else node.body
            length = node.end_lineno - body[0].lineno + 1  # the body: a command's many options are not its length
            if length > MAX_FUNCTION_LINES and LONG_REASON not in lines[first - 2]:
                unexplained.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert not unexplained, f"over {MAX_FUNCTION_LINES} lines without a '{LONG_REASON} why' line above: {unexplained}"


def test_tests_mirror_the_packages():
    """Every sub-package has its tests folder (tests/engine for solo_cli/engine, ...)."""
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    tests = Path(__file__).resolve().parent
    missing = [name for name in packages if not (tests / name).is_dir()]
    assert not missing, f"no tests/<package> folder for: {missing}"
