"""``promptlab benchmark``: a protocol file's runs (the missing ones) and the paper-style results table."""

from __future__ import annotations

from pathlib import Path


def benchmark(
    protocol: str,
    *,
    out: str | None = None,
    runs: str | None = None,
    data_root: str | None = None,
    methods: list[str] | None = None,
    datasets: list[str] | None = None,
    shots: list[int] | None = None,
    seeds: list[int] | None = None,
    epochs: int | None = None,
) -> int:
    """Run a benchmark protocol (skipping finished runs) and write its results table.

    Args:
        protocol: a protocol file (e.g. configs/protocols/coop_few_shot.yaml, shipped ones by name).
        out: where the tables go (default: benchmarks/results/<protocol name>).
        runs: where each run's folder goes (default: runs/<protocol name>); finished runs there are reused.
        data_root: the datasets' root, instead of the protocol's data_root.
        methods: only these methods (their labels in the protocol).
        datasets: only these datasets (few-shot and base-to-new).
        shots: these shot counts instead of the protocol's.
        seeds: these seeds instead of the protocol's.
        epochs: train every method for this many epochs (a quick check; not the protocol's numbers).

    Exit status:
        0 when every run finished.
    """
    from promptlab.cli.benchmark_runs import ProtocolRunner
    from promptlab.cli.protocol import ProtocolError, load_protocol
    from promptlab.cli.results_table import write_report

    plan = load_protocol(protocol)
    unknown = sorted(set(methods or []) - set(plan.methods))
    if unknown:
        raise ProtocolError(f"The protocol has no methods {unknown}; it has {sorted(plan.methods)}.")
    plan.methods = {k: v for k, v in plan.methods.items() if not methods or k in methods}
    plan.datasets = [d for d in plan.datasets if not datasets or d in datasets]
    plan.base_to_new = [d for d in plan.base_to_new if not datasets or d in datasets]
    plan.shots, plan.seeds = shots or plan.shots, seeds or plan.seeds
    plan.data_root, plan.epochs = data_root or plan.data_root, epochs or plan.epochs
    runner = ProtocolRunner(plan, Path(runs or f"runs/{plan.name}"))
    results = runner.run_all()
    folder = Path(out or f"benchmarks/results/{plan.name}")
    print(write_report(results, plan.shots, folder, "results", vars(plan)))
    print(f"wrote {folder}/results.{{md,csv,json,png}}, summary.json, curves.csv")
    return 0
