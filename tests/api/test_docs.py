"""``/docs`` and ``/redoc`` load only files the package ships, and those files are the pinned npm
builds (see tests/browser/vendor_docs.py); tests/browser/test_docs_offline.py renders them offline."""

from __future__ import annotations

import re

import httpx

from tests.api.conftest import Api
from tests.browser.vendor_docs import PACKAGES, SUMS, VENDOR, sha256


def test_vendored_docs_files_are_the_pinned_builds() -> None:
    listed = dict(reversed(line.split("  ", 1)) for line in SUMS.read_text().splitlines())
    expected = {target for _, files, _ in PACKAGES.values() for target in files.values()}
    assert set(listed) == expected
    for name, digest in listed.items():
        assert sha256(VENDOR / name) == digest, f"{name} changed: run `python -m tests.browser.vendor_docs`"
    for _, (version, files, marker) in PACKAGES.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version)
        main = VENDOR / next(iter(files.values()))
        assert marker in main.read_text(errors="replace"), f"{main.name} is not version {version}"


async def test_docs_pages_reference_only_the_packages_files(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        for page in ("/docs", "/redoc"):
            html = (await anonymous.get(page)).text
            refs = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)
            assert refs and not re.search(r"https?://", html), (page, refs)
            for ref in refs:
                asset = await anonymous.get(ref)
                assert asset.status_code == 200, (page, ref)
            assert "/openapi.json" in refs
