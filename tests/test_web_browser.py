"""The draw-a-digit page in a real browser: Debian's headless Chromium, driven by Selenium.

The test starts `digitlab serve` on a free port of 127.0.0.1, draws digits
stroke by stroke on the canvas (with a mouse, and with a finger through touch
pointer events), waits for the page to settle and checks that it shows the
drawn digit, a bar per class and the 28x28 image the model saw, then opens
the report tab. Screenshots go to the test's tmp_path, and also to
$DIGITLAB_SCREENSHOT_DIR when that is set.

Locally the test is skipped when Chromium, ChromeDriver, Selenium or the web
extra is missing; under CI (the CI variable set) it fails instead, since CI
installs them all.
"""

from __future__ import annotations

import importlib
import itertools
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CI = bool(os.environ.get("CI"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def missing(why: str) -> None:
    """Skip here, fail in CI: CI must never pass without having run the browser."""
    if CI:
        pytest.fail(f"{why} (CI must run the browser test)")
    pytest.skip(why)


for _name in ("fastapi", "selenium"):
    if CI:
        importlib.import_module(_name)
    else:
        pytest.importorskip(_name)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions import interaction  # noqa: E402
from selenium.webdriver.common.actions.pointer_input import PointerInput  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

Point = tuple[float, float]

# Strokes in the pad's own 280x280 coordinates, as a person would draw each digit.
DIGITS: dict[str, list[list[Point]]] = {
    "1": [[(150, 50), (145, 120), (140, 190), (138, 235)]],
    "7": [[(80, 60), (150, 58), (205, 60), (185, 110), (160, 160), (140, 215), (130, 240)]],
    "0": [[(140 + 55 * math.sin(t / 12 * math.tau), 145 - 85 * math.cos(t / 12 * math.tau))
           for t in range(13)]],
}


@pytest.fixture
def server(served_model, serve_command, tmp_path) -> Iterator[str]:
    """`digitlab serve` on a free port of 127.0.0.1; its base URL."""
    with serve_command(served_model, tmp_path) as (_process, url):
        yield url


@pytest.fixture
def browser(tmp_path) -> Iterator[webdriver.Chrome]:
    for program in (CHROMIUM, CHROMEDRIVER):
        if not program.exists():
            missing(f"{program} is not installed (Debian packages chromium and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--window-size=1200,900",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver is named outright, so Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path))
    wanted = os.environ.get("DIGITLAB_SCREENSHOT_DIR")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(wanted) / path.name)
    return path


def densify(stroke: list[Point], step: float = 8.0) -> list[Point]:
    """Points every ``step`` pixels along the stroke, so the pointer moves as a hand does."""
    points = [stroke[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(stroke):
        n = max(1, int(math.hypot(x1 - x0, y1 - y0) // step))
        points += [(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n) for i in range(1, n + 1)]
    return points


def draw(driver: webdriver.Chrome, strokes: list[list[Point]], *, touch: bool = False) -> None:
    """Draw ``strokes`` on the pad with the mouse or a finger, one pointer event per point."""
    pad = driver.find_element(By.ID, "pad")
    scale = pad.size["width"] / 280  # CSS pixels per pad pixel
    devices = [PointerInput(interaction.POINTER_TOUCH, "finger")] if touch else None
    actions = ActionChains(driver, duration=10, devices=devices)

    def at(point: Point) -> tuple[int, int]:  # offsets from the pad's centre, as Selenium wants
        return round((point[0] - 140) * scale), round((point[1] - 140) * scale)

    for stroke in strokes:
        points = densify(stroke)
        actions.move_to_element_with_offset(pad, *at(points[0])).click_and_hold()
        for point in points[1:]:
            actions.move_to_element_with_offset(pad, *at(point)).pause(0.02)
        actions.release()
    actions.perform()


def settled_answers(driver: webdriver.Chrome) -> int:
    """Wait until no prediction is pending; the number of answers shown so far."""
    WebDriverWait(driver, 15).until(lambda d: d.find_element(By.TAG_NAME, "body")
                                    .get_attribute("data-state") == "idle")
    return int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-answers") or 0)


def ink_seen(driver: webdriver.Chrome) -> int:
    """Sum of the grey levels on the page's 'what the model saw' canvas."""
    return int(driver.execute_script(
        "const c = document.getElementById('seen');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s;"))


def test_drawing_digits_then_reading_the_report(browser, server, tmp_path) -> None:
    # One browser session, as a person would use the page: starting Chromium is the slow part.
    browser.get(server)
    WebDriverWait(browser, 15).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars li")) == 10)
    for digit, touch in (("1", False), ("7", False), ("0", True)):
        check_drawing(browser, tmp_path, digit, touch=touch)
    check_tap(browser)
    check_threshold(browser, tmp_path)
    check_why(browser, tmp_path)
    check_report_tab(browser, tmp_path)

    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded
    assert all(url.startswith(server) for url in loaded), loaded
    problems = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not problems  # no script errors, no blocked (CSP) loads, no failed requests


def check_drawing(browser: webdriver.Chrome, folder: Path, digit: str, *, touch: bool) -> None:
    """Draw ``digit``; the page must read it, live, and show its bars and input; then clear."""
    before = settled_answers(browser)
    assert browser.find_element(By.ID, "label").text == "?"

    draw(browser, DIGITS[digit], touch=touch)
    after = settled_answers(browser)
    shot = screenshot(browser, folder, f"draw-{digit}")

    # Throttled, but live: at least one answer while drawing and one after the last stroke.
    assert after - before >= 2, f"only {after - before} answers while drawing a {digit}"
    pointer = browser.find_element(By.TAG_NAME, "body").get_attribute("data-pointer")
    assert pointer == ("touch" if touch else "mouse")
    assert browser.find_element(By.ID, "label").text == digit, f"drew a {digit}: see {shot}"
    best = browser.find_elements(By.CSS_SELECTOR, "#bars li.best")
    assert len(best) == 1
    assert best[0].text.startswith(digit)
    fill = best[0].find_element(By.CLASS_NAME, "fill").size["width"]
    track = best[0].find_element(By.CLASS_NAME, "track").size["width"]
    assert fill > 0.5 * track  # its bar is drawn to its probability, over half here
    assert ink_seen(browser) > 0
    assert shot.stat().st_size > 1000

    browser.find_element(By.ID, "clear").click()
    assert browser.find_element(By.ID, "label").text == "?"
    assert ink_seen(browser) == 0


def pad_ink(driver: webdriver.Chrome) -> int:
    """Sum of the red levels on the drawing pad."""
    return int(driver.execute_script(
        "const c = document.getElementById('pad');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s;"))


def check_tap(browser: webdriver.Chrome) -> None:
    """A tap leaves a round dot, which the page sends and the server reads (Chromium 156
    drew nothing for a zero-length line: a blank pad went out and came back a 422)."""
    before = settled_answers(browser)
    pad = browser.find_element(By.ID, "pad")
    ActionChains(browser, duration=10).move_to_element(pad).click().perform()
    assert settled_answers(browser) > before
    assert pad_ink(browser) > 255 * 200  # a dot of the pen's width, not a speck
    assert browser.find_element(By.ID, "label").text != "?"
    browser.find_element(By.ID, "clear").click()
    assert pad_ink(browser) == 0


def set_threshold(browser: webdriver.Chrome, value: float) -> None:
    """Move the "unknown below" slider as a person would: its value, then an input event."""
    browser.execute_script("const s = document.getElementById('min-confidence');"
                           "s.value = arguments[0]; s.dispatchEvent(new Event('input'));", value)


def check_threshold(browser: webdriver.Chrome, folder: Path) -> None:
    """At 100% the page answers "unknown" and still shows the bars; back at 0 it reads again."""
    assert browser.find_element(By.ID, "min-confidence").get_attribute("value") == "0"
    draw(browser, DIGITS["1"], touch=False)
    settled_answers(browser)
    set_threshold(browser, 1)
    settled_answers(browser)
    shot = screenshot(browser, folder, "threshold-unknown")
    assert browser.find_element(By.ID, "label").text == "unknown", f"see {shot}"
    assert "below the 100% asked for" in browser.find_element(By.ID, "confidence").text
    assert browser.find_elements(By.CSS_SELECTOR, "#bars li.best") == []
    assert max(float(v.text.rstrip("%")) for v in browser.find_elements(By.CSS_SELECTOR, "#bars .value")) > 50
    set_threshold(browser, 0)
    settled_answers(browser)
    assert browser.find_element(By.ID, "label").text == "1"
    browser.find_element(By.ID, "clear").click()


def coloured_seen(driver: webdriver.Chrome) -> int:
    """Pixels of the 'what the model saw' canvas that are not grey: the "Why?" overlay's tint."""
    return int(driver.execute_script(
        "const c = document.getElementById('seen');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 0; i < d.length; i += 4) {"
        "  if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 16) n += 1; }"
        "return n;"))


def check_why(browser: webdriver.Chrome, folder: Path) -> None:
    """"Why?" on: the image the model saw is tinted by its map (red for the answer, blue
    against), with a key; off: the plain grey image again."""
    why = browser.find_element(By.ID, "why")
    key = browser.find_element(By.ID, "why-key")
    draw(browser, DIGITS["7"], touch=False)
    before = settled_answers(browser)
    assert coloured_seen(browser) == 0
    assert not key.is_displayed()

    why.click()
    assert settled_answers(browser) > before  # asked again, now with explain=true
    shot = screenshot(browser, folder, "why-on")
    assert coloured_seen(browser) > 20, f"no overlay: see {shot}"
    red = browser.execute_script(  # some ink supported the answer: a reddish pixel
        "const c = document.getElementById('seen');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "for (let i = 0; i < d.length; i += 4) if (d[i] > d[i + 2] + 40) return true; return false;")
    assert red
    assert key.is_displayed()
    assert browser.find_element(By.ID, "why-method").text == "gradient-x-input"

    why.click()
    assert coloured_seen(browser) == 0
    assert ink_seen(browser) > 0  # the plain image is back
    assert not key.is_displayed()
    browser.find_element(By.ID, "clear").click()


def check_report_tab(browser: webdriver.Chrome, folder: Path) -> None:
    """The second tab shows report.html from beside the model file."""
    browser.find_element(By.ID, "tab-report").click()
    frame = browser.find_element(By.ID, "report-frame")
    WebDriverWait(browser, 15).until(lambda d: frame.get_attribute("src").endswith("/report"))
    assert not browser.find_element(By.ID, "draw").is_displayed()
    browser.switch_to.frame(frame)
    WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.TAG_NAME, "h1"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "mlp on mnist-sample"
    browser.switch_to.default_content()
    screenshot(browser, folder, "report-tab")
