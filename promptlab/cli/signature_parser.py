"""An argparse parser built from a command function's signature and its Google-style docstring.

The signature is the interface: parameters before ``*`` are positional arguments, keyword-only ones
are ``--options`` (required when they have no default), ``*rest`` collects options the command passes
on (e.g. ``--model.init_args.x`` to LightningCLI). Types map to argparse as ``int``/``float``/``str``
values, ``bool`` flags, ``Literal`` choices and ``list[...]`` one-or-more values. The first docstring
paragraph is the description, its ``Args:`` entries the help, and a ``Returns:`` or ``Exit status:``
section the epilog.
"""

from __future__ import annotations

import argparse
import inspect
import re
import types
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

SHORT_OPTIONS = {"output": "-o", "config": "-c"}  # the same short option in every command


def summary(function: Callable[..., Any]) -> str:
    """The first line of a function's docstring."""
    return (inspect.getdoc(function) or "").splitlines()[0] if function.__doc__ else ""


def docstring_sections(function: Callable[..., Any]) -> tuple[str, dict[str, str], str]:
    """(description, {argument: help}, epilog) from a Google-style docstring."""
    doc = inspect.getdoc(function) or ""
    description, _, sections = doc.partition("\n\n")
    arguments: dict[str, str] = {}
    epilog: list[str] = []
    current: str | None = None
    section = ""
    for line in sections.splitlines():
        header = re.fullmatch(r"(\w[\w ]*):", line.strip())
        if header and not line.startswith(" "):
            section = header.group(1)
            continue
        if section == "Args":
            entry = re.match(r"\s{4}(\*{0,2}\w+)(?: \([^)]*\))?: (.*)", line)
            if entry:
                current = entry.group(1).lstrip("*")
                arguments[current] = entry.group(2)
            elif current and line.strip():
                arguments[current] += " " + line.strip()
        elif section and line.strip():
            epilog.append(line.strip())
    return description.replace("\n", " "), arguments, " ".join(epilog)


def _optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _argument_options(annotation: Any) -> dict[str, Any]:
    """Argparse keywords for a parameter's type."""
    annotation = _optional(annotation)
    if annotation is bool:
        return {"action": "store_true"}
    if get_origin(annotation) is Literal:
        return {"choices": list(get_args(annotation)), "type": type(get_args(annotation)[0])}
    if get_origin(annotation) is list:
        (item,) = get_args(annotation) or (str,)
        return {"nargs": "+", "type": item}
    if annotation in (int, float, str):
        return {"type": annotation}
    raise TypeError(f"Command parameters take int, float, str, bool, Literal or lists, not {annotation!r}.")


def build_parser(function: Callable[..., Any], prog: str) -> argparse.ArgumentParser:
    """The parser of ``function``'s command line (see the module docstring)."""
    description, helps, epilog = docstring_sections(function)
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog or None, allow_abbrev=False)
    hints = get_type_hints(function)
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue  # passed on: parse_known_args leaves them
        options = _argument_options(hints[name])
        help_text = helps.get(name, "")
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            flags = [f"--{name}", *([SHORT_OPTIONS[name]] if name in SHORT_OPTIONS else [])]
            if options.get("nargs") == "+":
                options["action"] = "extend"  # -c a.yaml -c b.yaml as well as --classes a b
            required = parameter.default is inspect.Parameter.empty
            default = None if required else parameter.default
            if default not in (None, False):
                help_text += f" (default: {default})"
            parser.add_argument(*flags, dest=name, required=required, default=default, help=help_text, **options)
        else:
            parser.add_argument(name, help=help_text, **options)
    return parser


def run_command(function: Callable[..., Any], argv: list[str], prog: str) -> Any:
    """Parses ``argv`` for ``function`` and calls it."""
    parser = build_parser(function, prog)
    kinds = {name: p.kind for name, p in inspect.signature(function).parameters.items()}
    if inspect.Parameter.VAR_POSITIONAL in kinds.values():
        arguments, rest = parser.parse_known_args(argv)
    else:
        arguments, rest = parser.parse_args(argv), []
    values = vars(arguments)
    positional = [values.pop(name) for name, kind in kinds.items() if kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    return function(*positional, *rest, **values)
