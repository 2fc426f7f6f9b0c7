"""The ``promptlab`` command: one table of commands.

``fit``, ``validate``, ``test`` and ``predict`` go to LightningCLI (:mod:`promptlab.cli.lightning`);
every other command is a typed function whose parser is built from its signature and docstring
(:mod:`promptlab.cli.signature_parser`). A command's module is imported only when that command runs
or lists its help, and imports its layer inside the function, so ``promptlab --help`` imports neither
torch nor Lightning.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from promptlab.cli.signature_parser import run_command, summary
from promptlab.distribution import FULL_INSTALL, has_full_install, missing_dependency_message
from promptlab.errors import USER_ERRORS

LIGHTNING_COMMANDS = {
    "fit": "Train a method (then test the last epoch): promptlab fit -c CONFIG.yaml [--key value ...]",
    "validate": "Evaluate a checkpoint (or a zero-shot model) on the validation split",
    "test": "Evaluate a checkpoint (or a zero-shot model) on the test split",
    "predict": "Write predictions.csv for --data.predict_files with a checkpoint",
}
COMMANDS = {  # name -> "module:function"
    "export": "promptlab.cli.export:export",
    "classify": "promptlab.cli.classify:classify",
    "serve": "promptlab.cli.serve:serve",
    "backbones": "promptlab.cli.listing:backbones",
    "methods": "promptlab.cli.listing:methods",
    "quickstart": "promptlab.cli.quickstart:quickstart",
    "benchmark": "promptlab.cli.benchmark:benchmark",
    "data list": "promptlab.cli.data:list_datasets",
    "data fetch": "promptlab.cli.data:fetch",
}
ONNX_ONLY_COMMANDS = ("classify",)  # run in the ONNX-only install (onnxruntime, numpy, pillow), on .onnx files


def command(name: str) -> Callable[..., int]:
    """The function of a command in :data:`COMMANDS`."""
    module, _, function = COMMANDS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def print_help() -> None:
    """``promptlab --help``: every command with one line each."""
    lines = ["usage: promptlab COMMAND [options]   (promptlab COMMAND --help for a command's options)", "", "commands:"]
    summaries = {**LIGHTNING_COMMANDS, **{name: summary(command(name)) for name in COMMANDS}}
    full = has_full_install()
    for name, text in summaries.items():
        needs = "" if full or name in ONNX_ONLY_COMMANDS else "   [needs the full install]"
        lines.append(f"  {name:<12} {text}{needs}")
    lines += [
        "",
        "Configs shipped with promptlab are found by their name, e.g. -c configs/toy/coop.yaml, from any folder.",
    ]
    if not full:
        lines += [
            "",
            "This is the ONNX-only install (no torch): `promptlab classify --classifier FILE.onnx ...` runs here;",
            f"the other commands need the full install: {FULL_INSTALL}.",
        ]
    print("\n".join(lines))


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``promptlab`` console script and ``python -m promptlab``.

    Args:
        args: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 for a usage or input error, or the command's own.
    """
    args = list(sys.argv[1:] if args is None else args)
    sys.argv[0] = "promptlab"  # LightningCLI's usage lines name the program after it (python -m promptlab too)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("promptlab").setLevel(logging.INFO)
    name = args[0] if args else "--help"
    if len(args) > 1 and f"{name} {args[1]}" in COMMANDS:  # a command of two words: `data fetch`
        name = f"{name} {args.pop(1)}"
    group = [command for command in COMMANDS if command.startswith(f"{name} ")]
    if group:  # `promptlab data` (or `data --help`): the group's commands
        print("\n".join(f"  {sub:<12} {summary(command(sub))}" for sub in group))
        return 0
    if name not in COMMANDS and name not in LIGHTNING_COMMANDS and not name.startswith("-") and name != "help":
        print(f"error: unknown command {name!r}; run `promptlab --help` for the list.", file=sys.stderr)
        return 2
    try:
        if name in ("-h", "--help", "help"):
            print_help()
            return 0
        if name in COMMANDS:
            return run_command(command(name), args[1:], prog=f"promptlab {name}")
        from promptlab.cli.lightning import run_lightning  # Lightning only for its own commands

        run_lightning(args)
    except BrokenPipeError:  # `promptlab classify ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ModuleNotFoundError as error:
        message = missing_dependency_message(error, f"promptlab {name}")
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception as error:
        # jsonargparse wraps an error raised while it builds the model or data into its own ValueError
        # (with an 80-line traceback); the user's error is in the chain of causes.
        user_error = user_error_in(error)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        return 2
    return 0


def user_error_in(error: BaseException) -> BaseException | None:
    """The first user error among ``error`` and its causes and contexts, or None."""
    seen: set[int] = set()
    pending: list[Any] = [error]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, USER_ERRORS):
            return current
        pending += [current.__cause__, current.__context__]
    return None
