"""The package's shape: layers import only the layers before them, no modules import one another in a
cycle (function-level imports included), only backbone/ imports open_clip, and the command line's
help imports neither torch's training stack nor open_clip; files over 350 lines say why on the
architecture page."""

import subprocess
import sys

import pytest

from tools.import_graph import LAYERS, PACKAGE, cycles, layer, layer_graph, module_graph


def test_layers_import_only_the_layers_before_them():
    wrong = [
        f"{source} imports {target}"
        for source, targets in layer_graph().items()
        for target in targets
        if LAYERS.index(target) >= LAYERS.index(source)
    ]
    assert not wrong, wrong


def test_no_import_cycles():
    assert cycles(module_graph()) == []


def test_only_the_backbone_imports_open_clip():
    importers = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if any(
            line.lstrip().startswith(("import open_clip", "from open_clip")) for line in path.read_text().splitlines()
        )
    ]
    assert importers and all(layer(p.replace("/", ".").removesuffix(".py")) == "backbone" for p in importers), importers


def test_every_file_over_350_lines_is_explained_on_the_architecture_page():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text().split("## Files over 350 lines")[1]
    explained = {line.split("`")[1] for line in page.splitlines() if line.startswith("| `")}
    long = {
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if len(path.read_text().splitlines()) > 350
    }
    assert long == explained


@pytest.mark.parametrize(
    "command",
    [[], ["classify"], ["export"], ["serve"], ["data", "fetch"], ["benchmark"]],
    ids=lambda c: " ".join(c) or "promptlab",
)
def test_help_imports_neither_lightning_nor_open_clip(command):
    code = (
        "import sys\nfrom promptlab.cli import main\n"
        f"try:\n    main({[*command, '--help']!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('lightning', 'open_clip', 'torchmetrics') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
