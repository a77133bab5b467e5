"""The package's layout rules, checked on the source: SQL lives under storage/, benchmarks under
bench/, and no module grows past 400 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import trading_helper

PACKAGE = Path(trading_helper.__file__).parent
STORAGE = PACKAGE / "storage"


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


# -- module size ------------------------------------------------------------------------------------

MAX_LINES = 400
#: modules being split in other branches of issue 12, each a named, temporary exception with its
#: length today: the test fails when one grows, and when one is split (then drop it here)
OVER_FOR_NOW: dict[str, int] = {}


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_module_over_400_lines() -> None:
    sizes = {str(f.relative_to(PACKAGE)): _lines(f) for f in sorted(PACKAGE.rglob("*.py"))}
    assert len(sizes) > 40, f"modules not found under {PACKAGE}"
    over = {name: n for name, n in sizes.items() if n > MAX_LINES and name not in OVER_FOR_NOW}
    assert not over, f"split these along their seams (at most {MAX_LINES} lines a module): {over}"
    for name, allowed in OVER_FOR_NOW.items():
        assert name in sizes, f"{name} is gone: drop it from OVER_FOR_NOW"
        assert sizes[name] > MAX_LINES, f"{name} has {sizes[name]} lines now: drop it from OVER_FOR_NOW"
        assert sizes[name] <= allowed, f"{name} grew to {sizes[name]} lines (was {allowed}): split it"
