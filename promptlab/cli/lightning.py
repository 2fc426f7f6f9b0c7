"""LightningCLI for ``promptlab fit``, ``validate``, ``test`` and ``predict``: the experiment command line."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from typing_extensions import override

from promptlab.configs import shipped_config
from promptlab.data import FewShotDataModule
from promptlab.deploy.prediction import rank
from promptlab.deploy.prediction_files import write_predictions
from promptlab.errors import UserError
from promptlab.methods import CLIPClassifier
from promptlab.run_folder import run_dir


class PromptLabCLI(LightningCLI):
    """LightningCLI with class names and the dataset template linked from the data to the model."""

    @override
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("data.prompt_template", "model.init_args.dataset_template", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=True, help="Test the last epoch after `fit`.")

    @override
    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self.model.connect_data(self.datamodule)  # preprocessing and the frozen encoder: model -> data

    def before_fit(self) -> None:
        """LightningCLI's hook before ``fit``: a method that learns nothing is refused in one sentence."""
        if not self.model.trains():
            raise UserError(
                f"{type(self.model).__name__} learns nothing, so there is nothing to fit; "
                "run `promptlab test` with the same config instead."
            )

    def before_predict(self) -> None:
        """LightningCLI's hook before ``predict``: ``predictions.csv`` is written into the run folder."""
        paths = [sample.path for sample in self.datamodule.prediction_samples]
        trainer: Any = self.trainer
        trainer.callbacks.append(PredictionsFile(paths, self.model.class_names))

    def _set_seed(self) -> None:
        # Unless a seed is given, seed everything with the few-shot seed, as the reference does.
        config = self.config.get(str(self.subcommand), self.config)
        if config.get("seed_everything") is True:
            config["seed_everything"] = config["data"]["seed"]
        super()._set_seed()

    def after_fit(self) -> None:
        """LightningCLI's hook after ``fit``: the last epoch is tested, unless ``--test_after_fit false``."""
        trainer: Any = self.trainer
        if self.config[self.subcommand].get("test_after_fit", True) and not trainer.fast_dev_run:
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

    @override
    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        rows = [  # (image index, prediction) from predict_step's (B, C) probabilities and (B,) indices
            (index, prediction)
            for probabilities, indices in predictions
            for index, prediction in zip(
                indices.tolist(), rank(probabilities, self.class_names, self.top_k), strict=True
            )
        ]
        if trainer.world_size > 1:  # under DDP each process predicted its own share: the main one writes all
            shares: list[Any] = [None] * trainer.world_size
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
        r".*across ranks is zero.*",  # no validation split (label-free runs): an empty list on purpose
        r".*smaller than the logging interval.*",  # few-shot epochs are a few batches; metrics are per epoch
    )
    for message in noise:
        warnings.filterwarnings("ignore", message=message)
    # Lightning's "💡 Tip: ..." lines (litlogger, litmodels) come through this logger at INFO.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_tips)  # added once: same object
    # Lightning prints its INFO lines with its own handler; passed on to the root logger they came twice.
    logging.getLogger("lightning").propagate = False


def default_precision() -> str:
    """Mixed precision on a GPU (bf16 where supported, else fp16 with loss scaling); fp32 on the CPU."""
    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def lightning_cli(
    args: list[str] | None = None, run: bool = True, callbacks: list[Callback] | None = None
) -> PromptLabCLI:
    """Builds the experiment CLI (``run=False``: instantiate from ``args`` without a subcommand); ``callbacks``
    join the trainer's own.
    """
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
            "callbacks": [ModelCheckpoint(save_on_train_epoch_end=True), *(callbacks or [])],
        },
        args=args,
        run=run,
    )


def resolve_configs(args: list[str]) -> list[str]:
    """``-c``/``--config`` paths that do not exist here but name a shipped config (``configs/toy/coop.yaml``)
    -> that shipped file, so the documented commands work from an installed wheel in any folder.
    """
    resolved = list(args)
    for i, arg in enumerate(resolved[:-1]):
        if arg in ("-c", "--config") and not Path(resolved[i + 1]).exists():
            shipped = shipped_config(resolved[i + 1])
            resolved[i + 1] = str(shipped) if shipped else resolved[i + 1]
    return resolved


def run_lightning(args: list[str]) -> None:
    """Runs a LightningCLI command line (``fit -c config.yaml ...``), shipped configs found by name."""
    lightning_cli(resolve_configs(args))
