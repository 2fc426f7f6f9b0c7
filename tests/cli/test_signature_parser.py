"""A command's parser comes from its signature and docstring: positional lists, options, flags, choices."""

from typing import Literal

import pytest

from promptlab.cli.signature_parser import build_parser, run_command


def command(
    *rest: str,
    images: list[str] | None = None,
    output: str | None = None,
    top_k: int = 3,
    mode: Literal["fast", "exact"] = "fast",
    quiet: bool = False,
) -> dict:
    """Do a thing with images.

    Args:
        *rest: options passed on.
        images: the images.
        output: where to write.
        top_k: how many.
        mode: how.
        quiet: say nothing.

    Exit status:
        0 done.
    """
    return {"rest": rest, "images": images, "output": output, "top_k": top_k, "mode": mode, "quiet": quiet}


def positional(paths: list[str], *, classifier: str) -> tuple[list[str], str]:
    """Take paths.

    Args:
        paths: files or folders.
        classifier: the file.
    """
    return paths, classifier


def test_options_take_their_types_defaults_and_short_names():
    got = run_command(command, ["--images", "a", "b", "--images", "c", "-o", "x.csv", "--top_k", "5", "--quiet"], "p")
    assert got == {"rest": (), "images": ["a", "b", "c"], "output": "x.csv", "top_k": 5, "mode": "fast", "quiet": True}


def test_unknown_options_are_passed_on_only_to_a_command_that_takes_them(capsys):
    got = run_command(command, ["--data.root", "x", "--mode", "exact"], "p")
    assert got["rest"] == ("--data.root", "x") and got["mode"] == "exact"
    with pytest.raises(SystemExit):
        run_command(positional, ["a", "--classifier", "c", "--data.root", "x"], "p")
    assert "unrecognized arguments: --data.root x" in capsys.readouterr().err


def test_positional_lists_and_required_options():
    assert run_command(positional, ["a", "b", "--classifier", "c"], "p") == (["a", "b"], "c")
    with pytest.raises(SystemExit):
        run_command(positional, ["a"], "p")


def test_help_comes_from_the_docstring():
    text = build_parser(command, "promptlab thing").format_help()
    assert "Do a thing with images." in text and "how many. (default: 3)" in text
    assert "{fast,exact}" in text and "Exit status" not in text and "0 done." in text


def test_choices_are_checked(capsys):
    with pytest.raises(SystemExit):
        run_command(command, ["--mode", "slow"], "p")
    assert "invalid choice: 'slow'" in capsys.readouterr().err
