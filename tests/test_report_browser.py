"""The HTML report of the tiny pipeline opened in a real browser (headless Chromium, Debian's package, driven by
Playwright): every figure it registers is shown and loads, every table renders, and the pages are not blank."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import snakemake
from matplotlib import image as mpimg

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What the report registers per category: figures, HTML tables and CSV files (offered for download).
EXPECTED = {
    "Training": {".png": 1},
    "Segmentations": {".png": 1},
    "Weight maps": {".png": 1},
    "Metrics": {".png": 1, ".html": 1, ".csv": 2},
}


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (`make test` installs Debian's chromium as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-zygote"])
        yield browser
        browser.close()


def _not_blank(path) -> None:
    pixels = mpimg.imread(path)[..., :3]
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, path


def test_the_report_shows_every_figure_and_table_in_a_browser(pipeline, browser, tmp_path):
    run = snakemake(pipeline, "--configfile", "tiny.yaml", "--report", str(tmp_path / "report.html"))
    assert run.returncode == 0, run.stderr[-3000:]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    url = (tmp_path / "report.html").as_uri()

    def open_category(name: str) -> None:
        page.goto(url)
        page.get_by_text(name, exact=True).first.click()
        page.wait_for_selector("a[iconname=eye]")

    page.goto(url)
    page.wait_for_selector("text=unetflow: U-Net segmentation of EM volumes")
    page.screenshot(path=tmp_path / "home.png")
    _not_blank(tmp_path / "home.png")
    for category, expected in EXPECTED.items():
        open_category(category)
        files = [t.split()[0] for t in page.locator("tr").all_inner_texts() if t.strip().startswith("results/")]
        assert {k: sum(f.endswith(k) for f in files) for k in expected} == expected, (category, files)
        for i, name in enumerate(files):
            if name.endswith(".csv"):
                continue  # a download, not a view
            open_category(category)
            page.locator("tr", has_text=name).locator("a[iconname=eye]").click()
            if name.endswith(".png"):
                page.wait_for_function(
                    "Array.from(document.images).some(i => i.src.startsWith('data:image/png') && i.complete"
                    " && i.naturalWidth > 100)"
                )
            else:
                page.wait_for_timeout(500)
                tables = sum(f.locator("table", has_text="rand_error").count() for f in page.frames)
                assert tables >= 2, f"{name}: its tables did not render"
            page.screenshot(path=tmp_path / f"{category}-{i}.png")
            _not_blank(tmp_path / f"{category}-{i}.png")
    page.close()
