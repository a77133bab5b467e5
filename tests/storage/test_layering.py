"""The storage layer sits below ingest: it writes what it is given and imports nothing from it."""

from __future__ import annotations

import ast
import re
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


# -- all SQL under storage/ -----------------------------------------------------------------------

PACKAGE = STORAGE.parent
#: the benchmarks build scratch tables of their own; everything else names its SQL under storage/
SQL_ANYWHERE = (STORAGE, PACKAGE / "bench")

# The project writes SQL keywords in capitals; a string that starts like a statement is one.
_STATEMENT = re.compile(
    r"^\s*(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+(AS\s+\w+\s+)?SET|DELETE\s+FROM|WITH\s+(RECURSIVE\s+)?\w+"
    r"(\s*\([^)]*\))?\s+AS\b|CREATE\s+|ALTER\s+|DROP\s+|TRUNCATE\s|COPY\s+\w+|CALL\s+\w|ANALYZE\b"
    r"|VACUUM\b|GRANT\s|REVOKE\s|LOCK\s+TABLE|REFRESH\s+MATERIALIZED|DO\s+\$\$)"
)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (module, class and function docstrings are prose)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def sql_strings(path: Path) -> list[tuple[int, str]]:
    """(line, first line) of each string literal in ``path`` that starts like an SQL statement
    (f-strings too: their literal head)."""
    tree = ast.parse(path.read_text(), str(path))
    prose = _docstrings(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        text: str | None = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            text = node.value
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            text = str(node.values[0].value)
            for part in node.values:  # the f-string's own constant parts are not walked again
                prose.add(id(part))
        if text is not None and _STATEMENT.match(text):
            found.append((node.lineno, text.strip().splitlines()[0][:80]))
    return sorted(found)


def test_no_sql_outside_storage() -> None:
    files = [f for f in sorted(PACKAGE.rglob("*.py")) if not any(f.is_relative_to(d) for d in SQL_ANYWHERE)]
    assert len(files) > 40, f"modules not found under {PACKAGE}"
    bad = [f"{f.relative_to(PACKAGE)}:{line}: {text}" for f in files for line, text in sql_strings(f)]
    assert not bad, "SQL belongs in storage/ (named statements by topic):\n" + "\n".join(bad)


def test_the_check_sees_sql(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        '"""SELECT in a docstring is prose."""\n'
        "def f(conn, name):\n"
        '    """Create the thing."""\n'
        '    conn.fetch("SELECT 1")\n'
        "    conn.execute(f'CREATE DATABASE \"{name}\"')\n"
        '    Q = """\nWITH day AS (SELECT 1)\nSELECT * FROM day\n"""\n'
        '    U = "UPDATE live_coverage SET open = false"\n'
        '    label = "NIFTY MID SELECT"\n'
        '    hint = "copy its address from the browser"\n'
    )
    assert [line for line, _ in sql_strings(probe)] == [4, 5, 6, 10]
    assert sql_strings(STORAGE / "sql_coverage.py"), "the named statements themselves are seen"


def test_benchmarks_live_under_bench() -> None:
    bench = PACKAGE / "bench"
    stray = [
        str(f.relative_to(PACKAGE))
        for f in sorted(PACKAGE.rglob("*.py"))
        if "bench" in f.stem and not f.is_relative_to(bench)
    ]
    assert not stray, f"benchmark code belongs under bench/: {stray}"
    assert (bench / "query.py").is_file() and (bench / "ingest.py").is_file()
