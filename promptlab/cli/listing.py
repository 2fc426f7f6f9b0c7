"""``promptlab backbones`` and ``promptlab methods``: what can be loaded and trained."""

from __future__ import annotations


def backbones() -> int:
    """List the backbone architectures promptlab can load (besides local-dir:/path and hf-hub:org/repo)."""
    # Imported here, not at the top, so that `promptlab --help` does not import open_clip.
    from promptlab.backbone import list_backbones

    print("\n".join(list_backbones()))
    return 0


def methods() -> int:
    """List the registered methods: key, class, what each learns from."""
    # Imported here, not at the top, so that `promptlab --help` does not import Lightning.
    from promptlab.methods import registered_methods

    for key, cls in registered_methods().items():
        print(f"{key:<16} {cls.__module__}.{cls.__qualname__:<14} learns from {cls.learns_from}: {cls.about}")
    return 0
