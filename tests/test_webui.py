"""The web page (``GET /ui``) in a real browser: Debian's Chromium driven by Playwright,
against a live ``bentoml serve`` of the split deployment (and one test of ``--single``).

Screenshots go to each test's tmp_path; with ``UI_FIGURES=docs/figures`` they are also
written there (that is how the README's picture is made: see docs/webui.md).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image

from tests.serving import ROOT, served
from zoo.data.synthetic import generate
from zoo.io import coco_rle_to_labels, outlines, read_image
from zoo.viz import composite, label_colours, overlay

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
DEMO = ROOT / "samples" / "demo.tif"
MAX_PIXELS = 600 * 600
LAPTOP = {"width": 1440, "height": 900}
WAIT_MS = 240_000
pytestmark = [
    pytest.mark.skipif(not (ROOT / "models.yaml").is_file(), reason="no shipped zoo"),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to drive (apt-get install chromium; "
                                                ".ci/run installs it)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                                             "(pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def home(service_home) -> Path:
    return service_home


@pytest.fixture(scope="module")
def url(service_url) -> Iterator[str]:
    """The shared split service (``tests/conftest.py``; ``ZOO_MAX_PIXELS`` is 600²)."""
    yield service_url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, url):
    """A fresh laptop-sized page; JavaScript errors fail the test, and every request the
    page makes is recorded (``page.requests``)."""
    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.requests = []  # type: ignore[attr-defined]
    tab.on("request", lambda request: tab.requests.append(request.url))  # type: ignore[attr-defined]
    yield tab
    context.close()
    assert errors == [], errors


@pytest.fixture
def shot(tmp_path):
    """``shot(page, name)``: a screenshot in tmp_path, and in ``$UI_FIGURES`` when set."""
    def take(page, name: str, **options) -> Path:
        path = tmp_path / name
        page.screenshot(path=str(path), **options)
        if os.environ.get("UI_FIGURES"):
            target = Path(os.environ["UI_FIGURES"])
            target = target if target.is_absolute() else ROOT / target
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / name)
        return path

    return take


# --------------------------------------------------------------------------- helpers


def _tiff(path: Path, array: np.ndarray) -> Path:
    if array.ndim == 3:
        tifffile.imwrite(path, np.moveaxis(array, -1, 0), photometric="minisblack",
                         metadata={"axes": "CYX"})
    else:
        tifffile.imwrite(path, array)
    return path


def _api(url: str, path: Path, **fields) -> dict:
    response = httpx.post(f"{url}/segment", files={"image": (path.name, path.read_bytes())},
                          data={k: str(v) for k, v in fields.items()}, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def _labels(body: dict) -> np.ndarray:
    return coco_rle_to_labels(body["masks"], tuple(body["shape"][:2]))


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def _open(page, url: str, query: str = "") -> None:
    page.goto(f"{url}/ui{query}")
    sync_api.expect(page.locator("#server")).to_contain_text("models ready", timeout=30_000)


def _item(page, name: str):
    return page.locator(".file", has=page.locator(".name", has_text=re.compile(f"^{re.escape(name)}$")))


def _wait(page, name: str, status: str = "done"):
    item = _item(page, name)
    sync_api.expect(item).to_have_attribute("data-status", status, timeout=WAIT_MS)
    return item


def _overlay_rgba(page) -> np.ndarray:
    """The overlay canvas's pixels, ``(Y, X, 4)`` uint8."""
    data = page.evaluate("""() => {
        const canvas = document.getElementById('overlay');
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let text = '';
        for (let i = 0; i < pixels.length; i += 8192) text += String.fromCharCode(...pixels.subarray(i, i + 8192));
        return {width: canvas.width, height: canvas.height, data: btoa(text)};
    }""")
    flat = np.frombuffer(base64.b64decode(data["data"]), np.uint8)
    return flat.reshape(data["height"], data["width"], 4)


def _download(page, label: str, folder: Path) -> Path:
    with page.expect_download() as info:
        page.get_by_role("button", name=label, exact=True).click()
    download = info.value
    path = folder / download.suggested_filename
    download.save_as(path)
    return path


# --------------------------------------------------------------------------- the page


def test_the_page_is_one_self_contained_file(url):
    response = httpx.get(f"{url}/ui", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", html, re.I)
    assert "<script src" not in html.lower() and "<link rel=\"stylesheet\"" not in html.lower()
    config = json.loads(re.search(r'<script id="config" type="application/json">(.*?)</script>',
                                  html, re.S).group(1))
    from zoo.io import OUTPUT_FORMATS

    assert set(config["formats"]) == set(OUTPUT_FORMATS)


def test_an_upload_shows_the_overlay_the_route_and_the_apis_count(url, page, shot, tmp_path):
    others = [_tiff(tmp_path / f"{style}.tif", generate(style, seed=21, shape=(256, 256)).image)
              for style in ("cyto", "nuclei")]
    _open(page, url, "?nucleus=1")
    page.set_input_files("#files", [str(DEMO), *map(str, others)])
    item = _wait(page, "demo.tif")
    for other in others:
        _wait(page, other.name)
    sync_api.expect(page.locator(".file.selected .name")).to_have_text("demo.tif")
    body = _api(url, DEMO, channels="0,1")
    assert body["n_cells"] > 10
    sync_api.expect(page.locator("#count")).to_have_text(_cells(body["n_cells"]))
    sync_api.expect(item.locator(".meta")).to_contain_text(f"{body['n_cells']} cells · {body['model']}")
    sync_api.expect(page.locator("#sum-model")).to_have_text(body["model"])
    route = body["route"]
    sync_api.expect(page.locator("#route .reason")).to_have_text(route["reason"])
    sync_api.expect(page.locator("#route .model")).to_have_text(route["model"])
    sync_api.expect(page.locator("#route .badge")).to_have_text(
        "out of distribution" if route["ood"] else "in distribution")
    sync_api.expect(page.locator("#route .dist")).to_contain_text(f"{route['distance']:.3f}")
    # the overlay: the API's cell outlines, in zoo.viz.label_colours
    labels = _labels(body)
    rgba = _overlay_rgba(page)
    edge = outlines(labels)
    np.testing.assert_array_equal(rgba[..., 3] == 255, edge)
    np.testing.assert_array_equal(rgba[..., 3][~edge], 0)
    np.testing.assert_array_equal(rgba[edge][:, :3], label_colours(labels[edge]))
    # the false-colour preview is zoo.viz.composite of the whole image
    preview = page.evaluate("() => [document.getElementById('preview').naturalWidth, "
                            "document.getElementById('preview').src]")
    assert preview[0] == 384
    png = httpx.post(f"{url}/preview", files={"image": DEMO.read_bytes()}, timeout=60)
    expected = np.round(composite(read_image(DEMO)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png.content))), expected)
    assert png.headers["x-cellzoo-shape"] == "384,384,2"
    sync_api.expect(page.locator("#legend")).to_have_text(
        "Channels: 0 green (cytoplasm) 1 magenta (nucleus)")
    # histogram: one bar per occupied bin, every cell counted
    counts = [int(t.rsplit(": ", 1)[1]) for t in page.locator("#histogram rect title").all_text_contents()]
    assert sum(counts) == body["n_cells"]
    # timings: every server stage, plus the upload
    stages = page.locator("#timings .timing > span:first-child").all_text_contents()
    assert stages == ["upload", *[k for k in body["timings_ms"] if k != "total"]]
    # the style map: every reference, the clusters, and the image's star when the route places it
    stylemap = httpx.get(f"{url}/stylemap", timeout=30).json()
    assert page.locator("#stylemap svg circle:not(.near)").count() == len(stylemap["points"])
    assert page.locator("#stylemap .clusters li").count() == len(stylemap["clusters"])
    assert page.locator("#map-star").count() == (1 if route.get("map") else 0)
    assert page.locator("#stylemap .thumbs figure").count() == len(route.get("neighbours", []))
    assert page.locator("#stylemap .clusters li.active").text_content().startswith(route["cluster_name"])
    # offline-ready: the page asked its own server only
    assert all(r.startswith((url, "data:", "blob:")) for r in page.requests), page.requests
    page.set_viewport_size({"width": 1440, "height": 1180})  # tall enough for the style map
    page.locator("#zoom-fit").click()
    page.evaluate("document.activeElement.blur()")
    page.mouse.move(2, 2)
    shot(page, "ui_result.png")


def test_switching_the_model_reruns_and_the_url_keeps_the_settings(url, page):
    _open(page, url, "?nucleus=1")
    page.set_input_files("#files", str(DEMO))
    _wait(page, "demo.tif")
    auto = page.locator("#sum-model").text_content()
    page.select_option("#model", "cpnet.tissue")
    page.fill("#diameter", "18")
    sync_api.expect(page.locator("#stale")).to_be_visible()
    assert "model=cpnet.tissue" in page.url and "diameter=18" in page.url and "nucleus=1" in page.url
    page.get_by_role("button", name="Segment again").click()
    item = _item(page, "demo.tif")
    sync_api.expect(item.locator(".meta")).to_contain_text("cpnet.tissue", timeout=WAIT_MS)
    body = _api(url, DEMO, model="cpnet.tissue", channels="0,1", diameter=18)
    assert body["model"] != auto
    sync_api.expect(page.locator("#count")).to_have_text(_cells(body["n_cells"]))
    sync_api.expect(page.locator("#route")).to_contain_text("You chose cpnet.tissue")
    sync_api.expect(page.locator("#stale")).to_be_hidden()
    # a link to the page brings the same settings back
    page.goto(page.url)
    sync_api.expect(page.locator("#server")).to_contain_text("models ready", timeout=30_000)
    assert page.input_value("#model") == "cpnet.tissue"
    assert page.input_value("#nucleus") == "1" and page.input_value("#cyto") == "0"
    assert page.input_value("#diameter") == "18"


def test_downloads_are_the_clis_outputs(url, page, home, tmp_path):
    from typer.testing import CliRunner

    from tests.cli_images import local_zoo_env
    from zoo.cli.main import app

    out = tmp_path / "cli"
    with local_zoo_env(home):
        result = CliRunner().invoke(app, ["segment", str(DEMO), "--channels", "0,1", "--out",
                                          str(out), "--overlay"])
    assert result.exit_code == 0, result.output
    cli_labels = tifffile.imread(out / "demo_masks.tif")
    _open(page, url, "?nucleus=1")
    page.set_input_files("#files", str(DEMO))
    _wait(page, "demo.tif")
    got = tmp_path / "browser"
    tiff = _download(page, "Labels, TIFF", got)
    assert tiff.name == "demo_masks.tif"
    np.testing.assert_array_equal(tifffile.imread(tiff), cli_labels)
    png = _download(page, "Labels, PNG", got)
    np.testing.assert_array_equal(read_image(png), cli_labels)
    coco = json.loads(_download(page, "COCO JSON", got).read_text())
    assert len(coco["annotations"]) == cli_labels.max()
    np.testing.assert_array_equal(
        coco_rle_to_labels(coco["annotations"], cli_labels.shape), cli_labels)
    geojson = json.loads(_download(page, "GeoJSON", got).read_text())
    assert len(geojson["features"]) == cli_labels.max()
    with zipfile.ZipFile(_download(page, "ImageJ ROIs (zip)", got)) as rois:
        assert len(rois.namelist()) == cli_labels.max()
    picture = _download(page, "Overlay, PNG", got)
    assert picture.name == "demo_overlay.png"
    np.testing.assert_array_equal(read_image(picture), read_image(out / "demo_overlay.png"))
    np.testing.assert_array_equal(read_image(picture), overlay(read_image(DEMO), cli_labels))


def test_bad_files_show_readable_errors_beside_them(url, page, tmp_path, shot):
    truncated = _tiff(tmp_path / "cut.tif", generate("cyto", seed=3, shape=(96, 96)).image)
    truncated.write_bytes(truncated.read_bytes()[:600])
    text = tmp_path / "notes.tif"
    text.write_text("these are my notes, not an image")
    large = tmp_path / "large.png"
    Image.fromarray(np.zeros((700, 600), np.uint8)).save(large)
    good = _tiff(tmp_path / "good.tif", generate("nuclei", seed=4, shape=(96, 96)).image)
    _open(page, url)
    page.set_input_files("#files", [str(p) for p in (truncated, text, large, good)])
    _wait(page, "good.tif")
    titles = {truncated: "This image is damaged or unreadable · 400",
              text: "Not an image cellzoo can read · 415", large: "Too large for this server · 413"}
    for path, title in titles.items():
        error = _wait(page, path.name, "error").locator(".error")
        sync_api.expect(error).to_be_visible()
        sync_api.expect(error).to_have_attribute("role", "alert")
        sync_api.expect(error.locator("b")).to_have_text(title)
        api = httpx.post(f"{url}/segment", files={"image": (path.name, path.read_bytes())},
                         timeout=60)
        assert str(api.status_code) == title[-3:]
        message = api.json()["error"]["message"]
        assert message.startswith("<bytes>: ")  # the page leaves out the server's name for an upload
        sync_api.expect(error.locator("span")).to_contain_text(message.removeprefix("<bytes>: "))
    sync_api.expect(_item(page, "good.tif").locator(".error")).to_have_count(0)
    _item(page, "notes.tif").locator(".file-open").click()
    shot(page, "ui_errors.png")
    # a bad setting: the server's message names the field
    page.get_by_label("Cell diameter, pixels").fill("-4")
    _item(page, "notes.tif").get_by_role("button", name="Remove notes.tif").click()
    page.get_by_role("button", name="Segment again").click()
    error = _wait(page, "good.tif", "error").locator(".error")
    sync_api.expect(error.locator("b")).to_have_text("A setting is not valid · 400")
    sync_api.expect(error).to_contain_text("diameter")


def test_a_large_upload_shows_upload_and_processing_progress(url, page, tmp_path):
    rng = np.random.default_rng(0)
    big = _tiff(tmp_path / "big.tif", rng.normal(100, 10, (590, 590, 4)).astype(np.float32))
    assert big.stat().st_size > 5_000_000
    _open(page, url)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                  "downloadThroughput": -1,
                                                  "uploadThroughput": 1_500_000})
    page.set_input_files("#files", str(big))
    seen = page.evaluate("""() => new Promise((resolve) => {
        const seen = new Set();
        const look = () => {
          const item = document.querySelector('.file');
          const busy = document.getElementById('busy');
          seen.add(item.querySelector('.meta').textContent.replace(/^.* · /, ''));
          if (!busy.hidden) seen.add('banner: ' + busy.textContent);
          if (['done', 'error'].includes(item.dataset.status)) resolve([...seen]); else setTimeout(look, 50);
        };
        look();
    })""")
    uploading = [int(s.split()[1][:-1]) for s in seen if re.fullmatch(r"uploading \d+%", s)]
    assert any(10 <= p <= 90 for p in uploading), seen
    assert any(re.fullmatch(r"segmenting… \d+ s", s) for s in seen), seen
    assert any(re.fullmatch(r"banner: Uploading… \d+%", s) for s in seen), seen
    assert any(re.fullmatch(r"banner: Segmenting… \d+ s", s) for s in seen), seen
    sync_api.expect(_item(page, "big.tif")).to_have_attribute("data-status", "done")


def test_keyboard_labels_zoom_pan_and_opacity(url, page):
    _open(page, url, "?nucleus=1")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "files"  # the file picker comes first
    for control in page.locator("input, select, button").all():
        name = control.evaluate("""(el) => (el.labels && el.labels.length ? el.labels[0].textContent :
                                            el.getAttribute('aria-label') || el.textContent).trim()""")
        assert name, control.evaluate("(el) => el.outerHTML")
    page.set_input_files("#files", str(DEMO))
    _wait(page, "demo.tif")
    fit = page.locator("#zoom-level").text_content()
    page.focus("#viewport")
    page.keyboard.press("+")
    page.keyboard.press("+")
    zoomed = page.locator("#zoom-level").text_content()
    assert int(zoomed[:-1]) > int(fit[:-1])
    before = page.evaluate("document.getElementById('stage').style.transform")
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.getElementById('stage').style.transform") != before
    page.keyboard.press("0")
    sync_api.expect(page.locator("#zoom-level")).to_have_text(fit)
    page.focus("#opacity")
    for _ in range(4):
        page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.getElementById('overlay').style.opacity") == "0.8"
    assert "opacity=80" in page.url
    page.focus("input[name=mode][value=outlines]")
    page.keyboard.press("ArrowRight")  # radio group: the next choice, Filled
    sync_api.expect(page.locator("#overlay")).to_have_attribute("data-mode", "filled")
    rgba = _overlay_rgba(page)
    body = _api(url, DEMO, channels="0,1")
    labels = _labels(body)
    inside = (labels > 0) & ~outlines(labels)
    assert (rgba[..., 3][inside] == 110).all() and (rgba[..., 3][labels == 0] == 0).all()
    assert "view=filled" in page.url


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_colours_follow_the_system_and_fit_a_small_laptop(url, browser, scheme, shot):
    context = browser.new_context(viewport={"width": 1366, "height": 768}, color_scheme=scheme)
    try:
        tab = context.new_page()
        _open(tab, url, "?nucleus=1")
        background = tab.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        red, green, blue = (int(v) for v in re.findall(r"\d+", background)[:3])
        luminance = (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255
        assert luminance < 0.2 if scheme == "dark" else luminance > 0.8, background
        tab.set_input_files("#files", str(DEMO))
        _wait(tab, "demo.tif")
        assert tab.evaluate("document.documentElement.scrollWidth <= innerWidth")
        assert tab.evaluate("document.documentElement.scrollHeight <= innerHeight")
        box = tab.locator("#viewport").bounding_box()
        assert box["width"] >= 600 and box["height"] >= 550, box
        for card in ("#count", "#route .reason"):
            sync_api.expect(tab.locator(card)).to_be_in_viewport()
        if scheme == "dark":
            shot(tab, "ui_dark.png")
    finally:
        context.close()


def test_helper_endpoints_answer_in_the_api_error_shape(url, home):
    from zoo.pipeline import Zoo
    from zoo.settings import Settings

    stylemap = httpx.get(f"{url}/stylemap", timeout=30).json()
    bank = Zoo(settings=Settings(home=home, device="cpu")).router.bank
    assert [p["ref"] for p in stylemap["points"]] == bank.refs
    assert [c["name"] for c in stylemap["clusters"]] == bank.names
    missing = httpx.get(f"{url}/reference/{bank.refs[0]}.png", timeout=30)
    if bank.thumbnails is None:
        assert missing.status_code == 404
        assert missing.json()["error"] == {"status": 404, "type": "not_found", "field": "ref",
                                           "message": "the style bank has no thumbnails of its "
                                                      "references"}
    else:
        assert missing.status_code == 200 and missing.headers["content-type"] == "image/png"
    unknown = httpx.get(f"{url}/reference/no-such-ref.png", timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "ref"
    bad = httpx.post(f"{url}/export", files={"masks": b"{}"}, data={"output": "bmp"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "output"
    bad = httpx.post(f"{url}/export", files={"masks": b"not json"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "masks"
    empty = httpx.post(f"{url}/preview", files={"image": b""}, timeout=30)
    assert empty.status_code == 400 and set(empty.json()["error"]) == {"status", "type", "message",
                                                                     "field"}


def test_the_single_process_service_serves_the_page_too(browser, tmp_path):
    image = _tiff(tmp_path / "cells.tif", generate("cyto", seed=11, shape=(128, 128)).image)
    zoo = str(Path(sys.executable).parent / "zoo")
    with served("", tmp_path, command=[zoo, "serve", "--single", "--workers", "1"]) as base:
        context = browser.new_context(viewport=LAPTOP)
        try:
            tab = context.new_page()
            _open(tab, base, "?nucleus=1")
            tab.set_input_files("#files", str(image))
            _wait(tab, "cells.tif")
            body = _api(base, image, channels="0,1")
            sync_api.expect(tab.locator("#count")).to_have_text(_cells(body["n_cells"]))
            sync_api.expect(tab.locator("#sum-model")).to_have_text(body["model"])
        finally:
            context.close()


def test_a_stuck_server_shows_503_and_when_to_retry(browser, tmp_path):
    import signal

    from tests.test_service import _network_worker

    image = _tiff(tmp_path / "cells.tif", generate("phase", seed=5, shape=(96, 96)).image)
    env = {"ZOO_NETWORK_TIMEOUT": "3", "ZOO_RETRY_AFTER": "7"}
    with served("zoo.service.app:CellZoo", tmp_path, env=env) as base:
        worker = _network_worker(tmp_path)
        context = browser.new_context(viewport=LAPTOP)
        try:
            tab = context.new_page()
            _open(tab, base)
            worker.send_signal(signal.SIGSTOP)  # the network service stops answering
            try:
                tab.set_input_files("#files", str(image))
                error = _wait(tab, "cells.tif", "error").locator(".error")
                sync_api.expect(error.locator("b")).to_have_text(
                    "The server is busy or restarting · 503")
                sync_api.expect(error).to_contain_text("did not answer in time")
                sync_api.expect(error).to_contain_text("Try again in 7 s.")
            finally:
                worker.send_signal(signal.SIGCONT)
            tab.get_by_role("button", name="Segment again").click()  # and then it works
            _wait(tab, "cells.tif")
        finally:
            context.close()
