"""Renders every benchmark table in the docs from the committed JSON, the benchmarks' plots and the layer graph.

    python tools/render_docs.py           # rewrite the generated blocks of README.md and docs/*.md, and
                                          # docs/index.md from the README
    python tools/render_docs.py --check   # exit 1 when a page differs from what it is rendered from

A page marks each generated block with ``<!-- generated: NAME -->`` ... ``<!-- end generated -->``;
NAME is a key of :data:`TABLES`, whose function turns the benchmark's JSON (or, for ``layers``, the
package's imports) into Markdown. Nothing in between is edited by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmark scripts' own table functions

from benchmarks import (  # noqa: E402
    active_learning,
    app_presets,
    bulk,
    cache_sharing,
    deploy,
    int8,
    method_costs,
    new_classes,
    nola_fit,
    nola_loss_signals,
    nola_prompt_cost,
    open_set,
    serving,
    speed,
)
from benchmarks.provenance import measured_at  # noqa: E402
from promptlab.cli import results_table  # noqa: E402
from tools.import_graph import mermaid  # noqa: E402

BENCHMARKS, DOCS = ROOT / "benchmarks", ROOT / "docs"
PLOTS = {  # benchmark output -> its copy under docs/ (mkdocs serves only files under docs/)
    BENCHMARKS / "results" / "accuracy.png": DOCS / "img" / "accuracy.png",
    BENCHMARKS / "active_learning.png": DOCS / "img" / "active_learning.png",
}
INDEX_NOTE = "<!-- The README with its links made relative to docs/: written by tools/render_docs.py. -->\n"
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)


def _read(name: str) -> object:
    return json.loads((BENCHMARKS / name).read_text())


def _accuracy() -> str:
    report = _read("results/accuracy.json")
    summary = report["summary"]
    by_shots = [r for r in summary if "base" not in r]
    return (
        results_table.markdown(by_shots, report["args"]["shots"])
        + results_table.label_free_markdown(summary)
        + results_table.base_to_new_markdown(summary)
    )


def _active_learning() -> str:
    report = _read("active_learning.json")
    rows, zero = report["runs"], report["zero_shot"]
    seeds = sorted({r["seed"] for r in rows})
    rounds = int(max(r["labels_per_class"] for r in rows))
    summary = active_learning.summarise(rows, zero)
    return active_learning.markdown(summary, zero, rounds, seeds) + measured_at(report.get("commit"))


def _pretraining() -> str:
    clip, dino = _read("pretraining_clip.json"), _read("pretraining_dino.json")
    tasks = ("shapes", "style_shift", "mixed")

    def triple(values: dict, key: str) -> str:
        return " / ".join(f"{100 * values[key.format(task)]:.1f}" for task in tasks) + " %"

    return "\n".join(
        [
            "| | toy-clip | toy-dino |",
            "|---|---|---|",
            f"| training | {clip['steps']:,} steps, batch {clip['batch_size']}, {clip['minutes']:.1f} min | "
            f"{dino['steps']:,} steps, batch {dino['batch_size']}, {dino['minutes']:.1f} min |",
            '| zero-shot shape accuracy, "a photo of a {}.", test (shapes / style_shift / mixed) | '
            f"{triple(clip['zero_shot_test'], '{} / a photo of a {{}}.')} | (no text tower) |",
            f'| the same, "an image of a {{}}", test | {triple(clip["zero_shot_test"], "{} / an image of a {{}}")} | |',
            '| the same, "a photo of a {}.", validation | '
            f"{triple(clip['zero_shot_val'], '{} / a photo of a {{}}.')} | |",
            "| k-NN shape accuracy, k = 10, train split as memory | "
            f"{triple(clip['knn'], '{}')} | {triple(dino['knn_shape_accuracy'], 'toy-dino / {}')} |",
        ]
    )


def _text_encoder() -> str:
    report = _read("text_encoder.json")
    prompts = {"coop_ctx16": "CoOp, 16 context vectors + name", "template": '"a photo of a {}."'}
    lines = [
        "| prompts | classes | tokens (mean / longest / full) | full 77 tokens | truncated | speed-up | "
        "max abs difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {prompts.get(r['prompt'], r['prompt'])} | {r['classes']} | "
            f"{r['tokens_mean']:.1f} / {r['tokens_max']} / "
            f"{r['tokens_full']} | {r['seconds_full']:.3g} s | {r['seconds_truncated']:.3g} s | {r['speedup']:.1f}x | "
            f"{r['max_abs_difference']:.1e} |"
        )
    return "\n".join(lines)


def _open_set() -> str:
    report = _read("open_set.json")
    return open_set.table(report) + "\n\n" + measured_at(report.get("commit"))


def _speed() -> str:
    report = _read("speed.json")
    named = {  # section -> how a row is named in the note
        "training": lambda r: f"{r['task'].split(' (')[0]} ({r['backbone']})",
        "memory": lambda r: f"{r['variant']} ({r['backbone']})",
        "inference": lambda r: r["backbone"],
    }
    parts, commits, older = [], set(), False
    for section, name in named.items():
        dated = [r for r in report[section] if r.get("commit")]
        older |= len(dated) < len(report[section])
        commits |= {r["commit"] for r in dated}
        if dated:
            parts.append(f"{section} on " + ", ".join(dict.fromkeys(name(r) for r in dated)))
    if not commits:
        return speed.table(report) + "\n"
    rest = " The other rows were measured earlier, with the same loops." if older else ""
    return f"{speed.table(report)}\n\nMeasured at commit `{', '.join(sorted(commits))}`: {'; '.join(parts)}.{rest}\n"


def _method_costs() -> str:
    report = _read("method_costs.json")
    threads = report["torch_threads"]
    return (
        f"{method_costs.markdown(report)}\nMeasured at commit `{report['commit']}`, {threads} torch "
        f"thread{'s' if threads != 1 else ''} per process.\n"
    )


def _app_presets() -> str:
    rows = _read("app_presets.json")
    commits = sorted({str(r.get("commit")) for r in rows if r.get("commit")})
    return app_presets.render(rows) + "\n" + measured_at(", ".join(commits) or None)


def _new_classes(method: str) -> Callable[[], str]:
    return lambda: new_classes.render(_read(f"new_classes_{method}.json"), method)


def _table_with_commit(table: Callable[[dict], str], name: str) -> str:
    report = _read(name)
    assert isinstance(report, dict)
    return table(report) + "\n" + measured_at(report.get("commit"))


TABLES: dict[str, Callable[[], str]] = {
    "accuracy": _accuracy,
    "active-learning": _active_learning,
    "app-presets": _app_presets,
    "bulk": lambda: _table_with_commit(bulk.table, "bulk.json"),
    "cache-sharing": lambda: _table_with_commit(cache_sharing.table, "cache_sharing.json"),
    "deploy": lambda: deploy.table(_read("deploy.json")),
    "int8": lambda: _table_with_commit(int8.table, "int8.json"),
    "method-costs": _method_costs,
    "new-classes-coop": _new_classes("coop"),
    "nola-prompt-cost": lambda: _table_with_commit(nola_prompt_cost.table, "nola_prompt_cost.json"),
    "nola-fit": lambda: _table_with_commit(nola_fit.table, "nola_fit.json"),
    "nola-loss-signals": lambda: _table_with_commit(nola_loss_signals.table, "nola_loss_signals.json"),
    "new-classes-mocoop": _new_classes("mocoop"),
    "open-set": _open_set,
    "pretraining": _pretraining,
    "serving": lambda: serving.table(_read("serving.json")["results"]),
    "speed": _speed,
    "text-encoder": _text_encoder,
    "layers": mermaid,
}


def _without_title(markdown: str) -> str:
    """A script's Markdown without its own top-level title (the page has its headings)."""
    lines = markdown.strip("\n").splitlines()
    while lines and (lines[0].startswith("# ") or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines) + "\n"


def render(page: str) -> str:
    """The page with every generated block rendered from its JSON."""

    def block(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise SystemExit(f"{page}: unknown generated block {name!r}; known: {', '.join(TABLES)}")
        return f"{match[1]}{_without_title(TABLES[name]())}{match[4]}"

    return BLOCK.sub(block, page)


def main(argv: list[str] | None = None) -> int:
    """Renders (or with ``--check`` compares) every generated block; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a page is stale")
    args = parser.parse_args(argv)
    stale = []
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        text = path.read_text()
        rendered = render(text)
        if rendered != text:
            stale.append(path)
            if not args.check:
                path.write_text(rendered)
    index = INDEX_NOTE + (ROOT / "README.md").read_text().replace("](docs/", "](")  # the manual's home page
    if not (DOCS / "index.md").is_file() or (DOCS / "index.md").read_text() != index:
        stale.append(DOCS / "index.md")
        if not args.check:
            (DOCS / "index.md").write_text(index)
    for source, copy in PLOTS.items():
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            stale.append(copy)
            if not args.check:
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copy)
    verb = "stale" if args.check else "rendered"
    print("\n".join(f"{verb}: {path.relative_to(ROOT)}" for path in stale) or "every generated block is current")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
