"""Class descriptions for NoLA's stage 1: a JSON object of sentences per class, checked against the classes."""

from __future__ import annotations

import json
from pathlib import Path

from promptlab.data.sources import normalise_class_name
from promptlab.errors import UserError


class DescriptionsError(UserError):
    """A descriptions file that is unreadable or does not describe the dataset's classes."""


def load_descriptions(path: str | Path, class_names: list[str]) -> list[list[str]]:
    """Sentences per class, in class order, from a JSON object {class name: [sentence, ...]}.

    Raises:
        DescriptionsError: unreadable file, or classes missing from it or unknown to the dataset.
    """
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DescriptionsError(
            f"Cannot read descriptions file {str(path)!r} ({error}); give a JSON object."
        ) from error
    if not isinstance(content, dict) or not all(isinstance(v, list) for v in content.values()):
        raise DescriptionsError(f"Descriptions file {str(path)!r} must map each class name to a list of sentences.")
    key = lambda name: normalise_class_name(name).lower()  # noqa: E731
    by_key = {key(name): sentences for name, sentences in content.items()}
    missing = [n for n in class_names if key(n) not in by_key]
    unknown = sorted(set(by_key) - {key(n) for n in class_names})
    if missing or unknown:
        raise DescriptionsError(
            f"Descriptions file {str(path)!r} does not match the dataset's classes"
            + (f"; missing: {', '.join(missing[:5])}" if missing else "")
            + (f"; unknown: {', '.join(unknown[:5])}" if unknown else "")
            + ". Describe exactly the dataset's classes."
        )
    return [[str(s) for s in by_key[key(n)]] for n in class_names]
