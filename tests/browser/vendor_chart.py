"""Copy the chart library's standalone production build from node_modules into the package.

``python -m tests.browser.vendor_chart`` after changing the pinned ``lightweight-charts`` version
in package.json (and ``npm ci``). The copy is committed, so the chart page works offline and the
Python package needs no Node.js; tests/browser/test_vendor.py checks that it equals node_modules.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "node_modules" / "lightweight-charts"
VENDOR = ROOT / "src" / "trading_helper" / "api" / "static" / "vendor"

#: node_modules file -> vendored file name
FILES = {
    PACKAGE
    / "dist"
    / "lightweight-charts.standalone.production.js": "lightweight-charts.standalone.production.js",
    PACKAGE / "LICENSE": "lightweight-charts.LICENSE",
}


def vendor() -> list[Path]:
    missing = [str(src) for src in FILES if not src.is_file()]
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)}; run `npm ci` in {ROOT}")
    VENDOR.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(src, VENDOR / name)) for src, name in FILES.items()]


if __name__ == "__main__":
    for path in vendor():
        print(f"vendored {path.relative_to(ROOT)}")
