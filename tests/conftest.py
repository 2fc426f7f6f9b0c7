"""Shared fixtures: a tiny generated image folder, an unlabelled pool, the random-weights tiny CLIP and a
local Ray cluster."""

import atexit
import os
import random
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # fail fast instead of retrying downloads
# Feature caches of the tests' random-weight models go to a throwaway folder, not ~/.cache.
if "PROMPTLAB_CACHE_DIR" not in os.environ:
    os.environ["PROMPTLAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="promptlab-test-cache-")
    atexit.register(shutil.rmtree, os.environ["PROMPTLAB_CACHE_DIR"], ignore_errors=True)

import pytest
from PIL import Image, ImageDraw

CLASS_COLOURS = {"red_square": (220, 30, 30), "green_circle": (30, 200, 30), "blue_triangle": (30, 30, 220)}


def make_image_folder(root: Path, images_per_class: int = 10, seed: int = 0) -> Path:
    """Writes root/<class>/<i>.png: coloured shapes on dark noise, distinguishable by colour."""
    rng = random.Random(seed)
    for name, colour in CLASS_COLOURS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            image = Image.new("RGB", (40, 40), (rng.randint(0, 60),) * 3)
            x, y = rng.randint(2, 10), rng.randint(2, 10)
            ImageDraw.Draw(image).rectangle([x, y, x + 24, y + 24], fill=colour)
            image.save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


@pytest.fixture
def unlabelled_pool(image_folder: Path, tmp_path: Path) -> Path:
    """A flat folder of the image folder's 30 images, unlabelled, and one file that is not an image."""
    pool = tmp_path / "pool"
    pool.mkdir()
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))):
        (pool / f"{i}.png").write_bytes(path.read_bytes())
    (pool / "broken.png").write_bytes(b"not an image")
    return pool


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for one test module (skipped without Ray Data)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_backbone():
    from promptlab.backbone import FrozenCLIP

    return FrozenCLIP("clip-tiny", pretrained=None)
