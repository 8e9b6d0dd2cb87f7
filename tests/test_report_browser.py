"""`cimtool report`'s HTML in a real browser: headless Chromium (the system's, driven by Playwright)
loads a report of real artifacts (the default model, its mapping, SNN, a small sweep, its NeuroSim run
where NeuroSim builds here, and a device fit) and must decode every figure, log no console error, fail
no request, fit the page width and show no two pieces of text over each other; a full-page screenshot
is kept for a person to look at.

Skips with one line where the ``playwright`` package (the ``test`` extra) or Chromium (Debian:
``apt-get install chromium``; ``CIMTOOL_CHROMIUM`` names another binary) is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cimtool import artifacts
from cimtool.cli import main
from tests.test_report_devices import device_kind, write_device_artifact

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]  # root needs --no-sandbox


def chromium() -> str | None:
    """The Chromium binary: $CIMTOOL_CHROMIUM, else the first of CHROMIUM_NAMES on PATH."""
    if os.environ.get("CIMTOOL_CHROMIUM"):
        return shutil.which(os.environ["CIMTOOL_CHROMIUM"])
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


# every line box of every text node (HTML and SVG text) as the browser laid it out, and the pairs of
# boxes of different text that intersect by more than a pixel each way (touching is not overlapping)
OVERLAPS_JS = """() => {
  const boxes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    if (!text || node.parentElement.closest('script,style')) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const r of range.getClientRects())
      if (r.width > 0 && r.height > 0) boxes.push({text: text.slice(0, 60), r});
  }
  const found = [];
  for (let i = 0; i < boxes.length; i++)
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i].r, b = boxes[j].r;
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 1 && h > 1) found.push([boxes[i].text, boxes[j].text]);
    }
  return found;
}"""


def overlapping_text(page) -> list[tuple[str, str]]:
    """The pairs of texts on ``page`` whose boxes intersect."""
    return [tuple(pair) for pair in page.evaluate(OVERLAPS_JS)]


def _cimtool(*args) -> None:
    try:
        main([str(a) for a in args] + ["--quiet"])
    except SystemExit as exc:
        assert exc.code == 0, f"cimtool {' '.join(map(str, args))} exited {exc.code}"


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("needs the playwright package (pip install -e '.[test]')")
    executable = chromium()
    if executable is None:
        pytest.skip("needs Chromium (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        try:  # the system's Chromium, not a Playwright download
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Error as exc:
            pytest.skip(f"Chromium ({executable}) does not start: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def report(browser, tmp_path_factory, request) -> artifacts.Artifact:
    """A report over real artifacts, built with the stages' own commands on small settings."""
    model, _, _ = request.getfixturevalue("default_model")  # not a parameter: after a browser skip, nothing
    base = tmp_path_factory.mktemp("browser-report")
    arts = base / "artifacts"
    _cimtool("map-weights", "--model", model.path, "--weight-bits", "4", "--evaluate", "--trials", "2",
             "--out", arts / "cmap")
    _cimtool("calibrate-threshold", "--model", model.path, "--out", arts / "snn")
    _cimtool("sweep", "--model", arts / "snn", "--weight-bits", "4,8", "--adc-bits", "4,8",
             "--timesteps", "1,8", "--trials", "1", "--out", arts / "sweep")
    paths = [model.path, arts / "cmap", arts / "snn", arts / "sweep", arts / "device"]
    try:  # NeuroSim's section where NeuroSim builds here (the run is shared with the NeuroSim tests)
        neurosim = request.getfixturevalue("neurosim_run")
        paths += [neurosim.path, Path(neurosim.manifest["inputs"][0]["path"])]  # and its trace
    except pytest.skip.Exception:
        pass
    with device_kind():
        write_device_artifact(arts / "device")
        _cimtool("report", *paths, "--title", "cimtool report (browser test)", "--out", base / "report")
    return artifacts.load(base / "report", "report")


def _check_sees_overlaps(browser) -> None:
    """The overlap check catches what it is for (HTML text and SVG text drawn over other text) and
    passes text side by side or on lines of its own."""
    page = browser.new_page(viewport={"width": 800, "height": 600})
    page.set_content("<p>a line of its own</p><p>another <code>line</code> with <b>parts</b></p>"
                     "<div style='position:relative;height:40px'>"
                     "<span style='position:absolute;left:10px;top:0'>first label</span>"
                     "<span style='position:absolute;left:40px;top:4px'>second label</span></div>"
                     "<svg width='300' height='60'><text x='10' y='30'>an SVG label</text>"
                     "<text x='30' y='34'>its neighbour</text><text x='200' y='30'>apart</text></svg>")
    assert sorted(overlapping_text(page)) == [("an SVG label", "its neighbour"),
                                              ("first label", "second label")]
    page.close()


def test_report_in_headless_chromium(report, browser, tmp_path, record_property):
    _check_sees_overlaps(browser)
    console, errors, failed = [], [], []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfailed", lambda r: failed.append(f"{r.url[:80]}: {r.failure}"))
    page.on("response", lambda r: failed.append(f"{r.url[:80]}: HTTP {r.status}") if r.status >= 400
            else None)
    page.goto((report.path / "report.html").as_uri(), wait_until="load")
    images = page.evaluate("[...document.images].map(i => ({name: i.dataset.name, complete: i.complete,"
                           " width: i.naturalWidth, height: i.naturalHeight}))")
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    record_property("screenshot", str(shot))
    print(f"screenshot: {shot}")
    assert len(images) == report.summary["figures"] >= 7, images  # curves, sweep ×3, device, levels, …
    undecoded = [i["name"] for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert not undecoded, f"figures the browser could not decode: {undecoded}"
    assert page.evaluate("document.body.dataset.imagesLoaded") == str(len(images))  # the page's own count
    assert not errors, errors
    assert not [m for m in console if m.startswith("error")], console
    assert not failed, failed
    headings = page.locator("h2").all_inner_texts()
    assert {"Sources", "Accuracy across stages (test split)", "Device cards", "Chip geometry",
            "Spiking networks: accuracy vs T (val)", "Design-space sweeps", "Device fits",
            "Conductance levels"} <= set(headings), headings
    chip_texts = page.locator("h2:has-text('Accuracy across stages') + div.table tbody td:nth-child(3)")
    assert chip_texts.count() == report.summary["accuracy_rows"]
    assert all(text.strip() for text in chip_texts.all_inner_texts())  # device, bits, effects on every row
    for width in (1280, 800):  # nothing runs off the right edge (the page never scrolls sideways)
        page.set_viewport_size({"width": width, "height": 900})
        overflow = page.evaluate("document.documentElement.scrollWidth"
                                 " - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a {width} px window"
        assert overlapping_text(page) == [], f"text over text at {width} px"
    page.close()
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[0] > 2000 and pixels.std() > 0.05  # a long page, not a blank one

