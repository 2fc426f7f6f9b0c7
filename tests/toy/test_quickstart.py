"""The README's main command, shortened (2 epochs), end to end on a freshly generated toy world."""

import pytest

from promptlab.cli import main


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path, capsys):
    args = ["quickstart", "--epochs", "2", "--data_root", str(tmp_path / "data"), "--out", str(tmp_path / "runs")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "zero-shot CLIP" in out and "CoOp, 16 shots/class" in out
    stages = [line for line in out.splitlines() if line.startswith("[")]
    assert [line[:5] for line in stages] == [f"[{i}/5]" for i in range(1, 6)], (
        stages
    )  # a slow machine never looks stuck
    assert out.count(" s)\n") == 5  # each stage's time
    assert (tmp_path / "runs" / "coop" / "version_0" / "classifier.safetensors").is_file()
    assert not (tmp_path / "data" / "toy" / "pretrain").exists()


def test_shipped_toy_clip_loads_offline_by_name():
    from promptlab.backbone import FrozenCLIP

    backbone = FrozenCLIP("toy-clip", pretrained="promptlab")
    assert backbone.weights_file.endswith("toy-clip.safetensors") and backbone.embed_dim == 128
