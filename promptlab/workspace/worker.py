"""The background training process the app starts: ``python -m promptlab.workspace.worker <run dir>``.

It turns the run's settings into a promptlab config, trains and tests through the same LightningCLI
as ``promptlab fit``, exports the classifier, writes what the Inspect page shows, and records the
outcome in ``run.json``. SIGTERM (Cancel) records ``cancelled``; any error records ``failed`` with
its one-line message. Either way the project's training lock is released.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from dataclasses import replace
from pathlib import Path

import yaml

from promptlab.cli.lightning import lightning_cli
from promptlab.configs import load_toy_config
from promptlab.deploy.classifier import Classifier
from promptlab.errors import USER_ERRORS
from promptlab.export import export_classifier
from promptlab.methods import BASELINE_KEY
from promptlab.methods._contract import panels_to_json
from promptlab.run_folder import TEST_METRICS_FILE
from promptlab.workspace.progress import write_progress
from promptlab.workspace.project import Project
from promptlab.workspace.run_record import (
    BASELINE_DIR,
    CLASSIFIER_FILE,
    INSPECTION_FILE,
    LIGHTNING_DIR,
    LOCK_FILE,
    PREDICTIONS_FILE,
    SETTINGS_FILE,
    SPLIT_FILE,
    ZERO_SHOT_CLASSIFIER_FILE,
    RunSettings,
    now_utc,
    read_json,
    update_run,
)


def build_config(project_path: Path, run_dir: Path, settings: RunSettings, log_name: str = LIGHTNING_DIR) -> dict:
    """The promptlab config (as ``promptlab fit -c`` reads it) for a run of the app.

    Everything method-specific comes from the method's contract (:mod:`promptlab.methods._contract`).

    Args:
        project_path: the project folder.
        run_dir: the run's folder.
        settings: the run's settings.
        log_name: the Lightning log folder inside ``run_dir`` (reports and checkpoints go there).
    """
    method = settings.method_class
    toy_config = load_toy_config(method) if settings.backbone == "toy-clip" and method.toy else {}
    model = dict(toy_config.get("model", {}).get("init_args", {})) if toy_config else dict(method.app_init_args)
    model = {k: v for k, v in model.items() if k not in (method.toy.drop if method.toy else ())}
    model |= {"backbone": settings.backbone, "pretrained": settings.pretrained}
    model |= {"weights_path": settings.weights_path} if settings.weights_path else {}
    model |= method.init_args_from_settings(settings.options)
    if method.descriptions_arg:
        described = read_json(project_path / "data" / "descriptions.json")
        if described:  # every class listed (templates alone for those without sentences)
            descriptions = run_dir / "descriptions.json"
            classes = Project(project_path).classes()
            descriptions.write_text(json.dumps({name: described.get(name, []) for name in classes}, indent=2))
            model |= {method.descriptions_arg: str(descriptions)}
    data = {
        "dataset": "split",
        "split_file": str(run_dir / SPLIT_FILE),
        "root": str(project_path / "data"),
        "shots": 0,  # every training image the user gave
        "seed": settings.seed,
        "batch_size": settings.batch_size,
        "test_batch_size": 128,
        "num_workers": 0,
        "crop_scale": toy_config.get("data", {}).get("crop_scale", [0.08, 1.0]),
    }
    if method.learns_from == "unlabelled":
        data |= {"label_free": True, "unlabelled": str(project_path / "data" / "unlabelled")}
        if not read_json(run_dir / SPLIT_FILE).get("test"):  # classes without labelled images: names only
            names_file = run_dir / "class_names.txt"
            names_file.write_text("\n".join(Project(project_path).classes()))
            data["class_names_file"] = str(names_file)
    epochs = settings.epochs if method.uses_epochs else 1  # fitted in one go: the progress bar says one epoch
    trainer = {
        "max_epochs": epochs,
        "check_val_every_n_epoch": max(1, epochs // 10),
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "logger": {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(run_dir), "name": log_name, "version": ""},
        },
        "callbacks": [
            {"class_path": "promptlab.workspace.progress.ProgressFile", "init_args": {"run_dir": str(run_dir)}}
        ],
    }
    return {
        "model": {"class_path": f"{method.__module__}.{method.__qualname__}", "init_args": model | settings.extra},
        "data": data,
        "seed_everything": settings.seed,
        "trainer": trainer | method.trainer_args,
    }


def _write_predictions(run_dir: Path, project_path: Path, classifier_path: Path) -> None:
    """Classifies the held-out images with the exported file (the Inspect page shows the mistakes)."""
    test = read_json(run_dir / SPLIT_FILE).get("test", [])
    classifier = Classifier.load(classifier_path)
    paths = [str(project_path / "data" / path) for path, _, _ in test]
    predictions = classifier.predict(paths, top_k=3) if paths else []
    rows = [
        {"path": path, "true": name, "predicted": p.label, "probability": p.probability}
        for (path, _, name), p in zip(test, predictions, strict=True)
    ]
    (run_dir / PREDICTIONS_FILE).write_text(json.dumps({"rows": rows}, indent=2))


def _write_inspection(run_dir: Path, model, metrics: dict) -> None:
    """What the Inspect page shows beyond the test metrics: the method's own panels."""
    panels = model.inspection_panels(run_dir / LIGHTNING_DIR, metrics)
    (run_dir / INSPECTION_FILE).write_text(json.dumps({"panels": panels_to_json(panels)}, indent=2))


def _write_config(run_dir: Path, config: dict, name: str = "config.yaml") -> Path:
    path = run_dir / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train(run_dir: Path) -> None:
    """Runs one app run to the end (see the module docstring)."""
    project_path = run_dir.parent.parent
    settings = RunSettings(**read_json(run_dir / SETTINGS_FILE))
    config_file = _write_config(run_dir, build_config(project_path, run_dir, settings))
    write_progress(run_dir, stage="preparing")
    lightning = run_dir / LIGHTNING_DIR
    has_test = bool(read_json(run_dir / SPLIT_FILE).get("test"))
    if not settings.method_class.trains():
        cli = lightning_cli(["test", "-c", str(config_file)])
    else:  # the trained model stays in memory: the last epoch, as the checkpoint and the test have it
        cli = lightning_cli(["fit", "-c", str(config_file), f"--test_after_fit={has_test}"])
    write_progress(run_dir, stage="inspecting")
    learned_validation = validation_accuracy(cli) if settings.method_class.trains() else None
    metrics = read_json(lightning / TEST_METRICS_FILE)
    classifier = export_classifier(
        cli.model, run_dir / CLASSIFIER_FILE, metrics=metrics or None, data_version=cli.datamodule.data_version
    )
    _write_inspection(run_dir, cli.model, metrics)
    _write_predictions(run_dir, project_path, classifier)
    baseline, validation = None, None
    if settings.method_class.trains() and has_test:  # the same held-out images, without learning
        write_progress(run_dir, stage="baseline")
        zero_shot = replace(settings, method=BASELINE_KEY, options={}, extra={})
        config = build_config(project_path, run_dir, zero_shot, log_name=BASELINE_DIR)
        baseline_cli = lightning_cli(["test", "-c", str(_write_config(run_dir, config, "baseline_config.yaml"))])
        baseline_metrics = read_json(run_dir / BASELINE_DIR / TEST_METRICS_FILE)
        baseline = baseline_metrics.get("accuracy")
        if cli.model.learns_from == "unlabelled":  # it saw no label: every labelled image measures it
            validation = compare_on_labelled(run_dir, metrics, baseline_cli, baseline_metrics)
        else:
            validation = compare_on_validation(run_dir, cli, baseline_cli, learned_validation, baseline_metrics)
    update_run(
        run_dir,
        status="finished",
        finished=now_utc(),
        accuracy=metrics.get("accuracy"),
        zero_shot_accuracy=baseline,
        num_test=metrics.get("num_samples", 0),
        validation=validation,
    )
    write_progress(run_dir, stage="finished")


def validation_accuracy(cli) -> float | None:
    """The model's accuracy on the run's validation images (a share of the training images), or None
    when there are none.
    """
    if not cli.datamodule.splits.val:
        return None
    (result,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    return float(result["val/acc"])


def compare_on_validation(
    run_dir: Path, learned_cli, baseline_cli, learned: float | None, baseline_metrics: dict
) -> dict | None:
    """The learned classifier against zero-shot CLIP on the same validation images (never the held-out
    ones); when zero-shot does better, its classifier is exported next to the learned one, to offer it.

    Returns:
        {"images", "learned", "zero_shot", "zero_shot_better"}, or None without validation images.
    """
    if learned is None:
        return None
    zero_shot = validation_accuracy(baseline_cli)
    better = zero_shot is not None and zero_shot > learned
    if better:
        export_classifier(
            baseline_cli.model,
            run_dir / ZERO_SHOT_CLASSIFIER_FILE,
            metrics=baseline_metrics or None,
        )
    images = len(learned_cli.datamodule.splits.val)
    return {"images": images, "learned": learned, "zero_shot": zero_shot, "zero_shot_better": better}


def compare_on_labelled(run_dir: Path, metrics: dict, baseline_cli, baseline_metrics: dict) -> dict | None:
    """A label-free run against zero-shot CLIP on the project's labelled images, which it never trained on
    (they only measure it); when zero-shot does better, its classifier is exported next to the learned
    one, to offer it, as for runs that learn from labels.

    Returns:
        The :func:`compare_on_validation` record with ``measured_on: "labelled"``, or None without
        labelled images.
    """
    learned, zero_shot = metrics.get("accuracy"), baseline_metrics.get("accuracy")
    if learned is None or zero_shot is None:
        return None
    better = zero_shot > learned
    if better:
        export_classifier(baseline_cli.model, run_dir / ZERO_SHOT_CLASSIFIER_FILE, metrics=baseline_metrics or None)
    images = int(metrics.get("num_samples", 0))
    return {
        "images": images,
        "learned": learned,
        "zero_shot": zero_shot,
        "zero_shot_better": better,
        "measured_on": "labelled",
    }


def one_line_error(error: BaseException) -> str:
    """The message a user needs: a promptlab error's own text, even when wrapped (jsonargparse wraps
    errors raised while instantiating a model as ``Does not validate...`` followed by ``- <reason>`` lines).
    """
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, USER_ERRORS):
            return str(cause).strip().splitlines()[0]
        cause = cause.__cause__ or cause.__context__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line[2:] for line in lines if line.startswith("- ")), None)
    return reason or (lines[0] if lines else type(error).__name__)


def _release_lock(run_dir: Path) -> None:
    lock = run_dir.parent.parent / LOCK_FILE
    if lock.is_file() and lock.read_text().strip() == run_dir.name:
        lock.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m promptlab.workspace.worker <run dir>``: runs it and records the outcome."""
    run_dir = Path((argv or sys.argv[1:])[0]).resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def on_sigterm(signum, frame) -> None:
        update_run(run_dir, status="cancelled", finished=now_utc())
        _release_lock(run_dir)
        os._exit(143)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    update_run(run_dir, status="running", pid=os.getpid(), started=now_utc())
    try:
        train(run_dir)
        return 0
    except Exception as error:  # recorded for the app; the traceback goes to log.txt
        traceback.print_exc()
        update_run(run_dir, status="failed", finished=now_utc(), error=one_line_error(error))
        return 1
    finally:
        _release_lock(run_dir)
        signal.signal(signal.SIGTERM, previous)  # a worker run in-process leaves its caller as it was


if __name__ == "__main__":
    sys.exit(main())
