"""Imports go one way: ui -> agent -> evals -> tools. This test reads every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["ui", "agent", "evals", "tools"]  # each may import only itself and the layers after it
FORBIDDEN_IN_TOOLS = {"langgraph", "chainlit"}


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """Return (line, module) for every import in a Python file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = path.relative_to(root).with_suffix("").parts[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def layer_violations(root: Path) -> list[str]:
    """List every import that points up the layer order, or pulls a UI/agent library into tools/."""
    problems: list[str] = []
    for index, layer in enumerate(LAYERS):
        allowed = set(LAYERS[index:])
        for path in sorted((root / layer).rglob("*.py")):
            for line, module in imported_modules(path, root):
                top = module.split(".")[0]
                if top in LAYERS and top not in allowed:
                    problems.append(f"{path.relative_to(root)}:{line} imports {module} ({layer} -> {top})")
                if layer == "tools" and top in FORBIDDEN_IN_TOOLS:
                    problems.append(f"{path.relative_to(root)}:{line} imports {module} into tools/")
    return problems


def test_layers_import_one_way() -> None:
    assert layer_violations(ROOT) == []


@pytest.mark.parametrize(
    ("layer", "source", "expected"),
    [
        ("tools", "from evals import metrics\n", "tools -> evals"),
        ("evals", "import agent.graph\n", "evals -> agent"),
        ("agent", "from ui.cli import main\n", "agent -> ui"),
        ("tools", "import langgraph\n", "into tools/"),
    ],
)
def test_checker_catches_wrong_arrows(tmp_path: Path, layer: str, source: str, expected: str) -> None:
    for name in LAYERS:
        (tmp_path / name).mkdir()
    (tmp_path / layer / "sub").mkdir()
    (tmp_path / layer / "sub" / "bad.py").write_text(source)
    problems = layer_violations(tmp_path)
    assert len(problems) == 1 and expected in problems[0]


def test_allowed_arrows_pass(tmp_path: Path) -> None:
    for name in LAYERS:
        (tmp_path / name).mkdir()
    (tmp_path / "ui" / "a.py").write_text("import agent\nimport evals.x\nfrom tools import y\n")
    (tmp_path / "tools" / "b.py").write_text("from tools.errors import LabelpilotError\nimport os\n")
    assert layer_violations(tmp_path) == []
