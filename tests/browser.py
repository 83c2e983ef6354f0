"""Headless Chromium for the page tests of every tier: Debian's /usr/bin/chromium driven by
Python playwright (no browser download), a fresh profile per page, page errors collected."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"  # screenshots (gitignored)
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                    "(scripts/system-packages.sh installs it; CI runs this test)")


@contextlib.contextmanager
def chromium_page():
    pytest.importorskip("playwright.sync_api", reason="needs the python playwright package (test extra)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))  # fresh --user-data-dir
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(profile), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
                viewport={"width": 1280, "height": 900})
            page = context.pages[0] if context.pages else context.new_page()
            page.errors = []
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            page.set_default_timeout(30_000)
            try:
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def open_study_list(page, url: str, token: str, study: str):
    """The page's list of studies, with the token entered; returns the study's row."""
    page.goto(url + "/")
    page.fill("#token", token)
    page.dispatch_event("#token", "change")
    row = page.locator(f"tr[data-study='{study}']")
    row.wait_for()
    return row
