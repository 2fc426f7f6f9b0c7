"""The app end to end in a real browser: Playwright driving Debian's chromium against `streamlit run`.

Create a project, upload images of three toy-world classes (plus a file that is not an image), label
two pool images the app suggests, train the preselected MoCoOp on toy-clip, read the accuracy and the confusion
matrix, try an image (and get "none of these" for a grey one), download the classifier and one
with a class added by name, and check that they classify. Screenshots of every page go to
``test-artifacts/screenshots/`` (``PROMPTLAB_SCREENSHOTS`` overrides). Without chromium or
playwright the test is skipped, unless ``PROMPTLAB_REQUIRE_BROWSER=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from promptlab.deploy.classifier import Classifier
from promptlab.toy.render import STYLES
from tests.ui_support import SHAPES, write_toy_images

ROOT = Path(__file__).resolve().parents[2]
PER_CLASS = 10
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _browser_or_skip():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if chromium and sync_playwright:
        return chromium, sync_playwright
    message = "needs chromium (apt-get install chromium) and playwright (pip install playwright)"
    if os.environ.get("PROMPTLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tmp_path):
    """``streamlit run ui/app.py`` on a free port with an empty workspace; yields (url, workspace)."""
    port = _free_port()
    workspace = tmp_path / "workspace"
    env = {**os.environ, "PROMPTLAB_WORKSPACE": str(workspace)}
    log = (tmp_path / "streamlit.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "ui" / "app.py"),
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"streamlit did not start: {(tmp_path / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, workspace
    server.terminate()
    server.wait(10)


def least_familiar(workspace: Path, candidates: list[Path]) -> Path:
    """The picture least like the training images under the project's newest trained classifier, which
    its default familiarity threshold rejects."""
    from promptlab.workspace.project import Workspace
    from promptlab.workspace.results import run_results

    runs_dir = Workspace(workspace).open("shapes").runs_dir
    runs = sorted((d for d in runs_dir.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    classifier = Classifier.load(run_results(runs[-1]).classifier_file, device="cpu")
    predictions = classifier.predict(candidates)
    familiarity = [p.familiarity for p in predictions]
    assert any(p.rejected_by == "unfamiliar" for p in predictions), f"no candidate is unfamiliar ({familiarity})"
    return candidates[familiarity.index(min(familiarity))]


@pytest.mark.slow
def test_from_uploads_to_a_downloaded_classifier(app_url, tmp_path):
    chromium, sync_playwright = _browser_or_skip()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    url, workspace = app_url
    shots = Path(os.environ.get("PROMPTLAB_SCREENSHOTS") or ROOT / "test-artifacts" / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    images = write_toy_images(tmp_path / "uploads", PER_CLASS, styles=STYLES)
    bad = tmp_path / "bad"  # uploaded with the circles: each refused by name, the good ones stored
    bad.mkdir()
    (bad / "notes.png").write_text("these are my notes, not a picture")
    (bad / "broken.png").write_bytes(images["square"][0].read_bytes()[:-60])  # truncated
    Image.new("1", (20000, 10000)).save(bad / "bomb.png")  # 200 Mpixel in 30 KB: a decompression bomb
    shutil.copy(images["circle"][0], bad / "circle_again.png")  # a duplicate
    pool_images = write_toy_images(tmp_path / "pool", 3, styles=STYLES, seed=7)
    pool = [path for shape in SHAPES for path in pool_images[shape]]  # unlabelled: 3 of each shape
    grey = tmp_path / "grey.png"
    Image.new("RGB", (32, 32), (128, 128, 128)).save(grey)
    unknown = write_toy_images(tmp_path / "unknown", 2, styles=STYLES, seed=11, shapes=("heart", "cross", "diamond"))
    unknown_shapes = [path for paths in unknown.values() for path in paths]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)

        def settle() -> None:
            page.wait_for_timeout(300)
            page.wait_for_function("!document.querySelector('[data-testid=stStatusWidget]')", timeout=120_000)

        def screenshot(name: str) -> None:
            settle()
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

        def go(title: str) -> None:
            # A click that lands while the page reruns can be lost (seen in CI, once): click again until the
            # page's own title shows.
            for _ in range(3):
                settle()
                page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
                try:
                    page.get_by_role("heading", name=f"{title} · shapes").wait_for(timeout=20_000)
                    break
                except PlaywrightTimeout:
                    continue
            settle()

        try:
            page.goto(url)
            page.get_by_label("New project name").fill("shapes")
            page.get_by_role("button", name="Create project").click()
            page.get_by_text("Created project 'shapes'").wait_for()
            screenshot("1-projects")

            go("Data")
            for shape in SHAPES:
                page.get_by_label("New class").fill(shape)
                page.get_by_role("button", name="Add class").click()
                page.get_by_text(f"Added class '{shape}'").wait_for()
            for shape in SHAPES:
                settle()  # a file chooser filled mid-rerun is replaced before it uploads
                uploader = page.get_by_test_id("stFileUploader").filter(has_text=f"Upload images of {shape}")
                files = [str(f) for f in images[shape]] + (sorted(map(str, bad.iterdir())) if shape == "circle" else [])
                uploader.locator("input[type=file]").set_input_files(files)
                page.get_by_role("button", name=f"Add {len(files)} file(s)").click()
                page.get_by_text(f"Added {PER_CLASS} image(s).").wait_for()
                if shape == "circle":
                    for message in [
                        "Cannot read image 'notes.png'",
                        "Cannot read image 'broken.png'",
                        "Cannot read image 'bomb.png'",
                        "Skipped 1 duplicate(s)",
                    ]:
                        page.get_by_text(message).first.wait_for()
                    screenshot("2-data")  # with the refused files listed
            assert all(
                len(list((workspace / "shapes" / "data" / "labelled" / s).iterdir())) == PER_CLASS for s in SHAPES
            )

            # Label these next: an unlabelled pool, ranked by zero-shot CLIP; two clicks label two images.
            settle()
            page.get_by_test_id("stExpander").filter(has_text="Unlabelled pool").locator("summary").click()
            uploader = page.get_by_test_id("stFileUploader").filter(has_text="Upload unlabelled images")
            uploader.wait_for()
            uploader.locator("input[type=file]").set_input_files([str(f) for f in pool])
            page.get_by_role("button", name=f"Add {len(pool)} file(s) to the pool").click()
            page.get_by_text(f"Added {len(pool)} image(s).").wait_for()
            page.get_by_text("Ranked by zero-shot CLIP (toy-clip)").wait_for()
            for labelled in (1, 2):
                settle()
                page.get_by_role("button", name=re.compile(r"^It is ")).first.click()
                page.get_by_text(f"Unlabelled pool · {len(pool) - labelled} image(s)").wait_for()
            page.get_by_text("Labelled one image").first.wait_for()
            screenshot("2b-label-these-next")
            pool_left = len(list((workspace / "shapes" / "data" / "unlabelled").iterdir()))
            assert pool_left == len(pool) - 2

            go("Train")
            # The preselected method for 7 training images per class: MoCoOp, whose prompts take new classes.
            page.get_by_text("MoCoOp", exact=True).wait_for()
            page.get_by_role("button", name="Start training").click()
            page.get_by_text("Training 20").wait_for()
            try:  # catch it mid-training, with its curves, unless it finishes first
                # The progress bar's "Epoch 3 of 20 · 15%", not the form's "epochs" still shown while it reruns.
                page.get_by_text(re.compile(r"^Epoch \d+ of \d+")).first.wait_for(timeout=60_000)
                page.wait_for_timeout(2500)
            except PlaywrightTimeout:
                pass
            screenshot("3-train-running")
            page.get_by_text("Last run").wait_for(timeout=240_000)
            page.get_by_role("button", name="Start training").wait_for()  # the whole page, not its first lines
            screenshot("4-train-finished")

            go("Inspect")
            page.get_by_text("Confusion matrix").wait_for()
            accuracy = page.get_by_test_id("stMetricValue").first.inner_text()
            assert accuracy.endswith("%")
            page.get_by_role("img").first.wait_for()
            screenshot("5-inspect")

            go("Try it")
            uploader = page.get_by_test_id("stFileUploader")
            uploader.locator("input[type=file]").set_input_files(str(images["triangle"][0]))
            page.get_by_test_id("stHeading").filter(has_text="%").last.wait_for()
            screenshot("6-try-it")
            # "None of these" at the default thresholds: for a blank picture, and for a shape the project
            # has no class for (the least familiar of a few: the rule rejects about three in four).
            uploader.locator("input[type=file]").set_input_files(str(grey))
            settle()
            page.get_by_text("Why: It looks like none of the training images").wait_for()
            page.wait_for_timeout(1500)  # the picture and the bars drawn
            screenshot("6b-try-it-blank-picture")
            unknown = least_familiar(workspace, unknown_shapes)
            uploader.locator("input[type=file]").set_input_files(str(unknown))
            settle()
            page.get_by_text("Why: It looks like none of the training images").wait_for()
            page.wait_for_timeout(1500)  # the picture and the bars drawn
            screenshot("6c-try-it-unknown-shape")

            go("Export")
            with page.expect_download() as download:
                page.get_by_role("button", name="Download the classifier").click()
            classifier_file = tmp_path / "downloaded.safetensors"
            download.value.save_as(classifier_file)
            screenshot("7-export")
            # A class added by its name, without retraining (the shared context the app chose).
            page.get_by_label("Classes, one per line").fill("\n".join([*SHAPES, "star"]))
            page.get_by_role("button", name="Export with these classes").click()
            page.get_by_text("4 classes: circle, square, triangle, star").wait_for()
            with page.expect_download() as download:
                page.get_by_role("button", name="Download the classifier with these classes").click()
            extended_file = tmp_path / "extended.safetensors"
            download.value.save_as(extended_file)
            screenshot("7b-export-added-class")

            go("Runs")
            page.get_by_text("Best so far").wait_for()
            screenshot("8-runs")
        except Exception:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            raise
        browser.close()

    classifier = Classifier.load(classifier_file, device="cpu")
    assert classifier.class_names == list(SHAPES)
    assert Classifier.load(extended_file, device="cpu").class_names == [*SHAPES, "star"]
    paths = [str(path) for shape in SHAPES for path in images[shape]]
    predictions = classifier.predict(paths)
    correct = sum(
        p.label == shape for p, shape in zip(predictions, [s for s in SHAPES for _ in range(PER_CLASS)], strict=True)
    )
    assert correct / len(paths) > 0.6  # well above chance (1/3) on the images it was shown
