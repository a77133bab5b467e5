"""The pre-commit hooks run exactly the checks of ``make lint``: same commands, same order."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def lint_recipe() -> list[str]:
    """The commands of the Makefile's ``lint`` target, ``$(BIN)/`` spelled as the venv path."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"lint\s*:", line))
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        if not line.strip().startswith("@#"):  # a recipe's comment, not a command
            commands.append(line.strip().replace("$(BIN)/", ".venv/bin/"))
    return commands


def hook_commands() -> list[str]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    for hook in hooks:
        # the whole tree every time, as make lint does: not only the staged files
        assert hook["language"] == "system", hook["id"]
        assert hook["pass_filenames"] is False, hook["id"]
        assert hook["always_run"] is True, hook["id"]
    return [hook["entry"] for hook in hooks]


def test_the_lint_target_has_the_four_checks() -> None:
    assert lint_recipe() == [
        ".venv/bin/ruff format --check src tests",
        ".venv/bin/ruff check src tests",
        ".venv/bin/mypy",
        ".venv/bin/pytest -q -p no:cacheprovider tests/test_layout.py",
    ]


def test_pre_commit_runs_what_make_lint_runs() -> None:
    assert hook_commands() == lint_recipe()


def test_mypy_is_strict_on_src() -> None:
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["strict"] is True
    assert mypy["files"] == ["src"]
    assert "ignore_missing_imports" not in mypy  # only per-module overrides, each with its reason
