"""The ``promptlab`` command: LightningCLI for fit/validate/test/predict, plus export and classify."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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

    def before_fit(self) -> None:
        if not self.model.trains():
            from promptlab.errors import UserError

            raise UserError(
                f"{type(self.model).__name__} learns nothing, so there is nothing to fit; "
                "run `promptlab test` with the same config instead."
            )

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
        rows = [  # (image index, prediction) from predict_step's (B, C) probabilities and (B,) indices
            (index, prediction)
            for probabilities, indices in predictions
            for index, prediction in zip(
                indices.tolist(), top_predictions(probabilities, self.class_names, self.top_k), strict=True
            )
        ]
        if trainer.world_size > 1:  # under DDP each process predicted its own share: the main one writes all
            shares = [None] * trainer.world_size
            torch.distributed.all_gather_object(shares, rows)
            rows = [row for share in shares for row in share]
        out_dir = run_dir(trainer)  # every process asks (a broadcast); only the main one gets a folder
        if out_dir is not None:
            ordered = sorted(dict(rows).items())  # by image index; each image once
            write_predictions([(self.paths[index], p) for index, p in ordered], out_dir / "predictions.csv")


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
    """Write a classifier file (.safetensors or .onnx) from a run, checkpoint, config (zero-shot) or classifier."""
    from promptlab.calibration import Calibration
    from promptlab.export import CLASSIFIER_FILE_NAME, ExportError, export_classifier, export_run, load_method

    parser = argparse.ArgumentParser(prog="promptlab export", description=export_command.__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run folder written by `promptlab fit` (e.g. runs/lightning_logs/version_0)")
    source.add_argument("--checkpoint", help="a promptlab .ckpt file")
    source.add_argument("-c", "--config", action="append", help="config file(s) of an untrained (zero-shot) model")
    source.add_argument("--classifier", help="a .safetensors classifier file, to write as .onnx")
    parser.add_argument(
        "--output",
        "-o",
        help=f"output file, .safetensors or .onnx by its suffix (default: <run>/{CLASSIFIER_FILE_NAME})",
    )
    parser.add_argument("--embed_backbone", action="store_true", help="store the image tower's weights in the file")
    parser.add_argument(
        "--reject_below", type=float, help='answer "none of these" below this calibrated top probability (0-1)'
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        metavar="NAME",
        help="other class names for the learned prompts, without retraining (zero-shot, shared-context CoOp, MoCoOp)",
    )
    args, rest = parser.parse_known_args(argv)
    if args.classes and args.classifier:
        raise ExportError(
            "--classes needs the learned prompts: export from --run, --checkpoint or -c, not --classifier."
        )
    if args.run:
        path = export_run(args.run, args.output, args.embed_backbone, args.reject_below, args.classes)
    elif args.checkpoint:
        not_fitted = Calibration(
            fitted_on="not calibrated: exported from a checkpoint alone (export --run to use its test's)"
        )
        model = load_method(args.checkpoint)
        model = model.with_classes(args.classes) if args.classes else model
        output = args.output or CLASSIFIER_FILE_NAME
        path = export_classifier(
            model, output, args.embed_backbone, calibration=not_fitted, reject_below=args.reject_below
        )
    elif args.classifier:
        if not args.output or Path(args.output).suffix.lower() != ".onnx":
            raise ExportError("--classifier converts a classifier file to ONNX: pass -o with a .onnx name.")
        from promptlab.onnx_export import classifier_file_to_onnx

        path = classifier_file_to_onnx(args.classifier, args.output, args.reject_below)
    else:
        config_args = resolve_configs([a for c in args.config for a in ("-c", c)]) + rest
        cli = lightning_cli([*config_args, "--trainer.logger=false"], run=False)
        calibration = cli.model.fit_calibration()  # on the config's validation split, where there is one
        path = export_classifier(
            cli.model.with_classes(args.classes) if args.classes else cli.model,
            args.output or CLASSIFIER_FILE_NAME,
            args.embed_backbone,
            data_version=cli.datamodule.data_version,
            calibration=calibration,
            reject_below=args.reject_below,
        )
    print(f"Wrote classifier {path}")
    return 0


CLASSIFY_NOTHING, CLASSIFY_PARTIAL = 1, 3  # classify's exit status when files were skipped


def classify_command(argv: list[str]) -> int:
    """Classify images or folders of images (recursively) with an exported classifier file."""
    from promptlab.classifier import Classifier
    from promptlab.data.datamodule import prediction_samples
    from promptlab.prediction import check_reject_below

    parser = argparse.ArgumentParser(
        prog="promptlab classify",
        description=classify_command.__doc__,
        epilog=f"Exit status: 0 every image classified, {CLASSIFY_PARTIAL} some files skipped (named on stderr), "
        f"{CLASSIFY_NOTHING} nothing classified, 2 a usage or input error.",
    )
    parser.add_argument("images", nargs="+", help="image files or folders of images (sub-folders included)")
    parser.add_argument("--classifier", required=True, help="file written by `promptlab export`")
    parser.add_argument("--weights_path", help="local backbone weights, if the file does not embed them")
    parser.add_argument("--top_k", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64, help="images per image-encoder call")
    parser.add_argument(
        "--num_workers", type=int, help="image decoding processes (default: by device and cores, 0 on 2 CPU cores)"
    )
    parser.add_argument(
        "--reject_below", type=float, help='"none of these" below this top probability (default: the file\'s own)'
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--output", "-o", help="stream predictions to a .csv or .json file")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--decoder_log",
        help="file for the image decoders' own warnings, kept off the terminal (default: one in the temp folder)",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1 or (args.num_workers or 0) < 0 or args.top_k < 1:
        parser.error("--batch_size and --top_k must be at least 1, --num_workers at least 0")
    reject_below = check_reject_below(args.reject_below, "--reject_below")

    classifier = Classifier.load(args.classifier, args.weights_path, args.device)
    paths = [sample.path for sample in prediction_samples(args.images)]
    decoder_log = Path(args.decoder_log or Path(tempfile.gettempdir()) / f"promptlab-classify-{os.getpid()}.log")
    with decoder_messages_to(decoder_log):
        unreadable = _classify_to_output(classifier, paths, args, reject_below)
    if decoder_log.is_file() and decoder_log.stat().st_size:
        lines = len(decoder_log.read_bytes().splitlines())
        print(f"The image decoders' own messages ({lines} lines) are in {decoder_log}", file=sys.stderr)
    elif not args.decoder_log:
        decoder_log.unlink(missing_ok=True)
    if unreadable:
        print(f"Skipped {len(unreadable)} unreadable file(s):", file=sys.stderr)
        for message in unreadable:
            print(f"  {message}", file=sys.stderr)
    if not unreadable:
        return 0
    return CLASSIFY_NOTHING if len(unreadable) == len(paths) else CLASSIFY_PARTIAL


def _classify_to_output(classifier, paths: list[str], args: argparse.Namespace, reject_below) -> list[str]:
    """Streams predictions to ``args.output`` (or stdout); returns the reasons of the unreadable files."""
    from promptlab.classify import classify_files
    from promptlab.reporting import PredictionWriter

    writer = PredictionWriter(args.output) if args.output else None
    unreadable: list[str] = []
    results = classify_files(
        classifier, paths, args.batch_size, args.num_workers, args.top_k, reject_below, not args.no_progress
    )
    try:
        for result in results:
            if isinstance(result, str):
                unreadable.append(result)
            elif writer is not None:
                writer.write(*result)
            else:
                print(_prediction_line(*result))
    except BaseException:
        if writer is not None:
            writer.close(keep=False)
        raise
    if writer is not None:
        writer.close()
        print(f"Wrote {writer.count} predictions to {args.output}")
    return unreadable


@contextmanager
def decoder_messages_to(path: Path) -> Iterator[None]:
    """Pillow's warnings and libtiff's/libjpeg's prints go to ``path`` instead of the terminal."""
    from promptlab.data.images import decoder_log
    from promptlab.native_stderr import native_stderr_to

    handler = logging.FileHandler(path, encoding="utf-8")
    decoder_log.addHandler(handler)
    decoder_log.setLevel(logging.INFO)
    try:
        with native_stderr_to(path):
            yield
    finally:
        decoder_log.removeHandler(handler)
        handler.close()


def _prediction_line(path: str, prediction) -> str:
    """One tab-separated line: path, label (or "none of these"), probability, the other top classes."""
    from promptlab.prediction import NONE_OF_THESE

    others = ", ".join(f"{name} {p:.1%}" for name, p in prediction.top_k[1:])
    label = f"{NONE_OF_THESE} (best: {prediction.label})" if prediction.none_of_these else prediction.label
    return f"{path}\t{label}\t{prediction.probability:.1%}" + (f"\t({others})" if others else "")


def serve_command(argv: list[str]) -> int:
    """Serve a classifier file over HTTP (POST /predict, GET /health) with LitServe."""
    import os

    from promptlab.serving import API_KEY_ENV, API_KEY_HEADER, build_server, stop_on_signals

    parser = argparse.ArgumentParser(prog="promptlab serve", description=serve_command.__doc__)
    parser.add_argument("--classifier", required=True, help="a .safetensors or .onnx file from `promptlab export`")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api_key", help=f"require this key in the {API_KEY_HEADER} header (or set ${API_KEY_ENV})")
    parser.add_argument("--reject_below", type=float, help='"none of these" below this top probability')
    parser.add_argument("--max_batch_size", type=int, default=16, help="most requests per model call")
    parser.add_argument("--batch_timeout", type=float, default=0.002, help="seconds a batch waits to fill")
    parser.add_argument("--weights_path", help="backbone weights, if the file does not embed them")
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    server = build_server(
        args.classifier,
        api_key,
        args.reject_below,
        args.weights_path,
        args.max_batch_size,
        args.batch_timeout,
        args.accelerator,
    )
    key_note = f", {API_KEY_HEADER} required" if api_key else ""
    print(f"Serving {args.classifier} on http://{args.host}:{args.port}/predict{key_note}", flush=True)
    stop_on_signals()
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")
    return 0


def backbones_command(argv: list[str]) -> int:
    """List the backbone architectures promptlab can load (besides local-dir:/path and hf-hub:org/repo)."""
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
    "serve": serve_command,
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
    except Exception as error:
        # jsonargparse wraps an error raised while it builds the model or data into its own ValueError
        # (with an 80-line traceback); the user's error is in the chain of causes.
        user_error = _user_error_in(error)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        return 2
    return 0


def _user_error_in(error: BaseException) -> BaseException | None:
    """The first user error among ``error`` and its causes and contexts, or None."""
    from promptlab.errors import USER_ERRORS

    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, USER_ERRORS):
            return current
        pending += [current.__cause__, current.__context__]
    return None
