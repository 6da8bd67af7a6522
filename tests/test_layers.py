"""The import direction of the layers (toolkit/core/__init__.py): the core imports nothing of the toolkit
outside itself; retrieval_index, annotation and trainers import the core only (not the toolkit's stage
modules, not each other); the LLM backends import the core only. Read from the source, every import
statement (function-level ones too). Run: .venv/bin/python -m pytest -q tests/test_layers.py"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("toolkit", "retrieval_index", "annotation", "trainers")

# package (a folder under the repository root) -> what its modules may import of the project besides themselves
ALLOWED = {
    "toolkit/core": ("toolkit.core",),
    "retrieval_index": ("toolkit.core", "retrieval_index"),
    "annotation": ("toolkit.core", "annotation"),
    "trainers": ("toolkit.core", "trainers"),
    "toolkit/generation": ("toolkit.core", "toolkit.generation"),
}


def project_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module in PACKAGES:  # `from toolkit import columns`: the submodules are what is imported
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if a.name != "__version__"]
    return [(n, m) for n, m in found if m.split(".")[0] in PACKAGES and m not in PACKAGES]


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(layer):
    allowed = ALLOWED[layer]
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for line, module in project_imports(path):
            if not any(within(module, a) for a in allowed):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, f"{layer} may import only {', '.join(allowed)}:\n" + "\n".join(bad)


def test_the_check_sees_a_violation(tmp_path):
    """The reader finds both forms of import, at module level and inside a function."""
    f = tmp_path / "m.py"
    f.write_text("from toolkit import columns as C\ndef f():\n    from toolkit.cot import attach_rules\n    import trainers.run\n")
    assert project_imports(f) == [(1, "toolkit.columns"), (3, "toolkit.cot"), (4, "trainers.run")]


def test_every_module_is_small():
    """STYLE.md: a module over ~400 lines is a smell; split it by concept."""
    big = [f"{p.relative_to(ROOT)}: {n} lines" for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400]
    assert not big, "\n".join(big)
