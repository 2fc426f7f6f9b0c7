"""The shell blocks of the README and the manual run as written, offline.

Every ``bash`` block of a page runs, in order, in one fresh folder that holds the toy world (``toy/``)
and a small image folder per class (``my_pets/``), so a later block can use what an earlier one
wrote. A block that cannot run here says why in its title, which the manual shows above it
(```` ```bash title="needs the network" ````); those are listed, never run. The benchmark tables and
the layer graph of the pages must match what they are rendered from.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from promptlab.distribution import DISTRIBUTION
from tests.conftest import make_image_folder

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>\w*)(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
NOT_RUN_HERE = (  # what a block's title may say to be skipped: each needs something a test machine lacks
    "needs the network",
    "needs the datasets",
    "needs a weights file",
    "needs your",
    "needs a GPU",
    "needs several machines",
    "opens the app",
    "opens the server to the network",
    "serves the manual",
    "the test suite itself",
    "rewrites the tables",
)


def shell_blocks(page: Path) -> list[tuple[str, str]]:
    """(title, commands) of every bash block of a page, in order."""
    blocks = []
    for match in FENCE.finditer(page.read_text()):
        if match["lang"] in ("bash", "sh"):
            title = re.search(r'title="([^"]*)"', match["info"])
            blocks.append((title[1] if title else "", match["body"]))
    return blocks


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory) -> Path:
    from promptlab.toy.world import generate

    return generate(tmp_path_factory.mktemp("world") / "toy", pretrain_images=0)


def test_every_skipped_block_says_why():
    for page in PAGES:
        for title, _ in shell_blocks(page):
            if title:
                assert title.startswith(NOT_RUN_HERE), f"{page_id(page)}: a block titled {title!r} would run"


def pages_to_run() -> list[Path]:
    """Pages with blocks to run, each sequence of blocks once (the manual's home page repeats the README's)."""
    seen, pages = set(), []
    for page in PAGES:
        blocks = tuple(body for title, body in shell_blocks(page) if not title)
        if blocks and blocks not in seen:
            seen.add(blocks)
            pages.append(page)
    return pages


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_to_run(), ids=page_id)
def test_shell_blocks_run_as_written(page, toy_world, tmp_path, capsys):
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copytree(toy_world, folder / "toy", symlinks=True)
    make_image_folder(folder / "my_pets", images_per_class=10)
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env |= {"PROMPTLAB_WORKSPACE": str(tmp_path / "workspace"), "MPLBACKEND": "Agg"}
    ran = []
    for title, body in shell_blocks(page):
        if title:
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", body], cwd=folder, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, (
            f"{page_id(page)}:\n{body}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        ran.append(body.strip().splitlines()[0])
    with capsys.disabled():
        print(f"\n{page_id(page)}: ran {len(ran)} block(s): " + " | ".join(ran))


def test_generated_tables_match_their_json():
    done = subprocess.run(
        [sys.executable, "tools/render_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


OTHER_PROJECT = re.compile(r"pip install[^\n&|;]*?(?<![\w/.-])promptlab(?![-_]clip)\b")  # `promptlab` on the index


def test_every_install_line_names_our_distribution():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'name = "{DISTRIBUTION}"' in pyproject
    texts = [*PAGES, ROOT / ".ci" / "run", *(ROOT / "ui").rglob("*.py"), *(ROOT / "promptlab").rglob("*.py")]
    wrong = [str(path.relative_to(ROOT)) for path in texts if OTHER_PROJECT.search(path.read_text())]
    assert not wrong, f"these tell users to install the unrelated `promptlab` from the package index: {wrong}"
    assert OTHER_PROJECT.search("pip install promptlab") and OTHER_PROJECT.search("pip install --no-deps promptlab")
    assert not OTHER_PROJECT.search("pip install --no-deps dist/promptlab_clip-*.whl && pip install promptlab-clip")
