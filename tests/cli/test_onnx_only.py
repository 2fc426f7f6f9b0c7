"""The ONNX-only install (onnxruntime, numpy, pillow and promptlab without its dependencies), simulated
by hiding every dependency of the full install: `promptlab --help` lists the commands and says which need
the full install, `classify` runs an .onnx file, and the others say how to install in one sentence.
CI also runs these in a real ONNX-only environment built from the wheel."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from promptlab.distribution import FULL_INSTALL_MODULES, WHEEL_GLOB
from promptlab.export import export_classifier
from tests.builders import BUILDERS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def onnx_only(tmp_path_factory):
    """Runs `python -m promptlab ARGS` with the full install's modules hidden; returns (exit status, output)."""
    folder = tmp_path_factory.mktemp("onnx_only")
    hidden = sorted(FULL_INSTALL_MODULES | {"lightning_utilities", "fastapi", "requests"})
    (folder / "sitecustomize.py").write_text(f"import sys\nfor name in {hidden!r}:\n    sys.modules[name] = None\n")
    env = os.environ | {"PYTHONPATH": f"{folder}{os.pathsep}{REPO}"}

    def run(*args: str) -> tuple[int, str]:
        done = subprocess.run([sys.executable, "-m", "promptlab", *args], capture_output=True, text=True, env=env)
        return done.returncode, done.stdout + done.stderr

    return run


def test_help_lists_the_commands_and_which_need_the_full_install(onnx_only):
    status, output = onnx_only("--help")
    assert status == 0 and "Traceback" not in output, output
    lines = {line.split()[0]: line for line in output.splitlines() if line.startswith("  ")}
    assert {"fit", "export", "classify", "serve", "quickstart"} <= set(lines)
    assert "needs the full install" not in lines["classify"]
    assert all("needs the full install" in line for name, line in lines.items() if name != "classify")
    assert WHEEL_GLOB in output


def test_classify_runs_an_onnx_file_and_the_rest_say_how_to_install(onnx_only, tmp_path, image_folder):
    torch.manual_seed(0)
    onnx_file = export_classifier(BUILDERS["CoOp"][0]().eval(), tmp_path / "c.onnx")
    safetensors_file = export_classifier(BUILDERS["CoOp"][0]().eval(), tmp_path / "c.safetensors")
    status, output = onnx_only("classify", "--classifier", str(onnx_file), str(image_folder / "red_square"))
    assert status == 0 and output.count("red_square/") == 10, output  # 10 images, one line each
    needs_torch = ["classify", "--classifier", str(safetensors_file), str(image_folder)]
    for args in (["fit", "-c", "configs/toy/coop.yaml"], needs_torch):
        status, output = onnx_only(*args)
        assert status == 2 and output.count("\n") == 1 and "needs the full install" in output, output
