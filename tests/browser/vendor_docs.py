"""Copy Swagger UI and ReDoc from their npm packages into the package, so ``/docs`` and ``/redoc``
work offline (FastAPI's defaults load them from a CDN, without an integrity hash).

``python -m tests.browser.vendor_docs`` after changing a version below. The packages are fetched
with ``npm pack`` (npm checks the registry's integrity hash) rather than listed in package.json:
ReDoc's npm package pulls React and a few hundred other packages in, and only these prebuilt
bundles are needed. The copies are committed with their SHA-256 in ``SHA256SUMS``;
tests/api/test_docs.py checks the files against it and their versions against the pins here.
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "src" / "trading_helper" / "api" / "static" / "vendor" / "docs"
SUMS = VENDOR / "SHA256SUMS"

#: npm package -> (exact version, {file in the package: vendored name}, text the main file holds)
PACKAGES: dict[str, tuple[str, dict[str, str], str]] = {
    "swagger-ui-dist": (
        "5.35.0",
        {
            "package/swagger-ui-bundle.js": "swagger-ui-bundle.js",
            "package/swagger-ui.css": "swagger-ui.css",
            "package/favicon-32x32.png": "favicon-32x32.png",
            "package/LICENSE": "swagger-ui.LICENSE",
        },
        'PACKAGE_VERSION:"5.35.0"',
    ),
    "redoc": (
        "2.5.4",
        {
            "package/bundles/redoc.standalone.js": "redoc.standalone.js",
            "package/LICENSE": "redoc.LICENSE",
        },
        '"2.5.4"',
    ),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vendor() -> list[Path]:
    VENDOR.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (version, files, _) in PACKAGES.items():
            out = (
                subprocess.run(
                    ["npm", "pack", f"{name}@{version}", "--pack-destination", tmp, "--silent"],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            with tarfile.open(Path(tmp) / out) as tar:
                for member, target in files.items():
                    source = tar.extractfile(member)
                    if source is None:
                        raise SystemExit(f"{name}@{version} has no {member}")
                    path = VENDOR / target
                    path.write_bytes(source.read())
                    written.append(path)
    SUMS.write_text("".join(f"{sha256(p)}  {p.name}\n" for p in sorted(written)))
    return written


if __name__ == "__main__":
    for path in vendor():
        print(f"vendored {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")
