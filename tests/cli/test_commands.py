"""End to end through the `promptlab` command on a tiny generated image folder."""

import json
from pathlib import Path

import pytest
import yaml

from promptlab.cli import main
from promptlab.data.catalog import IMAGENET_VARIANTS
from promptlab.deploy.classifier import Classifier
from promptlab.methods import registered_methods

CONFIG = "configs/tiny/coop.yaml"


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / "lightning_logs").glob("version_*"))


@pytest.mark.slow
def test_fit_test_export_classify(image_folder, tmp_path, capsys):
    runs = tmp_path / "runs"
    common = ["-c", CONFIG, f"--data.root={image_folder}", f"--trainer.logger.init_args.save_dir={runs}"]
    assert main(["fit", *common, "--trainer.max_epochs=2"]) == 0
    (run,) = run_dirs(runs)
    for name in (
        "config.yaml",
        "fewshot_split.json",
        "data.json",
        "test_metrics.json",
        "confusion_matrix.png",
        "confusion_matrix.json",
        "metrics.csv",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert set(metrics["per_class_accuracy"]) == {"blue_triangle", "green_circle", "red_square"}
    (checkpoint,) = (run / "checkpoints").glob("*.ckpt")

    assert main(["test", *common, f"--ckpt_path={checkpoint}"]) == 0
    first_test = json.loads((run_dirs(runs)[-1] / "test_metrics.json").read_text())
    assert first_test["accuracy"] == pytest.approx(metrics["accuracy"])

    assert main(["export", "--run", str(run)]) == 0
    classifier = run / "classifier.safetensors"
    assert classifier.is_file()

    capsys.readouterr()
    assert main(["classify", "--classifier", str(classifier), str(image_folder / "red_square" / "0.png")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(image_folder / "red_square" / "0.png")) and "%" in line

    output = tmp_path / "predictions.csv"
    assert (
        main(["classify", "--classifier", str(classifier), str(image_folder / "green_circle"), "-o", str(output)]) == 0
    )
    assert len(output.read_text().splitlines()) == 11

    predict = ["predict", *common, f"--ckpt_path={checkpoint}", f"--data.predict_files=[{image_folder / 'red_square'}]"]
    assert main(predict) == 0
    assert len((run_dirs(runs)[-1] / "predictions.csv").read_text().splitlines()) == 11


def test_zero_shot_export_from_config_and_classify(image_folder, tmp_path, capsys):
    output = tmp_path / "zs.safetensors"
    args = ["export", "-c", "configs/tiny/zeroshot.yaml", f"--data.root={image_folder}", "-o", str(output)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["classify", "--classifier", str(output), "--top_k", "2", str(image_folder / "red_square")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 10


def test_a_zero_shot_test_run_and_saved_configs_export(image_folder, tmp_path, capsys):
    runs = tmp_path / "runs"
    test = ["test", "-c", "configs/tiny/zeroshot.yaml", f"--data.root={image_folder}"]
    assert main([*test, f"--trainer.logger.init_args.save_dir={runs}"]) == 0
    (run,) = run_dirs(runs)
    assert main(["export", "--run", str(run)]) == 0  # zero-shot learns nothing: no checkpoint needed
    exported = Classifier.load(run / "classifier.safetensors", device="cpu")
    assert exported.meta["method"] == "ZeroShotCLIP" and exported.meta["metrics"]["num_samples"] > 0
    assert exported.calibration.fitted_on.startswith("validation split")  # the test's own calibration
    capsys.readouterr()
    assert main(["export", "-c", str(run / "config.yaml"), "-o", str(tmp_path / "a.safetensors")]) == 0
    assert "is the config a run saved: exporting the run" in capsys.readouterr().out
    # with overrides it is a config like any other: the keys only a subcommand takes are left out
    args = ["export", "-c", str(run / "config.yaml"), f"--data.root={image_folder}", "-o", str(tmp_path / "b.onnx")]
    assert main(args) == 0


def test_classify_takes_onnx_files_and_names_what_a_wrong_file_is(image_folder, tmp_path, capsys):
    files = {suffix: tmp_path / f"zs{suffix}" for suffix in (".safetensors", ".onnx")}
    for file in files.values():
        assert main(["export", "-c", "configs/tiny/zeroshot.yaml", f"--data.root={image_folder}", "-o", str(file)]) == 0
    tables = {}
    for suffix, file in files.items():
        out = tmp_path / f"predictions{suffix}.csv"
        assert main(["classify", "--classifier", str(file), str(image_folder), "-o", str(out), "--no_progress"]) == 0
        tables[suffix] = [line.split(",")[:3] for line in out.read_text().splitlines()[1:]]
    assert [row[:2] for row in tables[".onnx"]] == [row[:2] for row in tables[".safetensors"]]
    assert all(abs(float(a[2]) - float(b[2])) < 1e-4 for a, b in zip(*tables.values(), strict=True))
    renamed = tmp_path / "renamed.safetensors"
    renamed.write_bytes(files[".onnx"].read_bytes())
    picture = next(image_folder.rglob("*.png"))
    capsys.readouterr()
    for wrong, words in ((renamed, "is an ONNX model, not what its suffix '.safetensors' says; rename it to "
                          "'renamed.onnx'"), (picture, "is an image, not a classifier")):  # fmt: skip
        assert main(["classify", "--classifier", str(wrong), str(picture)]) == 2
        assert words in capsys.readouterr().err


def test_bad_root_is_one_line_error(tmp_path, capsys):
    assert main(["fit", "-c", CONFIG, f"--data.root={tmp_path / 'missing'}"]) == 2
    assert "does not exist; check --data.root" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("--model.init_args.backbone=nope", "Unknown backbone 'nope'"),
        ("--model.init_args.n_ctx=200", "set n_ctx to"),
        ("--data.cache_views=0", "cache_views must be at least 1"),
        ("--model.init_args.backbone=local-dir:/missing", "Backbone folder '/missing' (local-dir:/missing) does not"),
        ("--model.init_args.preprocess={size: 224}", "preprocess.size 224 differs from the input size 32"),
    ],
)
def test_errors_while_building_model_or_data_are_one_line(image_folder, capsys, option, words):
    """One line, not jsonargparse's 80-line traceback with exit 1."""
    assert main(["fit", "-c", CONFIG, f"--data.root={image_folder}", option]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_fitting_a_method_that_learns_nothing_says_test_instead(image_folder, capsys):
    config = "configs/tiny/zeroshot.yaml"
    assert main(["fit", "-c", config, f"--data.root={image_folder}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "error: ZeroShotCLIP learns nothing, so there is nothing to fit; "
        "run `promptlab test` with the same config instead."
    )


def test_classify_bad_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "c.safetensors"
    bad.write_bytes(b"garbage")
    assert main(["classify", "--classifier", str(bad), str(bad)]) == 2
    assert "is a text file, not a classifier" in capsys.readouterr().err


def test_classify_skips_unreadable_images(image_folder, tmp_path, capsys):
    output = tmp_path / "zs.safetensors"
    main(["export", "-c", "configs/tiny/zeroshot.yaml", f"--data.root={image_folder}", "-o", str(output)])
    (image_folder / "red_square" / "0.png").write_bytes(b"not a png")
    capsys.readouterr()
    assert main(["classify", "--classifier", str(output), str(image_folder / "red_square")]) == 3  # some skipped
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 9 and "0.png" in captured.err


def test_print_config_links_class_names(image_folder, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "-c", CONFIG, f"--data.root={image_folder}", "--print_config"])
    printed = capsys.readouterr().out
    assert "class_path: promptlab.methods.CoOp" in printed and "n_ctx: 4" in printed


DATASETS = sorted(p.stem for p in Path("configs/datasets").glob("*.yaml"))


@pytest.mark.parametrize("method", ["coop/rn50", "coop/vit_b16", "zeroshot/vit_b16"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_shipped_configs_compose(method, dataset, capsys):
    """Shipped configs stack as the docs say (parsed only: real weights and datasets are not here)."""
    args = [
        "fit",
        "-c",
        f"configs/{method}.yaml",
        "-c",
        "configs/shots/4.yaml",
        "-c",
        f"configs/datasets/{dataset}.yaml",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert f"dataset: {dataset}" in printed and "shots: 4" in printed
    assert f"max_epochs: {50 if dataset == 'imagenet' else 100}" in printed


@pytest.mark.parametrize("dataset", [d for d in DATASETS if d not in IMAGENET_VARIANTS])
def test_shipped_mocoop_configs_compose(dataset, capsys):
    """MoCoOp's config, a dataset and that dataset's template groups (the reference's, for the 11
    training datasets; the ImageNet variants are tested with ImageNet's) stack."""
    args = ["fit", "-c", "configs/mocoop/vit_b16.yaml", "-c", f"configs/datasets/{dataset}.yaml"]
    args += ["-c", f"configs/mocoop/groups/{dataset}.yaml", "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert f"dataset: {dataset}" in printed and "class_path: promptlab.methods.MoCoOp" in printed
    assert "template_groups:" in printed and "lr: 0.032" in printed


@pytest.mark.parametrize("dataset", [d for d in DATASETS if d not in IMAGENET_VARIANTS])
def test_shipped_nola_config_composes(dataset, capsys):
    """NoLA's config, a dataset and that dataset's stage-1 templates (the reference's) stack."""
    args = ["fit", "-c", "configs/nola/vit_b32.yaml", "-c", f"configs/datasets/{dataset}.yaml"]
    args += ["-c", f"configs/nola/templates/{dataset}.yaml", "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: promptlab.methods.NoLA" in printed and "label_free: true" in printed
    templates = yaml.safe_load(Path(f"configs/nola/templates/{dataset}.yaml").read_text())["model"]["init_args"]
    expected = templates["templates"]
    assert yaml.safe_load(printed)["model"]["init_args"]["templates"] == expected


def test_help_lists_every_command_and_each_command_has_help(capsys):
    from promptlab.cli.main import COMMANDS, LIGHTNING_COMMANDS

    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    for command in (*LIGHTNING_COMMANDS, *COMMANDS):
        assert f"  {command} " in listed, command
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code in (0, None), command
        assert "usage: promptlab" in capsys.readouterr().out, command
    assert main(["fitt"]) == 2 and "unknown command 'fitt'" in capsys.readouterr().err


def test_methods_lists_the_registry(capsys):
    from promptlab.methods import registered_methods

    assert main(["methods"]) == 0
    printed = capsys.readouterr().out
    assert all(key in printed for key in registered_methods())


def test_shipped_configs_are_found_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the packaged copy is used
    with pytest.raises(SystemExit):
        main(["fit", "-c", "configs/tiny/coop.yaml", "--print_config"])
    assert "class_path: promptlab.methods.CoOp" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", [m for m in registered_methods().values() if m.trains() and not m.uses_epochs], ids=lambda m: m.key
)
def test_methods_fitted_in_one_go_fit_export_and_classify(method, image_folder, tmp_path, capsys):
    """Methods fitted in one go (the baselines) through the commands every method takes: fit, test on
    the checkpoint (which must hold the fitted head), export, classify."""
    runs = tmp_path / "runs"
    common = ["-c", f"configs/tiny/{method.toy.config}", f"--data.root={image_folder}"]
    common += [f"--trainer.logger.init_args.save_dir={runs}", f"--data.cache_dir={tmp_path / 'cache'}"]
    assert main(["fit", *common]) == 0
    (run,) = run_dirs(runs)
    metrics = json.loads((run / "test_metrics.json").read_text())
    (checkpoint,) = (run / "checkpoints").glob("*.ckpt")
    assert main(["test", *common, f"--ckpt_path={checkpoint}"]) == 0
    retested = json.loads((run_dirs(runs)[-1] / "test_metrics.json").read_text())
    assert retested["accuracy"] == pytest.approx(metrics["accuracy"])  # the checkpoint holds the fitted head
    assert main(["export", "--run", str(run)]) == 0
    capsys.readouterr()
    image = image_folder / "red_square" / "0.png"
    assert main(["classify", "--classifier", str(run / "classifier.safetensors"), str(image)]) == 0
    assert str(image) in capsys.readouterr().out


@pytest.mark.parametrize(
    "config",
    ["linear_probe/vit_b16", "linear_probe/rn50", "tip_adapter/vit_b16", "tip_adapter/rn50_f", "kgcoop/vit_b16",
     "kgcoop/rn50", "clip_lora/vit_b16", "cocoop/vit_b16", "cocoop/rn50",
     "maple/vit_b16", "maple/vit_b16_cross_datasets", "ivlp/vit_b16"],
)  # fmt: skip
def test_shipped_baseline_configs_compose(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", f"configs/{config}.yaml", "-c", "configs/datasets/oxford_pets.yaml", "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "dataset: oxford_pets" in printed and "shots: 16" in printed
