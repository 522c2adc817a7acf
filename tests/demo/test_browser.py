"""What a person does on each tab, in Debian's chromium through Playwright; screenshots under a tmp dir.

Skipped (with the reason) when the playwright package or /usr/bin/chromium is missing (`.ci/run` installs
chromium with apt-get). Never runs `playwright install`."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.demo.conftest import EXAMPLES

CHROMIUM = os.environ.get("KPTLLM_CHROMIUM", "/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
if not shutil.which(CHROMIUM) and not Path(CHROMIUM).is_file():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)

TIMEOUT = 120_000  # ms; the CPU may be shared


@pytest.fixture(scope="module")
def page(app, tmp_path_factory):
    shots = tmp_path_factory.mktemp("screenshots")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT)
        page.goto(app[0], wait_until="load")
        page.get_by_text("KeypointWorld").first.wait_for()
        page.shots = shots
        yield page
        browser.close()
    print(f"screenshots in {shots}")


def _tab(page, name):
    page.get_by_role("tab", name=name).click()


def _upload(page, elem_id, path):
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
    page.locator(f"#{elem_id} img").first.wait_for()


def _wait_text(page, elem_id, text):
    page.wait_for_function("([id, t]) => (document.getElementById(id)?.innerText || '').includes(t)", arg=[elem_id, text])


def _wait_rows(page, elem_id, count):
    """Until the table holds `count` marked points. Gradio 6's Dataframe renders a virtual table (its
    `tbody` rows are a sizing copy), so read the grid's `aria-rowcount` (header row included)."""
    page.wait_for_function(
        "([id, n]) => document.querySelector('#' + id + ' [role=grid]')?.getAttribute('aria-rowcount') === String(n + 1)",
        arg=[elem_id, count])


def _picture(image) -> dict:
    """Where the picture is drawn inside its <img> (input images are fitted with object-fit: contain, and may be
    zoomed): left/top on the page's viewport, the scale (screen pixels per image pixel), natural size."""
    return image.evaluate("""img => { const r = img.getBoundingClientRect();
        const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
        return {left: r.left + (r.width - img.naturalWidth * s) / 2, top: r.top + (r.height - img.naturalHeight * s) / 2,
                scale: s, natural: [img.naturalWidth, img.naturalHeight], element: [r.left, r.top]}; }""")


def _at(image, fx, fy) -> dict:
    """`position` (relative to the <img> element) of the point at fractions (fx, fy) of the drawn picture."""
    p = _picture(image)
    return {"x": p["left"] - p["element"][0] + fx * p["natural"][0] * p["scale"],
            "y": p["top"] - p["element"][1] + fy * p["natural"][1] * p["scale"]}


def _result_image(page, elem_id):
    page.locator(f"#{elem_id} img").first.wait_for()
    return page.locator(f"#{elem_id} img").first


def test_model_summary_shown(page):
    assert "not real photographs" in page.locator("#model-summary").inner_text()


def test_text_tab(page):
    _tab(page, "Text prompt (c)")
    _upload(page, "text-image", EXAMPLES / "keypointworld_person.jpg")
    page.locator("#text-bbox textarea, #text-bbox input").first.fill("63,136,84,96")
    # picking a preset fills the names box
    page.locator("#text-preset input").first.click()
    page.get_by_role("option", name=re.compile("^AP-10K")).first.click()
    page.wait_for_function("() => document.querySelector('#text-names textarea').value.includes('root of tail')")
    page.locator("#text-names textarea").fill("nose\nleft shoulder\nright knee")
    page.locator("#text-run").click()
    _result_image(page, "text-result")
    _wait_text(page, "text-table", "left shoulder")
    _wait_text(page, "text-note", "looked at the box x 63, y 136, width 84, height 96")  # what the model saw
    page.screenshot(path=str(page.shots / "text.png"), full_page=True)
    # the JSON download: COCO-style keypoints of the three names asked for, and the prompt
    with page.expect_download() as download:
        page.locator("#text-json").click()
    saved = json.loads(Path(download.value.path()).read_text())
    text = json.dumps(saved)
    assert all(name in text for name in ("nose", "left shoulder", "right knee")), text[:500]


def test_semantic_tab(page):
    _tab(page, "Keypoint semantics (a)")
    _upload(page, "sem-image", EXAMPLES / "keypointworld_person.jpg")
    image = page.locator("#sem-image img").first
    image.click(position=_at(image, 0.5, 0.5))
    _result_image(page, "sem-result")
    _wait_text(page, "sem-answer", "confidence")
    page.screenshot(path=str(page.shots / "semantic.png"), full_page=True)


def test_visual_tab(page):
    _tab(page, "Visual prompt (b)")
    _upload(page, "vis-support-1", EXAMPLES / "keypointworld_support_person.jpg")
    support = page.locator("#vis-support-1 img").first
    for n, (fx, fy) in enumerate(((0.45, 0.35), (0.5, 0.6), (0.55, 0.8)), start=1):
        shown = support.get_attribute("src")
        support.click(position=_at(support, fx, fy))
        _wait_rows(page, "vis-points", n)
        # as a person would: the next click once this one's mark is drawn (the support is redrawn with it)
        page.wait_for_function("([id, before]) => { const img = document.querySelector('#' + id + ' img');"
                               " return img && img.src !== before && img.complete && img.naturalWidth > 0; }",
                               arg=["vis-support-1", shown])
    page.locator("#vis-undo").click()
    _wait_rows(page, "vis-points", 2)
    # the first click, at 45 % / 35 % of the shown image, is stored in the support image's own pixels
    natural = support.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    cells = [c.strip() for c in page.locator("#vis-points").inner_text().split() if c.strip()]
    first = cells.index("name") + 1  # after the header: support, keypoint, x, y of the first row
    x, y = float(cells[first + 2]), float(cells[first + 3])
    assert abs(x - 0.45 * natural[0]) <= 2 and abs(y - 0.35 * natural[1]) <= 2, (x, y, natural)
    # each mark is drawn on the support itself, which keeps the original's size (clicks stay in its pixels)
    page.wait_for_function("() => (document.querySelector('#vis-support-1 img')?.src || '').includes('support-1-marked')")
    marked = page.locator("#vis-support-1 img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=marked.element_handle())
    assert marked.evaluate("img => [img.naturalWidth, img.naturalHeight]") == natural
    page.screenshot(path=str(page.shots / "visual-marks.png"), full_page=True)
    _upload(page, "vis-query", EXAMPLES / "keypointworld_person.jpg")
    page.locator("#vis-run").click()
    _result_image(page, "vis-result")
    _wait_text(page, "vis-table", "1")
    page.screenshot(path=str(page.shots / "visual.png"), full_page=True)


def test_wild_tab(page):
    _tab(page, "In the wild")
    _upload(page, "wild-image", EXAMPLES / "keypointworld_person.jpg")
    page.locator("#wild-boxes textarea").fill("63,136,84,96")
    page.locator("#wild-run").click()
    _result_image(page, "wild-result")
    page.screenshot(path=str(page.shots / "wild.png"), full_page=True)


def test_benchmarks_tab(page):
    _tab(page, "Benchmarks")
    _wait_text(page, "bench-table", "KeypointWorld")  # measured rows first (a long table renders its top rows only)
    page.locator("#bench-filters").get_by_text("Filters").first.click()  # folded: the table comes first
    page.locator("#bench-apply").click()
    page.locator("#bench-chart .js-plotly-plot, #bench-chart svg").first.wait_for()
    page.screenshot(path=str(page.shots / "benchmarks.png"), full_page=True)
    # a semantic record's breakdown: answers by kind and the most frequent confusions
    page.get_by_text("Breakdowns of a measured record").click()
    page.locator("#bench-record input").click()
    page.get_by_role("option", name="keypointworld-semantic", exact=False).first.click()
    _wait_text(page, "bench-kinds", "front/back")  # a table row (the label says "mirror" already)
    _wait_text(page, "bench-confusions", "right")
    page.screenshot(path=str(page.shots / "benchmarks_breakdown.png"), full_page=True)


def test_a_mark_appears_where_the_support_was_clicked(page):
    """The pixel under a click changes colour once the mark is drawn (read back through a canvas)."""
    _tab(page, "Visual prompt (b)")
    page.locator("#vis-clear").click()
    page.get_by_role("tab", name="Support 2").click()
    _upload(page, "vis-support-2", EXAMPLES / "keypointworld_support_person.jpg")
    support = page.locator("#vis-support-2 img").first
    read = """(img, [fx, fy]) => { const c = document.createElement('canvas'); c.width = img.naturalWidth;
        c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return Array.from(g.getImageData(Math.round(fx * c.width), Math.round(fy * c.height), 1, 1).data).slice(0, 3); }"""
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=support.element_handle())
    before = support.evaluate(read, [0.3, 0.5])
    support.click(position=_at(support, 0.3, 0.5))
    page.wait_for_function("() => (document.querySelector('#vis-support-2 img')?.src || '').includes('support-2-marked')")
    marked = page.locator("#vis-support-2 img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=marked.element_handle())
    after = marked.evaluate(read, [0.3, 0.5])
    assert after != before, (before, after)
    page.locator("#vis-clear").click()


def test_typed_html_is_shown_as_text(page):
    _tab(page, "Text prompt (c)")
    _upload(page, "text-image", EXAMPLES / "keypointworld_person.jpg")
    typed = '<a href="https://example.com/x" id="planted">click me</a>'
    page.locator("#text-bbox textarea, #text-bbox input").first.fill(typed)
    page.locator("#text-run").click()
    toast = page.locator(".toast-body").filter(has_text="four numbers").first
    toast.wait_for()
    assert 'href="https://example.com/x"' in toast.inner_text()  # the characters typed, as text
    assert page.locator("#planted").count() == 0 and toast.locator("a").count() == 0  # never a live link
    page.locator("#text-bbox textarea, #text-bbox input").first.fill("63,136,84,96")


def test_a_deep_link_opens_on_the_tab_it_was_made_in(page, app):
    """The share button's link (fetched as it fetches it) restores the text tab with its result, opened on it."""
    _tab(page, "Text prompt (c)")
    _upload(page, "text-image", EXAMPLES / "keypointworld_person.jpg")
    page.locator("#text-bbox textarea, #text-bbox input").first.fill("63,136,84,96")
    page.locator("#text-names textarea").fill("nose")
    page.locator("#text-run").click()
    _result_image(page, "text-result")
    _wait_text(page, "text-table", "nose")
    link = page.evaluate("""async () => (await (await fetch('gradio_api/deep_link?session_hash='
        + window.__gradio_session_hash__)).text()).replace(/^"|"$/g, '')""")
    assert link
    other = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        other.set_default_timeout(TIMEOUT)
        # a slow machine (CI failed here once): the tab buttons come after `load` has fired
        other.context.new_cdp_session(other).send("Emulation.setCPUThrottlingRate", {"rate": 8})
        other.goto(app[0] + "?deep_link=" + link, wait_until="load")
        try:
            other.locator("#text-table").wait_for()
        except playwright_api.TimeoutError:
            other.screenshot(path=str(page.shots / "deep_link_failed.png"), full_page=True)
            state = other.evaluate("() => [window.gradio_config?.deep_link_state, Array.from(document.querySelectorAll("
                                   "'#tabs button[role=tab]')).map(b => b.dataset.tabId + ':' + b.getAttribute('aria-selected'))]")
            pytest.fail(f"the deep link did not open the text tab: deep_link_state, tabs = {state}")
        other.wait_for_function("() => (document.getElementById('text-table')?.innerText || '').includes('nose')")
        selected = other.get_by_role("tab", selected=True).first.inner_text()
        assert "Text prompt" in selected
        assert other.locator("#text-result img").first.is_visible()
    finally:
        other.close()


def test_drawing_a_box_by_clicking_two_corners(page):
    """Text tab: two clicks on the image make the object's box in the original's pixels and draw it there."""
    _tab(page, "Text prompt (c)")
    _upload(page, "text-image", EXAMPLES / "keypointworld_person.jpg")
    image = page.locator("#text-image img").first
    natural = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    for fx, fy in ((0.25, 0.5), (0.6, 0.9)):
        shown = image.get_attribute("src")
        image.click(position=_at(image, fx, fy))
        page.wait_for_function("([id, before]) => { const img = document.querySelector('#' + id + ' img');"
                               " return img && img.src !== before && img.complete && img.naturalWidth > 0; }",
                               arg=["text-image", shown])
        image = page.locator("#text-image img").first
    page.wait_for_function("() => document.querySelector('#text-bbox textarea, #text-bbox input').value.split(',').length === 4")
    x, y, w, h = (float(v) for v in page.locator("#text-bbox textarea, #text-bbox input").first.input_value().split(","))
    assert abs(x - 0.25 * natural[0]) <= 2 and abs(y - 0.5 * natural[1]) <= 2
    assert abs(w - 0.35 * natural[0]) <= 3 and abs(h - 0.4 * natural[1]) <= 3
    assert "text-box" in image.get_attribute("src")  # the box is drawn on the image itself
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == natural
    page.screenshot(path=str(page.shots / "text-box.png"), full_page=True)


def test_gallery_opens_sorts_and_exports(page):
    """Benchmarks tab: opening the gallery shows the worst units of a record; best-first puts a perfect unit
    first; a click shows the unit large with its keypoints; the shown units export as PNG + JSON."""
    _tab(page, "Benchmarks")
    page.get_by_text("Predictions behind a record").click()
    _wait_text(page, "gal-status", "units of")
    page.locator("#gal-tiles img").first.wait_for()
    first_caption = page.locator("#gal-tiles .caption-label, #gal-tiles figcaption").first.inner_text()
    assert "PCK@0.2 0.00" in first_caption, first_caption
    page.locator("#gal-order input").click()
    page.get_by_role("option", name="best first").click()
    page.locator("#gal-show").click()
    page.wait_for_function("() => (document.querySelector('#gal-tiles .caption-label, #gal-tiles figcaption')?.innerText || '')"
                           ".includes('PCK@0.2 1.00')")
    page.locator("#gal-tiles img").first.click()
    page.locator("#gal-large img").first.wait_for()
    _wait_text(page, "gal-numbers", "truth")
    page.screenshot(path=str(page.shots / "gallery.png"), full_page=True)
    page.locator("#gal-export").click()
    try:
        _wait_text(page, "gal-files", ".json")
    finally:
        page.screenshot(path=str(page.shots / "gallery_export.png"), full_page=True)
    names = page.locator("#gal-files").inner_text().replace("\n", "")  # Gradio shows the extension apart
    assert "kptllm-gallery-decision-keypointworld-visual.png" in names and "kptllm-gallery-decision-keypointworld-visual.json" in names


def _drag(page, image, start, end):
    """Press at `start`, move in steps, release at `end` (fractions of the drawn picture)."""
    image.scroll_into_view_if_needed()
    p = _picture(image)
    width, height = p["natural"][0] * p["scale"], p["natural"][1] * p["scale"]
    page.mouse.move(p["left"] + width * start[0], p["top"] + height * start[1])
    page.mouse.down()
    page.mouse.move(p["left"] + width * end[0], p["top"] + height * end[1], steps=8)
    page.mouse.up()


def test_dragging_a_box_on_the_image(page):
    """Text tab: a drag from corner to corner fills the box field in the original's pixels and draws the box."""
    _tab(page, "Text prompt (c)")
    _upload(page, "text-image", EXAMPLES / "keypointworld_person.jpg")
    page.locator("#text-bbox textarea, #text-bbox input").first.fill("")
    image = page.locator("#text-image img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    natural = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    shown = image.get_attribute("src")
    _drag(page, image, (0.2, 0.3), (0.7, 0.8))
    page.wait_for_function("() => document.querySelector('#text-bbox textarea, #text-bbox input').value.split(',').length === 4")
    x, y, w, h = (float(v) for v in page.locator("#text-bbox textarea, #text-bbox input").first.input_value().split(","))
    # the page's image fills its box on screen along one side: allow 1.5 % of the image for letterboxing rounding
    assert abs(x - 0.2 * natural[0]) <= 4 and abs(y - 0.3 * natural[1]) <= 4, (x, y, natural)
    assert abs(w - 0.5 * natural[0]) <= 4 and abs(h - 0.5 * natural[1]) <= 4, (w, h, natural)
    page.wait_for_function("([id, before]) => { const img = document.querySelector('#' + id + ' img');"
                           " return img && img.src !== before && img.src.includes('text-box'); }", arg=["text-image", shown])
    assert page.locator(".kptllm-drag-band").count() == 0  # the dashed rectangle goes with the release


def test_dragging_on_a_support_boxes_it_without_marking_a_keypoint(page):
    _tab(page, "Visual prompt (b)")
    page.locator("#vis-clear").click()
    page.get_by_role("tab", name="Support 2").click()
    _upload(page, "vis-support-2", EXAMPLES / "keypointworld_support_person.jpg")
    # an earlier test may have left a marked copy in this slot: wait for the plain upload to be shown
    page.wait_for_function("() => { const img = document.querySelector('#vis-support-2 img');"
                           " return img && img.complete && !img.src.includes('marked'); }")
    page.locator("#vis-support-boxes textarea").fill("")
    support = page.locator("#vis-support-2 img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=support.element_handle())
    _drag(page, support, (0.1, 0.1), (0.9, 0.9))
    page.wait_for_function("() => document.querySelector('#vis-support-boxes textarea').value.split('\\n').length === 2")
    lines = page.locator("#vis-support-boxes textarea").input_value().split("\n")
    assert lines[0] == "" and len(lines[1].split(",")) == 4  # line 2 is support 2's box
    page.wait_for_function("() => (document.querySelector('#vis-support-2 img')?.src || '').includes('support-2-marked')")
    _wait_rows(page, "vis-points", 0)  # a drag is not a click: no keypoint was marked
    page.locator("#vis-support-boxes textarea").fill("")


def test_a_click_without_a_box_gets_the_detectors_box_drawn_and_written(page, examples):
    """Tab (a): upload, click on the person's left shoulder with no box: the embedded detector's box around the
    click appears in the box field and on the image, and the answer says where it came from."""
    meta = examples[0]["keypointworld_person.jpg"]
    _tab(page, "Keypoint semantics (a)")
    _upload(page, "sem-image", EXAMPLES / "keypointworld_person.jpg")
    field = page.locator("#sem-bbox textarea, #sem-bbox input").first
    page.wait_for_function("() => document.querySelector('#sem-bbox textarea, #sem-bbox input').value === ''")  # a new upload
    image = page.locator("#sem-image img").first
    natural = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    x, y, _ = meta["keypoints"][5]
    image.click(position=_at(image, x / natural[0], y / natural[1]))
    _wait_text(page, "sem-answer", "No box was given")
    page.wait_for_function("() => document.querySelector('#sem-bbox textarea, #sem-bbox input').value.split(',').length === 4")
    bx, by, bw, bh = (float(v) for v in field.input_value().split(","))
    assert bx <= x <= bx + bw and by <= y <= by + bh
    page.wait_for_function("() => (document.querySelector('#sem-image img')?.src || '').includes('semantic-box')")
    page.screenshot(path=str(page.shots / "semantic-no-box.png"), full_page=True)


# --- the page at a laptop's size: no jumps, pictures fitted to their frames, clicks on the pixel clicked ---

@pytest.fixture(scope="module")
def laptop(page):
    """A second page of the same browser at 1280 x 800 (the size the issue was measured at)."""
    small = page.context.browser.new_page(viewport={"width": 1280, "height": 800})
    small.set_default_timeout(TIMEOUT)
    small.goto(page.url, wait_until="load")
    small.get_by_text("KeypointWorld").first.wait_for()
    small.shots = page.shots
    yield small
    small.close()


def _scroll(page) -> float:
    return page.evaluate("() => window.scrollY")


def _redrawn(page, elem_id, before):
    page.wait_for_function("([id, before]) => { const img = document.querySelector('#' + id + ' img');"
                           " return img && img.src !== before && img.complete && img.naturalWidth > 0; }",
                           arg=[elem_id, before])


@pytest.mark.parametrize("tab, image_id, field_id", [
    ("Keypoint semantics (a)", "sem-image", "sem-bbox"),
    ("Visual prompt (b)", "vis-support-1", "vis-support-boxes"),
    ("In the wild", "wild-image", "wild-boxes")])
def test_the_page_stays_put_after_a_drag_and_a_click(laptop, tab, image_id, field_id):
    """The box field lies below the fold under the image: writing a dragged box into it must not scroll there
    (it did: 491-687 px), nor may the redrawn image or a click move the page."""
    page = laptop
    _tab(page, tab)
    if image_id.startswith("vis-"):
        page.locator("#vis-clear").click()
        _wait_rows(page, "vis-points", 0)
    _upload(page, image_id, EXAMPLES / "keypointworld_person.jpg")
    field = page.locator(f"#{field_id} textarea, #{field_id} input").first
    field.fill("")
    image = page.locator(f"#{image_id} img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0 && !img.src.includes('marked')",
                           arg=image.element_handle())
    # the whole image in view, its bottom at the window's: the box field under it is below the fold
    page.evaluate("img => window.scrollTo(0, window.scrollY + img.getBoundingClientRect().bottom - 790)",
                  image.element_handle())
    assert field.bounding_box()["y"] > 800, "the test needs the box field below the fold"
    before, shown = _scroll(page), image.get_attribute("src")
    _drag(page, image, (0.2, 0.1), (0.8, 0.9))
    page.wait_for_function("id => /\\d,\\d/.test(document.querySelector('#' + id + ' textarea, #' + id + ' input').value)",
                           arg=field_id)
    _redrawn(page, image_id, shown)
    page.wait_for_timeout(300)
    assert abs(_scroll(page) - before) <= 20, (tab, before, _scroll(page))
    shown = page.locator(f"#{image_id} img").first.get_attribute("src")
    page.locator(f"#{image_id} img").first.click(position=_at(page.locator(f"#{image_id} img").first, 0.5, 0.4))
    if image_id == "vis-support-1":
        _wait_rows(page, "vis-points", 1)
        _redrawn(page, image_id, shown)
    elif image_id == "sem-image":
        _wait_text(page, "sem-answer", "confidence")
    else:
        _redrawn(page, image_id, shown)  # the first corner is drawn
    page.wait_for_timeout(300)
    assert abs(_scroll(page) - before) <= 20, (tab, before, _scroll(page))
    page.screenshot(path=str(page.shots / f"no-jump-{image_id}.png"))
    field.fill("")
    if image_id.startswith("vis-"):
        page.locator("#vis-clear").click()


def _click_screen_pixel(page, image, fx, fy) -> tuple[float, float]:
    """Click the whole screen pixel nearest fractions (fx, fy) of the drawn picture (events carry whole screen
    pixels); -> that screen pixel's position in the image's own pixels, as the picture on screen says."""
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    p = _picture(image)
    cx = round(p["left"] + fx * p["natural"][0] * p["scale"])
    cy = round(p["top"] + fy * p["natural"][1] * p["scale"])
    page.mouse.click(cx, cy)
    return (cx - p["left"]) / p["scale"], (cy - p["top"]) / p["scale"]


def _asked_point(page, before: tuple[str, str]) -> tuple[str, str]:
    """The x and y fields' text once they differ from `before` (the point a click set)."""
    page.wait_for_function("([x, y]) => { const a = document.querySelector('#sem-x input').value,"
                           " b = document.querySelector('#sem-y input').value; return a !== '' && (a !== x || b !== y); }",
                           arg=list(before))
    return page.locator("#sem-x input").input_value(), page.locator("#sem-y input").input_value()


def test_clicks_arrive_at_the_pixel_clicked_enlarged_reduced_and_zoomed(laptop, tmp_path):
    """A 215 x 327 drawing is shown enlarged, a 2400 x 1800 photo-sized image reduced, and "Zoom to the box"
    enlarges either further: the point that reaches the server is the pixel under the pointer (Gradio rounds
    to whole pixels: within 0.5), not Gradio's own mapping, which assumes a picture is never enlarged."""
    from PIL import Image

    page = laptop
    _tab(page, "Keypoint semantics (a)")
    big = tmp_path / "big.png"
    Image.open(EXAMPLES / "keypointworld_person.jpg").convert("RGB").resize((2400, 1800)).save(big)
    cases = [  # image, its box, pixels to click whole, pixels to click zoomed (inside the box)
        (EXAMPLES / "keypointworld_person.jpg", (60, 100, 90, 120), [(64.5, 196.2), (152.6, 75.2)], [(75, 120), (140, 210)]),
        (big, (600, 450, 900, 700), [(960, 990), (2160, 180)], [(800, 600), (1300, 1000)])]
    last = (page.locator("#sem-x input").input_value(), page.locator("#sem-y input").input_value())
    for path, box, whole, zoomed in cases:
        _upload(page, "sem-image", path)
        image = page.locator("#sem-image img").first
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        shown = image.get_attribute("src")
        page.locator("#sem-bbox textarea, #sem-bbox input").first.fill(",".join(map(str, box)))
        page.locator("#sem-bbox textarea, #sem-bbox input").first.blur()
        _redrawn(page, "sem-image", shown)  # the typed box is drawn when the field is left
        page.evaluate("img => window.scrollTo(0, window.scrollY + img.getBoundingClientRect().top - 10)",
                      image.element_handle())
        picture = _picture(image)
        width, height = picture["natural"]
        assert (picture["scale"] > 1.2) if path != big else (picture["scale"] < 0.5), picture  # fitted to the frame
        for points, zoom in ((whole, False), (zoomed, True)):
            if zoom:
                page.locator("#sem-image-zoom").click()
                page.wait_for_function("([img, s]) => { const r = img.getBoundingClientRect();"
                                       " return Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight) > s * 1.3; }",
                                       arg=[image.element_handle(), picture["scale"]])
            for x, y in points:
                want = _click_screen_pixel(page, image, x / width, y / height)
                last = _asked_point(page, last)
                got = tuple(float(v) for v in last)
                assert abs(got[0] - want[0]) <= 0.51 and abs(got[1] - want[1]) <= 0.51, (path.name, zoom, want, got)
                _wait_text(page, "sem-answer", f"point ({got[0]:.1f}, {got[1]:.1f})")  # the model was asked there
        page.screenshot(path=str(page.shots / f"zoomed-{path.stem}.png"))
        page.locator("#sem-image-whole").click()
        page.wait_for_function("img => getComputedStyle(img).transform === 'none'", arg=image.element_handle())


def test_benchmarks_read_at_1280_by_800(laptop):
    """The results table's first row on the tab's first screen (filters folded above it), every column on screen
    without scrolling sideways, setting beside the method; the chart's bars horizontal."""
    page = laptop
    page.evaluate("() => window.scrollTo(0, 0)")
    _tab(page, "Benchmarks")
    _wait_text(page, "bench-table", "KeypointWorld")
    page.evaluate("() => window.scrollTo(0, 0)")
    table = page.evaluate("""() => { const t = document.querySelector('#bench-table');
        const row = t.querySelector('[role=row].virtual-row, [role=row]:has([role=gridcell])');
        const heads = [...t.querySelectorAll('[role=columnheader]')].map((h) => [h.innerText.trim(), h.getBoundingClientRect().right]);
        const sideways = [...t.querySelectorAll('*')].filter((e) => e.scrollWidth > e.clientWidth + 1
            && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX)).length;
        return {rowTop: row.getBoundingClientRect().top, heads, sideways, width: window.innerWidth}; }""")
    assert table["rowTop"] < 800 - 40, table  # a row's height at least is on screen
    names = [name for name, _ in table["heads"]]
    assert names[:2] == ["method", "setting"] and {"value", "low", "high", "n", "dataset", "record"} <= set(names), names
    assert all(right <= table["width"] for _, right in table["heads"]) and table["sideways"] == 0, table
    page.locator("#bench-chart .js-plotly-plot").first.wait_for()
    assert page.evaluate("() => document.querySelector('#bench-chart .js-plotly-plot').data[0].orientation") == "h"
    page.screenshot(path=str(page.shots / "benchmarks-1280.png"))
