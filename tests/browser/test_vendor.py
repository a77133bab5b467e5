"""The chart library shipped in the package is exactly the pinned npm build (so the page works
offline and its version is the one package.json names)."""

from __future__ import annotations

import json
import re

from tests.browser.vendor_chart import FILES, PACKAGE, ROOT, VENDOR


def test_vendored_files_equal_node_modules() -> None:
    for source, name in FILES.items():
        assert source.is_file(), f"{source} missing: run `npm ci`"
        assert (VENDOR / name).read_bytes() == source.read_bytes(), (
            f"{name} differs from node_modules: run `python -m tests.browser.vendor_chart`"
        )


def test_vendored_version_is_the_pinned_one() -> None:
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]["lightweight-charts"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "pin an exact version (npm install --save-exact)"
    assert json.loads((PACKAGE / "package.json").read_text())["version"] == pinned
    header = (VENDOR / "lightweight-charts.standalone.production.js").read_text()[:300]
    assert f"Lightweight Charts™ v{pinned}" in header


def test_the_page_loads_only_files_the_package_ships() -> None:
    static = VENDOR.parent
    html = (static / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
        if ref.startswith("data:"):
            continue
        assert not re.match(r"(https?:)?//", ref), f"{ref}: the page must work offline"
        assert (static / ref.removeprefix("static/")).is_file(), ref
