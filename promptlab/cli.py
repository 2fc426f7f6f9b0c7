"""The ``promptlab`` command: LightningCLI for fit/validate/test/predict, plus export and classify."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from promptlab.data import FewShotDataModule
from promptlab.methods import CLIPClassifier
from promptlab.reporting import run_dir, top_predictions, write_predictions

log = logging.getLogger("promptlab")


class PromptLabCLI(LightningCLI):
    """LightningCLI with class names and the dataset template linked from the data to the model."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("data.prompt_template", "model.init_args.dataset_template", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=True, help="Test the last epoch after `fit`.")

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self.model.connect_data(self.datamodule)  # preprocessing and the frozen encoder: model -> data

    def before_predict(self) -> None:
        paths = [sample.path for sample in self.datamodule.prediction_samples]
        self.trainer.callbacks.append(PredictionsFile(paths, self.model.class_names))

    def _set_seed(self) -> None:
        # Unless a seed is given, seed everything with the few-shot seed, as the reference does.
        config = self.config.get(str(self.subcommand), self.config)
        if config.get("seed_everything") is True:
            config["seed_everything"] = config["data"]["seed"]
        super()._set_seed()

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit", True) and not self.trainer.fast_dev_run:
            self.trainer.test(self.model, datamodule=self.datamodule)


class PredictionsFile(BasePredictionWriter):
    """Writes ``predictions.csv`` into the run folder after ``promptlab predict``.

    Args:
        paths: the predicted images, by the index the data module's predict batches carry.
        class_names: class names by label.
    """

    def __init__(self, paths: list[str], class_names: list[str], top_k: int = 5) -> None:
        super().__init__(write_interval="epoch")
        self.paths, self.class_names, self.top_k = paths, class_names, top_k

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        out_dir = run_dir(trainer)
        rows = []
        for probabilities, indices in predictions:  # predict_step's (B, C) probabilities and (B,) indices
            for index, prediction in zip(
                indices.tolist(), top_predictions(probabilities, self.class_names, self.top_k), strict=True
            ):
                rows.append({"path": self.paths[index], **asdict(prediction)})
        if out_dir is not None:
            write_predictions(rows, out_dir / "predictions.csv")


def _no_tips(record: logging.LogRecord) -> bool:
    return "Tip:" not in record.getMessage()


def quiet_lightning() -> None:
    """Silences what every normal run would print and no user can act on."""
    noise = (
        r".*module\(s\) in eval mode.*",  # the frozen backbone is meant to be in eval mode
        r".*LeafSpec.*",
        r".*args parameter is intended to run from within Python.*",  # we pass sys.argv on purpose
        r".*configure_optimizers` returned `None`.*",  # methods fitted in one go (linear probe, Tip-Adapter)
        r".*`training_step` returned `None`.*",
    )
    for message in noise:
        warnings.filterwarnings("ignore", message=message)
    # Lightning's "💡 Tip: ..." lines (litlogger, litmodels) come through this logger at INFO.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_tips)  # added once: same object


def default_precision() -> str:
    """Mixed precision on a GPU (bf16 where supported, else fp16 with loss scaling); fp32 on the CPU."""
    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def lightning_cli(args: list[str] | None = None, run: bool = True) -> PromptLabCLI:
    """Builds the experiment CLI (``run=False``: instantiate from ``args`` without a subcommand)."""
    quiet_lightning()
    return PromptLabCLI(
        CLIPClassifier,
        FewShotDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "precision": default_precision(),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
            # Save the last epoch even when validation is rare or off (the reference evaluates the last epoch).
            "callbacks": [ModelCheckpoint(save_on_train_epoch_end=True)],
        },
        args=args,
        run=run,
    )


def export_command(argv: list[str]) -> int:
    """Write a classifier file from a run folder, a checkpoint or a config (zero-shot)."""
    from promptlab.export import CLASSIFIER_FILE_NAME, export_classifier, export_run, load_method

    parser = argparse.ArgumentParser(prog="promptlab export", description=export_command.__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run folder written by `promptlab fit` (e.g. runs/lightning_logs/version_0)")
    source.add_argument("--checkpoint", help="a promptlab .ckpt file")
    source.add_argument("-c", "--config", action="append", help="config file(s) of an untrained (zero-shot) model")
    parser.add_argument("--output", "-o", help=f"output file (default: <run>/{CLASSIFIER_FILE_NAME})")
    parser.add_argument("--embed_backbone", action="store_true", help="store the image tower's weights in the file")
    args, rest = parser.parse_known_args(argv)
    if args.run:
        path = export_run(args.run, args.output, args.embed_backbone)
    elif args.checkpoint:
        path = export_classifier(load_method(args.checkpoint), args.output or CLASSIFIER_FILE_NAME, args.embed_backbone)
    else:
        config_args = resolve_configs([a for c in args.config for a in ("-c", c)]) + rest
        cli = lightning_cli([*config_args, "--trainer.logger=false"], run=False)
        path = export_classifier(
            cli.model,
            args.output or CLASSIFIER_FILE_NAME,
            args.embed_backbone,
            data_version=cli.datamodule.data_version,
        )
    print(f"Wrote classifier {path}")
    return 0


def classify_command(argv: list[str]) -> int:
    """Classify images or folders of images with an exported classifier file."""
    from promptlab.classifier import Classifier
    from promptlab.data.datamodule import prediction_samples
    from promptlab.data.images import ImageLoadError
    from promptlab.reporting import write_predictions

    parser = argparse.ArgumentParser(prog="promptlab classify", description=classify_command.__doc__)
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--classifier", required=True, help="file written by `promptlab export`")
    parser.add_argument("--weights_path", help="local backbone weights, if the file does not embed them")
    parser.add_argument("--top_k", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--output", "-o", help="write predictions to a .csv or .json file")
    args = parser.parse_args(argv)

    classifier = Classifier.load(args.classifier, args.weights_path, args.device)
    paths = [sample.path for sample in prediction_samples(args.images)]
    rows, unreadable = [], []
    for path in paths:  # one at a time, so that one bad file does not stop the others
        try:
            (prediction,) = classifier.predict(path, top_k=args.top_k)
        except ImageLoadError as error:
            unreadable.append(str(error))
            continue
        rows.append({"path": path, **prediction.__dict__})
    if args.output:
        write_predictions(rows, Path(args.output))
        print(f"Wrote {len(rows)} predictions to {args.output}")
    else:
        for row in rows:
            others = ", ".join(f"{name} {p:.1%}" for name, p in row["top_k"][1:])
            print(f"{row['path']}\t{row['label']}\t{row['probability']:.1%}" + (f"\t({others})" if others else ""))
    for message in unreadable:
        print(f"skipped: {message}", file=sys.stderr)
    return 1 if unreadable and not rows else 0


def backbones_command(argv: list[str]) -> int:
    """List the backbone architectures promptlab can load."""
    from promptlab.backbone import list_backbones

    argparse.ArgumentParser(prog="promptlab backbones", description=backbones_command.__doc__).parse_args(argv)
    print("\n".join(list_backbones()))
    return 0


def methods_command(argv: list[str]) -> int:
    """List the registered methods: key, class, what each learns from."""
    from promptlab.methods import registered_methods

    argparse.ArgumentParser(prog="promptlab methods", description=methods_command.__doc__).parse_args(argv)
    for key, cls in registered_methods().items():
        print(f"{key:<16} {cls.__module__}.{cls.__qualname__:<14} learns from {cls.learns_from}: {cls.about}")
    return 0


def quickstart_command(argv: list[str]) -> int:
    """Zero-shot CLIP against CoOp on the offline toy world, exported and used (no network)."""
    from promptlab.quickstart import quickstart_command as run

    return run(argv)


LIGHTNING_COMMANDS = {
    "fit": "Train a method (then test the last epoch): promptlab fit -c CONFIG.yaml [--key value ...]",
    "validate": "Evaluate a checkpoint (or a zero-shot model) on the validation split",
    "test": "Evaluate a checkpoint (or a zero-shot model) on the test split",
    "predict": "Write predictions.csv for --data.predict_files with a checkpoint",
}
TOOLS = {
    "export": export_command,
    "classify": classify_command,
    "backbones": backbones_command,
    "methods": methods_command,
    "quickstart": quickstart_command,
}


def print_help() -> None:
    """``promptlab --help``: every command with one line each."""
    lines = ["usage: promptlab COMMAND [options]   (promptlab COMMAND --help for a command's options)", "", "commands:"]
    first_lines = {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in TOOLS.items()}
    for name, text in {**LIGHTNING_COMMANDS, **first_lines}.items():
        lines.append(f"  {name:<12} {text}")
    lines += [
        "",
        "Configs shipped with promptlab are found by their name, e.g. -c configs/toy/coop.yaml, from any folder.",
    ]
    print("\n".join(lines))


def resolve_configs(args: list[str]) -> list[str]:
    """``-c``/``--config`` paths that do not exist here but name a shipped config (``configs/toy/coop.yaml``)
    -> that shipped file, so the README's commands work from an installed wheel in any folder."""
    from promptlab.configs import shipped_config

    resolved = list(args)
    for i, arg in enumerate(resolved[:-1]):
        if arg in ("-c", "--config") and not Path(resolved[i + 1]).exists():
            shipped = shipped_config(resolved[i + 1])
            resolved[i + 1] = str(shipped) if shipped else resolved[i + 1]
    return resolved


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``promptlab`` console script and ``python -m promptlab``."""
    from promptlab.errors import USER_ERRORS

    args = list(sys.argv[1:] if args is None else args)
    sys.argv[0] = "promptlab"  # LightningCLI's usage lines name the program after it (python -m promptlab too)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    quiet_lightning()
    if not args or args[0] in ("-h", "--help", "help"):
        print_help()
        return 0
    if args[0] not in TOOLS and args[0] not in LIGHTNING_COMMANDS and not args[0].startswith("-"):
        print(f"error: unknown command {args[0]!r}; run `promptlab --help` for the list.", file=sys.stderr)
        return 2
    if args and args[0] in TOOLS:
        try:
            return TOOLS[args[0]](args[1:])
        except USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    try:
        lightning_cli(resolve_configs(args))
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
