"""The accuracy benchmark's quick mode runs every registered method and writes its reports."""

import json

import pytest

from benchmarks.accuracy import METHODS, main
from promptlab.toy.world import generate


@pytest.mark.slow
def test_quick_accuracy_benchmark(tmp_path):
    generate(tmp_path / "data" / "toy", per_class_and_style=10, unlabelled_per_class=1, pretrain_images=0)
    out = tmp_path / "results"
    main(
        [
            "--quick",
            "--epochs",
            "1",
            "--data_root",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--runs",
            str(tmp_path / "runs"),
        ]
    )
    report = json.loads((out / "accuracy.json").read_text())
    assert {r["method"] for r in report["runs"]} == set(METHODS)
    assert {(r["shots"]) for r in report["runs"] if r["method"] == "CoOp"} == {1, 16}
    assert all(0 <= r["accuracy"] <= 1 for r in report["runs"])
    for name in ("accuracy.md", "accuracy.png", "summary.json", "curves.csv"):
        assert (out / name).is_file(), name
    assert "style_shift/CoOp/16shot" in json.loads((out / "summary.json").read_text())
