"""Size of the library: files, lines, statements (formatting-independent), lines over 119, largest modules.

    .venv/bin/python benchmarks/code_size.py [REPO]      # e.g. a `git worktree` of an older commit
"""

import ast
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
files = lines = statements = long_lines = 0
sizes = []
for package in ("toolkit", "retrieval_index", "annotation", "trainers"):
    for path in sorted((root / package).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        files, lines = files + 1, lines + n
        statements += sum(isinstance(node, ast.stmt) for node in ast.walk(ast.parse(text)))
        long_lines += sum(len(line) > 119 for line in text.splitlines())
        sizes.append((n, str(path.relative_to(root))))
largest = ", ".join(f"{name} {n}" for n, name in sorted(sizes, reverse=True)[:3])
print(f"{files} files, {lines} lines, {statements} statements, {long_lines} lines over 119; largest: {largest}")
