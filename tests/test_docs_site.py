"""The documentation site: it builds with --strict, every page renders in a real browser, and its
figures are the ones docs/make_figures.py makes.

Needs the ``docs`` extra (mkdocs, mkdocs-material, mkdocstrings, latex2mathml, selenium) and
Debian's ``chromium`` and ``chromium-driver``. Without them these tests are skipped with the
reason, except under CI (``CI`` set), which must run them: there they fail. A screenshot of every
page is saved in ``build/docs-screenshots/`` for CI to keep.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import numpy as np
import pytest
import yaml
from PIL import Image, ImageSequence

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "docs" / "figures"
SCREENSHOTS = REPO / "build" / "docs-screenshots"
BROWSERS = {"chromium": "/usr/bin/chromium", "chromedriver": "/usr/bin/chromedriver"}
WINDOW = (1280, 1024)
PAGE_TIMEOUT_S = 30
#: Fewer characters of text than this in a page's article means a stub.
MIN_PAGE_TEXT = 400


def missing(what: str) -> None:
    """Skip, saying what is missing; fail under CI, which must run the documentation tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI must build and browse the docs: see .ci/run)")
    pytest.skip(what)


def nav_pages() -> list[tuple[str, str]]:
    """(title, source path) of every page in mkdocs.yml's nav, in order."""

    def walk(items) -> Iterator[tuple[str, str]]:
        for item in items:
            for title, value in item.items():
                if isinstance(value, list):
                    yield from walk(value)
                else:
                    yield title, value

    return list(walk(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]))


def page_url(base: str, source: str) -> str:
    """The URL mkdocs gives a page (use_directory_urls): a.md -> a/, x/index.md -> x/."""
    stem = source.removesuffix(".md")
    path = "" if stem == "index" else stem.removesuffix("/index") + "/"
    return base + path


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built with ``mkdocs build --strict`` into a temporary folder."""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        missing("mkdocs/mkdocstrings are not installed: pip install -c constraints.txt -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}{proc.stderr[-6000:]}"
    return out


@pytest.fixture(scope="module")
def server(site) -> Iterator[str]:
    """The built site over HTTP on a free port of 127.0.0.1; yields its base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for every page, driven by selenium through Debian's chromedriver."""
    paths = {name: shutil.which(name) or default for name, default in BROWSERS.items()}
    absent = [name for name, path in paths.items() if not Path(path).is_file()]
    if absent:
        missing(f"{' and '.join(absent)} not found: apt-get install chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed: pip install -c constraints.txt -e '.[docs]'")
    options = webdriver.ChromeOptions()
    options.binary_location = paths["chromium"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=paths["chromedriver"]))
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def test_site_builds_with_every_nav_page(site):
    pages = nav_pages()
    assert len(pages) >= 20
    for _, source in pages:
        assert (REPO / "docs" / source).is_file(), f"mkdocs.yml names {source}, which is not in docs/"
        assert (site / page_url("", source) / "index.html").is_file(), f"{source} was not built"


# What each page's rendered HTML must not contain: a placeholder a hook failed to fill, maths left
# as TeX, a Sphinx role mkdocstrings printed verbatim.
LEFTOVERS = {
    "<!-- cdraw-": "a marker of docs/hooks/cdraw_docs.py was not replaced",
    'class="arithmatex"': "maths was not turned into MathML",
    ":class:`": "a Sphinx role was not turned into a link",
    ":func:`": "a Sphinx role was not turned into a link",
}
# JavaScript run on each page.
H1_TEXT = """
const h1 = document.querySelector("article h1");
if (!h1) return null;
const copy = h1.cloneNode(true);
copy.querySelectorAll(".headerlink").forEach(a => a.remove());
return copy.textContent.trim();
"""
IMAGES = "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
IMAGES_DONE = "return Array.from(document.images).every(i => i.complete);"
NAV_LINKS = "return Array.from(document.querySelectorAll('nav.md-nav--primary a.md-nav__link[href]')).map(a => a.href);"
CONTENT_LINKS = "return Array.from(document.querySelectorAll('article a[href]')).map(a => a.href);"


def test_every_page_renders_in_chromium(server, browser):
    """Each page shows its title, all its pictures load, every link it has leads to a page that exists."""
    from selenium.webdriver.support.ui import WebDriverWait

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    links: set[str] = set()
    problems: list[str] = []
    for title, source in nav_pages():
        url = page_url(server, source)
        browser.get(url)
        WebDriverWait(browser, PAGE_TIMEOUT_S).until(lambda d: d.execute_script(IMAGES_DONE))
        browser.save_screenshot(str(SCREENSHOTS / (source.removesuffix(".md").replace("/", "_") + ".png")))

        h1 = browser.execute_script(H1_TEXT)
        if h1 != title:
            problems.append(f"{source}: the page's h1 is {h1!r}, the nav calls it {title!r}")
        for src, complete, width in browser.execute_script(IMAGES):
            if not (complete and width > 0):
                problems.append(f"{source}: image {src} did not load")
        text = browser.execute_script("return document.querySelector('article').innerText")
        if len(text) < MIN_PAGE_TEXT:
            problems.append(f"{source}: only {len(text)} characters of text: a stub?")
        html = browser.page_source
        problems += [f"{source}: {why}" for leftover, why in LEFTOVERS.items() if leftover in html]
        if source.startswith("api/") and not browser.execute_script(
            "return document.querySelectorAll('.doc-object').length"
        ):
            problems.append(f"{source}: mkdocstrings rendered no object")
        links.update(browser.execute_script(NAV_LINKS))
        links.update(browser.execute_script(CONTENT_LINKS))

    ours = {urldefrag(link).url for link in links if urlsplit(link).netloc == urlsplit(server).netloc}
    expected = {page_url(server, source) for _, source in nav_pages()}
    assert expected <= ours, f"pages missing from the navigation: {sorted(expected - ours)}"
    for link in sorted(ours):
        try:
            with urllib.request.urlopen(link, timeout=PAGE_TIMEOUT_S) as response:
                status = response.status
        except urllib.error.HTTPError as e:
            status = e.code
        if status != 200:
            problems.append(f"link {link} answers HTTP {status}")
    assert not problems, "\n".join(problems)


def test_cli_reference_shows_every_command(server, browser):
    """The CLI page is generated from cdraw.cli.build_parser(): every sub-command has its section."""
    from cdraw.cli import build_parser

    parser = build_parser()
    (commands,) = [a.choices for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)]
    browser.get(urljoin(server, "cli/"))
    ids = set(browser.execute_script("return Array.from(document.querySelectorAll('article h2')).map(h => h.id)"))
    assert {f"cdraw-{name}" for name in commands} <= ids
    options = browser.execute_script("return document.querySelector('article').innerText")
    for name, sub in commands.items():
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue  # hidden on purpose, and -h is everywhere
            for flag in action.option_strings:
                assert flag in options, f"cdraw {name} {flag} is missing from the CLI reference"


def load_make_figures():
    spec = importlib.util.spec_from_file_location("make_figures", REPO / "docs" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def describe(path: Path) -> tuple:
    """What must match between a committed figure and a fresh one: format, size, number of frames."""
    with Image.open(path) as img:
        img.verify()  # a complete, readable file
    with Image.open(path) as img:
        return img.format, img.size, getattr(img, "n_frames", 1)


#: The most a fresh figure's frame may differ from the committed one, in mean absolute grey levels
#: (0-255) over its pixels: float rounding of another machine moves a few pixels by a level; a figure
#: drawn by an earlier shipped model differs by several (the third and fourth default models' drawing.gif
#: by 5.4 at most, the first and third by 11.6).
FIGURE_TOLERANCE = 1.0


def frame_differences(a: Path, b: Path) -> list[float]:
    """Mean absolute difference of the RGB values of each pair of frames of two same-sized pictures."""
    with Image.open(a) as x, Image.open(b) as y:
        frames = zip(ImageSequence.Iterator(x), ImageSequence.Iterator(y), strict=True)
        return [
            float(np.abs(np.asarray(f.convert("RGB"), float) - np.asarray(g.convert("RGB"), float)).mean())
            for f, g in frames
        ]


def test_figures_are_the_ones_make_figures_writes(data_dir, tmp_path):
    """Run docs/make_figures.py into a temporary folder: the committed figures must be the same pictures
    (same files, formats, sizes, frame counts and pixels, same captions), so they are neither stale
    (drawn by a model that no longer ships) nor hand-made."""
    captions = load_make_figures().make_figures(tmp_path, str(data_dir))
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert fresh == sorted([*captions, "figures.json"])
    stale = "docs/figures/ is stale: run `python docs/make_figures.py` and commit the result"
    for name in fresh:
        assert (FIGURES / name).is_file(), f"{name} is missing; {stale}"
        if name.endswith(".json"):
            assert json.loads((FIGURES / name).read_text()) == json.loads((tmp_path / name).read_text()), stale
        else:
            assert describe(FIGURES / name) == describe(tmp_path / name), f"{name}: {stale}"
            worst = max(frame_differences(FIGURES / name, tmp_path / name))
            assert worst <= FIGURE_TOLERANCE, f"{name}: a frame differs by {worst:.2f} grey levels; {stale}"
