"""The deployer's commands: batched `classify`, calibration at test and export, "none of these", and
`predict` under DDP."""

import csv
import io
import json
import os
import struct
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from promptlab.cli import main
from promptlab.deploy.classifier import Classifier
from promptlab.methods._calibration import calibrate, expected_calibration_error, fit_temperature

ZERO_SHOT = "configs/tiny/zeroshot.yaml"


@pytest.fixture
def zero_shot_file(image_folder, tmp_path):
    output = tmp_path / "zs.safetensors"
    assert main(["export", "-c", ZERO_SHOT, f"--data.root={image_folder}", "-o", str(output)]) == 0
    return output


def test_temperature_lowers_the_validation_nll_and_keeps_predictions():
    torch.manual_seed(0)
    labels = torch.randint(0, 5, (400,))
    logits = torch.randn(400, 5) * 4 + F.one_hot(labels, 5) * 3  # over-confident: right 70%, logits large
    temperature = fit_temperature(logits, labels)
    assert temperature > 1.5
    nll = [F.cross_entropy(logits / t, labels) for t in (1.0, temperature, temperature * 1.2, temperature / 1.2)]
    assert nll[1] < min(nll[0], nll[2], nll[3])
    before = expected_calibration_error(logits.softmax(-1), labels)
    after = expected_calibration_error((logits / temperature).softmax(-1), labels)
    assert after < before


def test_a_temperature_is_applied_only_when_significantly_better_than_one():
    torch.manual_seed(0)
    labels = torch.randint(0, 4, (32,))
    calibrated = torch.randn(32, 4) + F.one_hot(labels, 4) * 1.5
    kept = calibrate(calibrated, labels, "validation split")
    assert kept.temperature == 1.0 and kept.fitted_temperature != 1.0
    assert kept.fitted_on.startswith("validation split (32 images): the fitted T = ")
    applied = calibrate(calibrated * 4, labels, "validation split")  # 4x over-confident
    assert applied.fitted_on == "validation split (32 images)"
    assert applied.temperature == applied.fitted_temperature and 2 < applied.temperature < 6


def test_export_from_a_config_fits_the_temperature_on_validation(zero_shot_file):
    classifier = Classifier.load(zero_shot_file, device="cpu")
    assert classifier.calibration.fitted_on.startswith("validation split (6 images)")
    assert classifier.calibration.num_images == 6 and classifier.calibration.fitted_temperature is not None
    assert classifier.meta["calibration"]["temperature"] == classifier.temperature


@pytest.mark.slow
def test_a_runs_test_records_ece_before_and_after_and_export_carries_it(image_folder, tmp_path):
    runs = tmp_path / "runs"
    args = [
        "-c",
        "configs/tiny/coop.yaml",
        f"--data.root={image_folder}",
        f"--trainer.logger.init_args.save_dir={runs}",
    ]
    assert main(["fit", *args, "--trainer.max_epochs=2"]) == 0
    run = runs / "lightning_logs" / "version_0"
    calibration = json.loads((run / "test_metrics.json").read_text())["calibration"]
    assert calibration["fitted_on"].startswith("validation split (6 images)")
    assert 0 <= calibration["ece_before"] <= 1 and 0 <= calibration["ece_after"] <= 1
    assert main(["export", "--run", str(run), "--reject_below", "0.9"]) == 0
    classifier = Classifier.load(run / "classifier.safetensors", device="cpu")
    assert classifier.calibration.to_dict() == calibration and classifier.reject_below == 0.9


def test_classify_recurses_batches_streams_and_names_unreadable_files(image_folder, zero_shot_file, tmp_path, capsys):
    nested = image_folder / "red_square" / "more"
    nested.mkdir()
    (image_folder / "red_square" / "1.png").rename(nested / "1.png")
    (image_folder / "green_circle" / "0.png").write_bytes(b"not a png")
    (image_folder / "green_circle" / "1.png").write_bytes((image_folder / "green_circle" / "2.png").read_bytes()[:50])
    output = tmp_path / "out.json"
    args = ["classify", "--classifier", str(zero_shot_file), str(image_folder), "-o", str(output)]
    assert main([*args, "--batch_size", "4", "--num_workers", "2"]) == 3  # some files skipped
    rows = json.loads(output.read_text())
    assert len(rows) == 28 and any(row["path"].endswith("more/1.png") for row in rows)
    assert {"label", "probability", "top_k", "none_of_these"} <= set(rows[0])
    err = capsys.readouterr().err
    assert "Skipped 2 unreadable file(s)" in err and "0.png" in err and "1.png" in err

    expected = Classifier.load(zero_shot_file, device="cpu").predict([row["path"] for row in rows], top_k=3)
    assert [row["label"] for row in rows] == [p.label for p in expected]
    assert max(abs(row["probability"] - p.probability) for row, p in zip(rows, expected, strict=True)) < 1e-5


def test_classify_answers_none_of_these_below_the_threshold(image_folder, zero_shot_file, tmp_path, capsys):
    output = tmp_path / "out.csv"
    folder = str(image_folder / "red_square")
    assert (
        main(["classify", "--classifier", str(zero_shot_file), folder, "-o", str(output), "--reject_below", "0.99"])
        == 0
    )
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 10 and all(row["none_of_these"] == "True" for row in rows)
    capsys.readouterr()
    assert main(["classify", "--classifier", str(zero_shot_file), folder, "--reject_below", "0.99"]) == 0
    assert capsys.readouterr().out.count("none of these (") == 10
    assert main(["classify", "--classifier", str(zero_shot_file), folder, "--reject_below", "1.5"]) == 2


def test_predict_under_ddp_writes_each_image_once(image_folder, tmp_path):
    runs = tmp_path / "runs"
    command = [
        sys.executable, "-m", "promptlab", "predict", "-c", ZERO_SHOT, "--data.root", str(image_folder),
        "--data.predict_files", f"[{image_folder}]", "--data.test_batch_size", "4",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
    ]  # fmt: skip
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (predictions,) = runs.rglob("predictions.csv")
    paths = [row["path"] for row in csv.DictReader(predictions.open())]
    assert len(paths) == 30 and len(set(paths)) == 30  # 3 classes x 10 images, each once


def tiff_with_100_samples_per_pixel() -> bytes:
    """A TIFF whose header declares 100 samples per pixel: Pillow logs an ERROR line of its own for it."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    directory = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[directory : directory + 2])[0]):
        at = directory + 2 + 12 * entry
        if struct.unpack("<H", data[at : at + 2])[0] == 277:  # SamplesPerPixel
            data[at + 8 : at + 10] = struct.pack("<H", 100)
    return bytes(data)


def test_the_image_librarys_own_log_lines_go_to_the_decoder_log(image_folder, zero_shot_file, tmp_path):
    (image_folder / "red_square" / "odd.tif").write_bytes(tiff_with_100_samples_per_pixel())
    log = tmp_path / "decoders.log"
    command = [sys.executable, "-m", "promptlab", "classify", "--classifier", str(zero_shot_file), str(image_folder)]
    done = subprocess.run([*command, "--decoder_log", str(log), "--no_progress"], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr  # the TIFF is skipped, the others classified
    assert "PIL" not in done.stderr and "samples per pixel" not in done.stderr, done.stderr  # not on the terminal
    assert "More samples per pixel than can be decoded" in log.read_text()
    assert "odd.tif': it is a variant of TIFF that promptlab's image library cannot decode" in done.stderr
