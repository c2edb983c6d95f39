"""Modules over 400 lines and functions over 60, in the product and bench/ (STYLE.md).

    python -m tests.ops.sizes            # one line each, longest first; exit 1 if any (make lint)

A module's size is its line count; a function's is from its `def` line (decorators
excluded) to its last line, nested functions counted again on their own.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("modpipe", "streams", "classifiers", "escalation", "bench")
MODULE_LINES = 400
FUNCTION_LINES = 60


def oversized(root: Path = ROOT) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(lines, path) of long modules and (lines, path:line qualified name) of long functions."""
    modules: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text()
            name = str(path.relative_to(root))
            lines = len(text.splitlines())
            if lines > MODULE_LINES:
                modules.append((lines, name))
            functions += _long_functions(ast.parse(text), name)
    return sorted(modules, reverse=True), sorted(functions, reverse=True)


def _long_functions(tree: ast.Module, name: str) -> list[tuple[int, str]]:
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                assert child.end_lineno is not None
                length = child.end_lineno - child.lineno + 1
                if length > FUNCTION_LINES:
                    found.append((length, f"{name}:{child.lineno} {prefix}{child.name}"))
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def main() -> int:
    modules, functions = oversized()
    for lines, name in modules:
        print(f"module   {lines:4d} lines  {name}")
    for lines, name in functions:
        print(f"function {lines:4d} lines  {name}")
    if not modules and not functions:
        print(f"no module over {MODULE_LINES} lines, no function over {FUNCTION_LINES}")
    return 1 if modules or functions else 0


if __name__ == "__main__":
    sys.exit(main())
