"""The report pages in a real headless Chromium, opened from ``file://``.

Chromium comes from Debian (``tests/setup_browser.py`` installs it before ``make test``); where it
is missing these tests skip and say so. Screenshots go to ``test-artifacts/viz/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from instkit import read_coco
from instkit.viz.pages import dataset_report, eval_report
from tests.viz.browser import Browser, find_chromium
from tests.viz.conftest import write_predictions
from tests.viz.test_pages import load_data

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian chromium not found at /usr/bin/chromium (run tests/setup_browser.py as root)",
)

THUMBS = "document.querySelectorAll('#grid .thumb').length"


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM is not None
    with Browser(CHROMIUM, width=1280, height=900) as instance:
        yield instance


@pytest.fixture(scope="module")
def dataset_page(tmp_path_factory, synthetic_coco: Path) -> Path:
    root = tmp_path_factory.mktemp("page")
    shutil.copytree(synthetic_coco.parent, root / "data")
    out = root / "report"
    dataset_report(root / "data" / synthetic_coco.name, out_dir=out, progress=False,
                   thumb_size=160, detail_size=480, page_size=5)
    return out


def _load(browser: Browser, index: Path) -> None:
    browser.console_errors()
    browser.events.clear()
    browser.open(index.as_uri())
    browser.wait_until("document.body.getAttribute('data-ready') === '1'")
    # lazy thumbnails below the fold load when scrolled to; every other image must be loaded
    browser.wait_until("Array.from(document.images).every(i => i.complete || i.loading === 'lazy')")


def test_dataset_page(browser: Browser, dataset_page: Path, artifacts: Path) -> None:
    data = load_data(dataset_page)
    _load(browser, dataset_page / "index.html")
    assert browser.console_errors() == []
    # Paginated: 5 of 8 on the first page, the rest on the second.
    assert browser.evaluate(THUMBS) == 5
    assert browser.evaluate("document.querySelectorAll('#grid .thumb img').length") == 5
    assert browser.evaluate(
        "Array.from(document.querySelectorAll('#grid .thumb img')).every(i => i.naturalWidth > 0)")
    browser.screenshot(artifacts / "dataset_page.png")
    browser.evaluate("Array.from(document.querySelectorAll('#pager button'))"
                     ".find(b => b.textContent.startsWith('next')).click()")
    assert browser.evaluate(THUMBS) == 3

    # A class filter shows exactly the images holding that class.
    rare = min((c for c in data["categories"] if c["images"] > 0), key=lambda c: c["images"])
    expected = sorted(r["id"] for r in data["images"] if rare["label"] in r["labels"])
    assert len(expected) < len(data["images"])
    browser.evaluate(f"var s = document.getElementById('f-class'); s.value = '{rare['label']}';"
                     "s.dispatchEvent(new Event('change'))")
    shown = browser.evaluate("Array.from(document.querySelectorAll('#grid .thumb'))"
                             ".map(a => +a.dataset.id)")
    assert sorted(shown) == expected[:5]
    assert browser.evaluate("document.getElementById('count').textContent").startswith(
        f"{len(expected)} of {len(data['images'])}")

    # The crowd filter too.
    browser.evaluate("var s = document.getElementById('f-class'); s.value = '';"
                     "s.dispatchEvent(new Event('change'));"
                     "var c = document.getElementById('f-crowd'); c.value = 'yes';"
                     "c.dispatchEvent(new Event('change'))")
    with_crowd = sum(1 for r in data["images"] if r["crowd"])
    assert browser.evaluate(THUMBS) == min(5, with_crowd)

    # The detail view opens on a click and lists every instance of the image.
    browser.evaluate("document.querySelector('#grid .thumb').click()")
    browser.wait_until("!document.getElementById('detail').hidden")
    first = browser.evaluate("+document.querySelector('#grid .thumb').dataset.id")
    record = next(r for r in data["images"] if r["id"] == first)
    assert browser.evaluate("document.querySelectorAll('#d-instances tbody tr.inst-row').length") \
        == record["n"]
    browser.wait_until("document.getElementById('d-img').complete && "
                       "document.getElementById('d-img').naturalWidth > 0")
    assert str(first) in browser.evaluate("document.getElementById('d-title').textContent")
    browser.screenshot(artifacts / "dataset_detail.png")
    browser.evaluate("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
    assert browser.evaluate("document.getElementById('detail').hidden")
    assert browser.console_errors() == []


def test_eval_page(browser: Browser, tinycoco: dict, tinycoco_val, tmp_path: Path,
                   artifacts: Path) -> None:
    preds = write_predictions(tinycoco_val, tmp_path / "preds.json")
    out = tmp_path / "eval"
    eval_report(tinycoco["val_json"], preds, tinycoco["val_images"], out, progress=False,
                thumb_size=200, detail_size=640)
    data = load_data(out)
    _load(browser, out / "index.html")
    assert browser.console_errors() == []
    assert browser.evaluate(THUMBS) == len(read_coco(tinycoco["val_json"]))
    # Most errors first.
    assert browser.evaluate("+document.querySelector('#grid .thumb').dataset.id") == \
        data["images"][0]["id"]
    assert browser.evaluate("document.querySelectorAll('#ap-table tbody tr').length") == \
        len(data["per_class"])
    assert browser.evaluate("document.querySelectorAll('polyline.curve').length") >= 2
    browser.screenshot(artifacts / "eval_page.png", full_page=True)
    # Clicking a class in the AP table filters the grid and highlights its curve.
    row = next(r for r in data["per_class"] if r["name"] == "broccoli")
    index = data["per_class"].index(row)
    browser.evaluate(f"document.querySelectorAll('#ap-table tbody tr')[{index}].click()")
    expected = sum(1 for r in data["images"] if row["label"] in r["labels"])
    assert browser.evaluate(THUMBS) == expected < len(data["images"])
    assert browser.evaluate("document.querySelector('polyline.curve-hl').dataset.name") == \
        "broccoli"
    browser.evaluate("document.querySelector('#grid .thumb').click()")
    browser.wait_until("!document.getElementById('detail').hidden")
    browser.wait_until("document.getElementById('d-img').naturalWidth > 0")
    first = browser.evaluate("+document.querySelector('#grid .thumb').dataset.id")
    record = next(r for r in data["images"] if r["id"] == first)
    assert browser.evaluate("document.querySelectorAll('#d-preds tbody tr').length") == \
        len(record["preds"])
    browser.screenshot(artifacts / "eval_detail.png")
    assert browser.console_errors() == []


def test_console_error_check_catches_errors(browser: Browser, dataset_page: Path) -> None:
    _load(browser, dataset_page / "index.html")
    assert browser.console_errors() == []
    browser.evaluate("console.error('probe'); setTimeout(() => { throw new Error('boom'); }, 0)")
    browser.drain(0.5)
    errors = browser.console_errors()
    assert any("probe" in e for e in errors) and any("boom" in e for e in errors)
    # A report whose data.js is missing says so on the page (and chromium logs the failed load).
    (dataset_page / "data.js").rename(dataset_page / "data.js.away")
    try:
        browser.events.clear()
        browser.open((dataset_page / "index.html").as_uri())
        assert browser.evaluate("!document.getElementById('load-error').hidden")
        assert browser.console_errors() != []
    finally:
        (dataset_page / "data.js.away").rename(dataset_page / "data.js")
