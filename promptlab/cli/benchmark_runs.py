"""Running a protocol's grid through the promptlab CLI, one run folder per (method, dataset, shots, seed).

A run whose folder already holds its test metrics is not run again, so an interrupted benchmark
resumes where it stopped. Few-shot methods run every shot count; methods that train on nothing run
once per dataset; label-free methods run once per seed on the toy world's unlabelled pool.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from promptlab.cli.protocol import Protocol
from promptlab.configs import shipped_config, toy_config_path
from promptlab.run_folder import TEST_METRICS_FILE

TOY_PREFIX = "toy_"
# Base-to-new and cross-dataset need contexts that apply to unseen classes: class-specific ones have none.
SHARED_CONTEXT_ARGS = {"CoOp": ["--model.init_args.class_specific=false"]}


def registered_by_label() -> dict[str, Any]:
    """Every registered method by its label (``CoOp``, ``Zero-shot CLIP``...)."""
    from promptlab.methods import registered_methods

    return {cls.label: cls for cls in registered_methods().values()}


def finished_run(runs: Path, name: str) -> Path | None:
    """The newest run folder of ``name`` that finished its test, or None."""
    done = [p.parent for p in (runs / name).glob(f"version_*/{TEST_METRICS_FILE}")]
    return max(done, key=lambda p: p.stat().st_mtime) if done else None


def run_cli(args: list[str], runs: Path, name: str, resume: bool = True) -> tuple[Path, dict]:
    """Runs one promptlab command (with ``resume``, only when no finished run of ``name`` exists);
    returns its run folder and test metrics.
    """
    from promptlab.cli.lightning import lightning_cli

    run = finished_run(runs, name) if resume else None
    if run is None:
        common = [
            f"--trainer.logger.init_args.save_dir={runs}",
            f"--trainer.logger.init_args.name={name}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
        lightning_cli([*args, *common])
        run = finished_run(runs, name)
        assert run is not None, f"{name} wrote no {TEST_METRICS_FILE}"
    return run, json.loads((run / TEST_METRICS_FILE).read_text())


def dataset_sets_epochs(dataset: str) -> bool:
    """Whether the dataset's shipped config sets the epochs (ImageNet's 50, whatever the shot count)."""
    config = shipped_config(f"datasets/{dataset}.yaml")
    return config is not None and "max_epochs" in (yaml.safe_load(config.read_text()).get("trainer") or {})


def task_name(dataset: str) -> str:
    """A dataset as the tables name it (a toy task by its task: ``toy_shapes`` -> ``shapes``)."""
    return dataset.removeprefix(TOY_PREFIX)


class ProtocolRunner:
    """Runs the runs of one protocol; each ``run_*`` returns one result row (what the tables read)."""

    def __init__(self, protocol: Protocol, runs: Path, say: Callable[[str], None] = print, resume: bool = True) -> None:
        self.protocol = protocol
        self.runs = runs
        self.resume = resume
        self.say = say
        self.classes = registered_by_label()

    def method(self, label: str) -> Any:
        """The registered method class of ``label`` (its contract says how it runs)."""
        return self.classes[label]

    def _base_args(self, label: str, dataset: str, seed: int) -> tuple[list[str], str]:
        """The command line shared by every run of ``label`` on ``dataset``, and its subcommand."""
        cls, config = self.method(label), self.protocol.methods[label]
        config_file = str(toy_config_path(cls)) if config == "toy" else config
        subcommand = "fit" if cls.trains() else "test"
        root = self.protocol.data_root
        args = [subcommand, "-c", config_file]
        dataset_config = shipped_config(f"datasets/{dataset}.yaml")  # the standard datasets' settings
        args += ["-c", str(dataset_config)] if dataset_config else []
        args += [f"--data.dataset={dataset}", f"--data.root={root}", f"--data.seed={seed}"]
        return args, subcommand

    def _training_args(self, label: str, dataset: str, shots: int) -> list[str]:
        cls, epochs = self.method(label), self.protocol.epochs
        if cls.learns_from == "unlabelled":
            toy = Path(self.protocol.data_root) / "toy"
            extra = []
            if dataset.startswith(TOY_PREFIX):
                extra = [f"--data.unlabelled={toy / 'unlabelled'}"]
                extra.append(f"--model.init_args.descriptions_file={toy / 'descriptions.json'}")
            return extra + ([f"--trainer.max_epochs={epochs}"] if epochs else [])
        if not cls.trains():
            return []
        args = [f"--data.shots={shots}", "--trainer.check_val_every_n_epoch=100000"]
        # The method's epochs for the shot count, unless the dataset has its own (ImageNet: 50 at every count).
        if cls.uses_epochs and (epochs or (cls.epochs_by_shots and not dataset_sets_epochs(dataset))):
            args.append(f"--trainer.max_epochs={epochs or cls.epochs_by_shots[shots]}")
        return args

    def _row(self, label: str, task: str, shots: int, seed: int, start: float, run: Path, **row: float) -> dict:
        return {
            "method": label,
            "task": task,
            "shots": shots,
            "seed": seed,
            **row,
            "seconds": time.time() - start,
            "run": str(run),
        }

    def run_few_shot(self, label: str, dataset: str, shots: int, seed: int, extra: tuple[str, ...] = ()) -> dict:
        """One method trained and tested on one dataset (``extra``: more options, named in the run's name)."""
        name = f"{label}_{task_name(dataset)}_{shots}shot_seed{seed}{'_shared' if extra else ''}".replace(" ", "")
        args, _ = self._base_args(label, dataset, seed)
        start = time.time()
        args += self._training_args(label, dataset, shots) + list(extra)
        run, metrics = run_cli(args, self.runs, name, self.resume)
        row = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
        if (run / "nola_stages.json").is_file():  # label-free stages on the same test images
            stages = json.loads((run / "nola_stages.json").read_text())
            row |= {k: stages[k] for k in ("stage1_accuracy", "stage2_accuracy") if k in stages}
        return self._row(label, task_name(dataset), shots, seed, start, run, **row)

    def run_base_to_new(self, label: str, dataset: str, shots: int, seed: int) -> dict:
        """Trained on the base half of the classes, tested on both halves (``accuracy``: their harmonic mean)."""
        name = f"{label}_{task_name(dataset)}_base_to_new_{shots}shot_seed{seed}".replace(" ", "")
        args, subcommand = self._base_args(label, dataset, seed)
        args += self._training_args(label, dataset, shots) + SHARED_CONTEXT_ARGS.get(label, [])
        start = time.time()
        run, base = run_cli([*args, "--data.subsample_classes=base"], self.runs, name, self.resume)
        test = ["test", *args[1:], "--data.subsample_classes=new"]
        if subcommand == "fit":
            (checkpoint,) = (run / "checkpoints").glob("*.ckpt")
            test.append(f"--ckpt_path={checkpoint}")
        _, new = run_cli(test, self.runs, name + "_new", self.resume)
        b, n = base["accuracy"], new["accuracy"]
        row = {"accuracy": 2 * b * n / (b + n) if b + n else 0.0, "base": b, "new": n}
        return self._row(label, f"{task_name(dataset)} base-to-new", shots, seed, start, run, **row)

    def run_transfer(self, label: str, shots: int, seed: int) -> list[dict]:
        """Cross-dataset or domain generalisation: trained on ``train_on``, the same classifier tested on
        each dataset (rebuilt for its classes: the learned prompts apply to any class names).
        """
        source = self.protocol.train_on
        assert source is not None  # load_protocol requires it for these kinds
        start = time.time()
        trained = self.run_few_shot(label, source, shots, seed, tuple(SHARED_CONTEXT_ARGS.get(label, [])))
        rows = [trained]
        checkpoints = list((Path(trained["run"]) / "checkpoints").glob("*.ckpt"))
        for dataset in self.protocol.datasets:
            name = f"{label}_{task_name(source)}_to_{task_name(dataset)}_{shots}shot_seed{seed}".replace(" ", "")
            args, _ = self._base_args(label, dataset, seed)
            test = ["test", *args[1:], *SHARED_CONTEXT_ARGS.get(label, [])]
            test += [f"--ckpt_path={checkpoints[0]}"] if checkpoints else []
            run, metrics = run_cli(test, self.runs, name, self.resume)
            rows.append(self._row(label, task_name(dataset), shots, seed, start, run, accuracy=metrics["accuracy"]))
        return rows

    def run_all(self) -> list[dict]:
        """Every run of the protocol, in order, with a line per run."""
        protocol, results = self.protocol, []
        for label in protocol.methods:
            cls = self.method(label)
            untrained = not cls.trains()
            shot_counts = [0] if untrained or cls.learns_from == "unlabelled" else protocol.shots
            seeds = protocol.seeds[:1] if untrained else protocol.seeds
            if protocol.kind != "few_shot":
                if not cls.transfers_to_new_classes:
                    self.say(f"{label} skipped: what it learns is tied to the training classes, not transferred")
                    continue
                for shots in shot_counts:
                    for seed in seeds:
                        results += self.run_transfer(label, shots, seed)
                        self.say(f"{label} from {protocol.train_on}, {shots} shots, seed {seed}: done")
                continue
            for dataset in protocol.datasets:
                for shots in shot_counts:
                    for seed in seeds:
                        results.append(self.run_few_shot(label, dataset, shots, seed))
                        r = results[-1]
                        self.say(
                            f"{label} {r['task']} {shots} shots seed {seed}: {r['accuracy']:.1%} ({r['seconds']:.0f} s)"
                        )
        for dataset in protocol.base_to_new:
            for label in protocol.methods:
                cls = self.method(label)
                if cls.learns_from == "unlabelled" or not cls.transfers_to_new_classes:
                    continue
                trained = cls.trains()
                for seed in protocol.seeds if trained else protocol.seeds[:1]:
                    shots = protocol.base_to_new_shots if trained else 0
                    results.append(self.run_base_to_new(label, dataset, shots, seed))
                    r = results[-1]
                    scores = f"base {r['base']:.1%}, new {r['new']:.1%}"
                    self.say(f"{label} {task_name(dataset)} base-to-new seed {seed}: {scores}")
        return results
