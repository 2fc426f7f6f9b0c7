"""`promptlab benchmark` on generated data in the real layouts: cross-dataset transfer and domain
generalisation (trained on ImageNet, the same classifier tested elsewhere), few-shot with resume, and
the shipped protocol files composing with the shipped configs."""

import json
from pathlib import Path

import pytest
import yaml

from promptlab.cli import main
from promptlab.cli.protocol import ProtocolError, load_protocol
from promptlab.configs import shipped_config
from promptlab.data.sources import read_standard_dataset
from tests.data.standard_layouts import write_standard_dataset

TINY = {"Zero-shot CLIP": "configs/tiny/zeroshot.yaml", "CoOp": "configs/tiny/coop.yaml"}


def protocol_file(tmp_path: Path, **content) -> Path:
    path = tmp_path / f"{content['name']}.yaml"
    path.write_text(
        yaml.safe_dump({"methods": TINY, "shots": [2], "seeds": [1], "epochs": 1, **content}, sort_keys=False)
    )
    return path


def run_benchmark(tmp_path: Path, protocol: Path) -> dict:
    out = tmp_path / "results"
    assert main(["benchmark", str(protocol), "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize(
    ("kind", "targets"),
    [("cross_dataset", ["caltech101", "fgvc_aircraft"]), ("domain_generalisation", ["imagenet_v2", "imagenet_a"])],
)
def test_trained_on_imagenet_the_same_classifier_is_tested_on_each_target(tmp_path, kind, targets):
    root = tmp_path / "data"
    for dataset in ["imagenet", *targets]:
        write_standard_dataset(dataset, root)
    protocol = protocol_file(tmp_path, name=kind, kind=kind, train_on="imagenet", datasets=targets, data_root=str(root))
    report = run_benchmark(tmp_path, protocol)
    coop = {r["task"]: r for r in report["runs"] if r["method"] == "CoOp"}
    assert set(coop) == {"imagenet", *targets}
    checkpoint = next(Path(coop["imagenet"]["run"]).glob("checkpoints/*.ckpt"))
    for target in targets:  # tested with the ImageNet run's checkpoint, on the target's own classes
        config = yaml.safe_load((Path(coop[target]["run"]) / "config.yaml").read_text())
        assert config["ckpt_path"] == str(checkpoint) and config["data"]["dataset"] == target
        classes = json.loads((Path(coop[target]["run"]) / "test_metrics.json").read_text())["per_class_accuracy"]
        assert len(classes) == len(read_standard_dataset(target, root).class_names)
    table = (tmp_path / "results" / "results.md").read_text()
    assert "| method | imagenet | " + " | ".join(targets) + " | average |" in table


def test_few_shot_protocol_resumes_and_skips_finished_runs(tmp_path):
    root = tmp_path / "data"
    write_standard_dataset("dtd", root)
    protocol = protocol_file(tmp_path, name="few", datasets=["dtd"], data_root=str(root), seeds=[1, 2])
    first = run_benchmark(tmp_path, protocol)
    assert [(r["method"], r["seed"]) for r in first["runs"]] == [("Zero-shot CLIP", 1), ("CoOp", 1), ("CoOp", 2)]
    folders = sorted(p for p in (tmp_path / "runs").rglob("version_*"))
    second = run_benchmark(tmp_path, protocol)
    assert sorted(p for p in (tmp_path / "runs").rglob("version_*")) == folders  # nothing ran again
    assert [r["accuracy"] for r in second["runs"]] == [r["accuracy"] for r in first["runs"]]
    for name in ("results.md", "results.csv", "results.png", "summary.json", "curves.csv"):
        assert (tmp_path / "results" / name).is_file()


@pytest.mark.parametrize("name", ["toy", "coop_few_shot", "base_to_new", "cross_dataset", "domain_generalisation"])
def test_shipped_protocols_name_shipped_configs_and_datasets(name):
    from promptlab.cli.benchmark_runs import registered_by_label
    from promptlab.data.catalog import STANDARD_DATASETS

    protocol = load_protocol(f"protocols/{name}.yaml")
    assert set(protocol.methods) <= set(registered_by_label())
    assert all(config == "toy" or shipped_config(config) for config in protocol.methods.values())
    datasets = [*protocol.datasets, *protocol.base_to_new, *([protocol.train_on] if protocol.train_on else [])]
    assert set(datasets) <= set(STANDARD_DATASETS)


def test_a_protocol_with_an_unknown_key_says_which(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmethods: {}\ndatasets: []\nshot: [1]\n")
    with pytest.raises(ProtocolError, match=r"unknown keys \['shot'\]"):
        load_protocol(path)


def test_transfer_skips_methods_whose_learning_is_tied_to_the_training_classes(tmp_path):
    from promptlab.cli.benchmark_runs import ProtocolRunner

    path = protocol_file(tmp_path, name="x", kind="cross_dataset", train_on="imagenet", datasets=["dtd"])
    protocol = load_protocol(path)
    protocol.methods = {"Linear probe": "configs/tiny/linear_probe.yaml"}
    said: list[str] = []
    assert ProtocolRunner(protocol, tmp_path / "runs", say=said.append).run_all() == []
    assert said == ["Linear probe skipped: what it learns is tied to the training classes, not transferred"]


def test_imagenet_keeps_its_own_epochs_other_datasets_take_the_methods_by_shots():
    from promptlab.cli.benchmark_runs import ProtocolRunner

    runner = ProtocolRunner(load_protocol("protocols/coop_few_shot.yaml"), Path("unused"))
    assert not [a for a in runner._training_args("CoOp", "imagenet", 16) if "max_epochs" in a]  # its config's 50
    assert "--trainer.max_epochs=200" in runner._training_args("CoOp", "dtd", 16)
