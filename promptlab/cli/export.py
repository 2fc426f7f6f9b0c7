"""``promptlab export``: a classifier file from a run, a checkpoint, a zero-shot config or another file."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from promptlab.errors import UserError


def export(
    *overrides: str,
    run: str | None = None,
    checkpoint: str | None = None,
    config: list[str] | None = None,
    classifier: str | None = None,
    output: str | None = None,
    weights_path: str | None = None,
    embed_backbone: bool = False,
    reject_below: float | None = None,
    classes: list[str] | None = None,
    quantize: Literal["int8", "int8-static"] | None = None,
    quantize_images: str | None = None,
) -> int:
    """Write a classifier file (.safetensors or .onnx) from a run, checkpoint, config (zero-shot) or classifier.

    Args:
        *overrides: further ``--key value`` options for the model and data of ``-c`` configs.
        run: run folder written by `promptlab fit` (e.g. runs/lightning_logs/version_0).
        checkpoint: a promptlab .ckpt file.
        config: config file(s) of an untrained (zero-shot) model.
        classifier: a .safetensors classifier file, to write as .onnx.
        output: output file, .safetensors or .onnx by its suffix (default: <run>/classifier.safetensors).
        weights_path: the backbone's weights file, where the run, checkpoint or classifier file cannot find
            its own (a local-dir: folder that moved).
        embed_backbone: store the image tower's weights in the file.
        reject_below: answer "none of these" below this calibrated top probability (0-1).
        classes: other class names for the learned prompts, without retraining (zero-shot,
            shared-context CoOp, MoCoOp).
        quantize: write the ONNX file's image encoder in int8 for CPUs (int8: dynamic; int8-static:
            activation scales fixed on training images); reports top-1 agreement with float32.
        quantize_images: images to measure that agreement on (and calibrate int8-static) instead of the
            run's or config's validation and training images.
    """
    sources = {"--run": run, "--checkpoint": checkpoint, "-c": config, "--classifier": classifier}
    given = [flag for flag, value in sources.items() if value]
    if len(given) != 1:
        raise UserError(f"Pass exactly one of --run, --checkpoint, -c or --classifier (got {len(given)}).")
    if overrides and not config:
        raise UserError(f"Options {' '.join(overrides)} apply to -c configs only; remove them.")
    if quantize and Path(output or "").suffix.lower() != ".onnx":
        raise UserError("--quantize writes an ONNX classifier: pass -o with a .onnx name.")
    if classes and classifier:
        raise UserError("--classes needs the learned prompts: export from --run, --checkpoint or -c, not --classifier.")
    # Imported here, not at the top, so that `promptlab --help` does not import torch and Lightning.
    from promptlab.cli.lightning import lightning_cli, resolve_configs
    from promptlab.deploy.calibration import Calibration
    from promptlab.deploy.onnx_export import classifier_file_to_onnx
    from promptlab.export import CLASSIFIER_FILE_NAME, export_classifier, export_run, load_method
    from promptlab.methods._open_set import fit_open_set

    configs = config or []
    split_paths: dict[str, list[Path]] = {}
    saved_run = run_of_saved_config(configs, overrides)
    if saved_run is not None:
        print(f"{configs[0]} is the config a run saved: exporting the run {saved_run} (as --run does).")
        run = str(saved_run)
    if run:
        path = export_run(run, output, embed_backbone, reject_below, classes, weights_path)
    elif checkpoint:
        not_fitted = Calibration(
            fitted_on="not calibrated: exported from a checkpoint alone (export --run to use its test's)"
        )
        model = load_method(checkpoint, weights_path)
        model = model.with_classes(classes) if classes else model
        path = export_classifier(
            model, output or CLASSIFIER_FILE_NAME, embed_backbone, calibration=not_fitted, reject_below=reject_below
        )
    elif classifier:
        if not output or Path(output).suffix.lower() != ".onnx":
            raise UserError("--classifier converts a classifier file to ONNX: pass -o with a .onnx name.")
        path = classifier_file_to_onnx(classifier, output, reject_below, weights_path)
    else:
        with tempfile.TemporaryDirectory() as folder:
            cleaned = without_run_keys(configs, Path(folder))
            config_args = resolve_configs([a for c in cleaned for a in ("-c", c)]) + list(overrides)
            config_args += [f"--model.init_args.weights_path={weights_path}"] if weights_path else []
            cli = lightning_cli([*config_args, "--trainer.logger=false"], run=False)
        calibration = cli.model.fit_calibration()  # on the config's validation split, where there is one
        splits, image_root = cli.datamodule.splits, cli.datamodule.splits.image_root
        split_paths = {name: [image_root / s.path for s in getattr(splits, name)] for name in ("val", "train")}
        open_set = fit_open_set(cli.model, cli.datamodule)  # on its training split, where there is one
        path = export_classifier(
            cli.model.with_classes(classes) if classes else cli.model,
            output or CLASSIFIER_FILE_NAME,
            embed_backbone,
            data_version=cli.datamodule.data_version,
            calibration=calibration,
            reject_below=reject_below,
            open_set=open_set if not classes else None,
        )
    if quantize:
        from promptlab.cli.quantize import quantize_written_file

        print(quantize_written_file(Path(path), quantize, run, split_paths, quantize_images))
    print(f"Wrote classifier {path}")
    return 0


# Keys LightningCLI saves in a run's config.yaml for its subcommand, which building a model does not take.
SUBCOMMAND_KEYS = ("ckpt_path", "weights_only", "verbose", "return_predictions")


def run_of_saved_config(configs: list[str], overrides: tuple[str, ...]) -> Path | None:
    """The run folder when the only config is the ``config.yaml`` a run saved and nothing overrides it."""
    if len(configs) != 1 or overrides:
        return None
    folder = Path(configs[0]).parent
    is_run = Path(configs[0]).name == "config.yaml" and (folder / "hparams.yaml").is_file()
    return folder if is_run else None


def without_run_keys(configs: list[str], folder: Path) -> list[str]:
    """Configs, each saved run config copied into ``folder`` without :data:`SUBCOMMAND_KEYS`."""
    import yaml  # not at the top: `promptlab --help` lists this command in the ONNX-only install

    cleaned = []
    for i, config in enumerate(configs):
        content = yaml.safe_load(Path(config).read_text()) if Path(config).is_file() else None
        if isinstance(content, dict) and any(key in content for key in SUBCOMMAND_KEYS):
            config = str(folder / f"{i}-{Path(config).name}")
            Path(config).write_text(yaml.safe_dump({k: v for k, v in content.items() if k not in SUBCOMMAND_KEYS}))
        cleaned.append(config)
    return cleaned
