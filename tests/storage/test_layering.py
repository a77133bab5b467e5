"""The storage layer sits below ingest: it writes what it is given and imports nothing from it."""

from __future__ import annotations

import ast
from pathlib import Path

import trading_helper.storage

STORAGE = Path(trading_helper.storage.__file__).parent


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                package = path.relative_to(STORAGE.parent.parent).with_suffix("").parts[: -node.level]
                base = ".".join((*package, base)) if base else ".".join(package)
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def test_storage_imports_nothing_from_ingest() -> None:
    files = sorted(STORAGE.rglob("*.py"))
    assert len(files) > 5, f"storage modules not found under {STORAGE}"
    bad = [
        f"{f.relative_to(STORAGE.parent)}:{line} imports {name}"
        for f in files
        for line, name in _imports(f)
        if name == "trading_helper.ingest" or name.startswith("trading_helper.ingest.")
    ]
    assert not bad, bad


def test_the_check_sees_an_ingest_import(tmp_path: Path) -> None:
    probe = STORAGE / "ticks.py"
    names = [name for _, name in _imports(probe)]
    assert "trading_helper.storage.pgcopy" in names  # what the walk reads is what the module imports
    fake = tmp_path / "x.py"
    fake.write_text("from trading_helper.ingest import codec\nimport trading_helper.ingest.volume as v\n")
    assert [n for _, n in _imports(fake) if n.startswith("trading_helper.ingest")] == [
        "trading_helper.ingest",
        "trading_helper.ingest.codec",
        "trading_helper.ingest.volume",
    ]
