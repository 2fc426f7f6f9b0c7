"""Accuracy on the offline toy world: every method, shots 1-16, seeds 1-3, through the promptlab CLI.

The grid is the protocol file ``configs/protocols/toy.yaml``, run by the code ``promptlab benchmark``
runs (:mod:`promptlab.cli.benchmark_runs`); this script narrows it with options and writes the tables
under the names the DVC pipeline tracks.

Few-shot methods run every shot count; zero-shot runs once per task; label-free methods (NoLA) run
once per seed on the unlabelled pool; base-to-new runs on ``--base_to_new`` tasks (harmonic mean).
Writes ``<out>/accuracy.json`` (every run), ``accuracy.md`` (mean and std over seeds),
``accuracy.png`` (accuracy against shots, like the CoOp paper's figure) and ``summary.json`` (flat
metrics for ``dvc metrics show``) plus ``curves.csv`` (for ``dvc plots show``).

    python benchmarks/accuracy.py            # the full grid (577 runs, about 100 minutes on 2 CPU cores)
    python benchmarks/accuracy.py --quick    # one task, 2 shot counts, 1 seed, few epochs (CI)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from promptlab.cli.benchmark_runs import ProtocolRunner, registered_by_label, run_cli
from promptlab.cli.protocol import load_protocol
from promptlab.cli.results_table import write_report

# Every registered method with a toy config, by its label; its contract says how it runs: methods
# that learn from names only are tested once per task, label-free ones once per seed on the pool.
METHODS = {label: cls for label, cls in registered_by_label().items() if cls.toy is not None}
LABEL_FREE = {label for label, cls in METHODS.items() if cls.learns_from == "unlabelled"}
TOY_PROTOCOL = "protocols/toy.yaml"


def _run_cli(args: list[str], runs: Path, name: str) -> tuple[Path, dict]:
    """Runs one promptlab command (always anew); returns its run folder and test metrics."""
    return run_cli(args, runs, name, resume=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="style_shift, shots 1 and 16, seed 1, 20 epochs")
    parser.add_argument("--tasks", nargs="+", default=["shapes", "style_shift", "mixed"])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--base_to_new", nargs="*", default=["mixed"], help="tasks also run base-to-new")
    parser.add_argument("--base_to_new_shots", type=int, default=16)
    parser.add_argument("--epochs", type=int, help="override the reference epochs (e.g. for a quick check)")
    parser.add_argument("--data_root", default=".", help="folder holding the toy world in toy/")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--keep_others",
        action="store_true",
        help="rerun only --methods; keep the other methods' runs from <out>/accuracy.json",
    )
    parser.add_argument("--runs", default="runs/accuracy", help="where each run's folder goes (not committed)")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs in --runs instead of rerunning")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.shots, args.seeds, args.epochs = ["style_shift"], [1, 16], [1], args.epochs or 20
        args.base_to_new = ["mixed"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    protocol = load_protocol(TOY_PROTOCOL)  # the grid `promptlab benchmark` runs, narrowed by the options
    protocol.methods = {label: "toy" for label in args.methods}
    protocol.datasets = [f"toy_{task}" for task in args.tasks]
    protocol.base_to_new = [f"toy_{task}" for task in args.base_to_new]
    protocol.shots, protocol.seeds, protocol.epochs = args.shots, args.seeds, args.epochs
    protocol.data_root, protocol.base_to_new_shots = args.data_root, args.base_to_new_shots
    results = ProtocolRunner(protocol, Path(args.runs), resume=args.resume).run_all()

    if args.keep_others and (out / "accuracy.json").is_file():
        kept = [r for r in json.loads((out / "accuracy.json").read_text())["runs"] if r["method"] not in args.methods]
        results = kept + results
    print(write_report(results, args.shots, out, "accuracy", vars(args), link_runs=False))
    print(f"wrote {out}/accuracy.{{json,md,png,csv}}, summary.json, curves.csv")


if __name__ == "__main__":
    main()
