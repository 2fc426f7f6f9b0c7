"""``promptlab data list`` and ``promptlab data fetch``: the standard datasets on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_ROOT = "data"


def list_datasets(*, root: str = DEFAULT_ROOT, checksums: bool = False) -> int:
    """List the standard datasets: size, source, licence, and whether each is on disk and verified.

    Args:
        root: the data root (--data.root) to look in.
        checksums: also print each file's URL, pinned checksum and where that checksum comes from.
    """
    from promptlab.data.fetching.fetch import dataset_folder, fetched_manifest
    from promptlab.data.fetching.remote import DATASET_SOURCES

    rows = [("dataset", "size", "source", "on disk", "licence")]
    for name, source in DATASET_SOURCES.items():
        file = source.files[0] if source.files else None
        host = (
            "you (its licence)"
            if file is None
            else f"hub: {file.repo}"
            if file.host == "hub"
            else file.url.split("/")[2]
        )
        if fetched_manifest(name, Path(root)) is not None:
            state = "fetched, verified"
        elif dataset_folder(name, Path(root)).exists():
            state = "present, not fetched"
        else:
            state = "-"
        rows.append((name, source.size, host, state, source.licence))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
    if checksums:
        for name, source in DATASET_SOURCES.items():
            for file in source.files:
                revision = "" if file.host == "url" else f" at {file.revision}"
                print(f"\n{name}: {file.url}\n  {file.checksum}{revision}\n  from {file.origin}")
    print(f"\nRoot: {Path(root).resolve()}. Fetch with: promptlab data fetch NAME... --root {root}")
    return 0


def fetch(
    names: list[str],
    *,
    root: str = DEFAULT_ROOT,
    imagenet_dir: str | None = None,
    dvc: bool = False,
    keep_archives: bool = False,
) -> int:
    """Download standard datasets, verify every file, and lay each out as --data.dataset NAME reads it.

    Args:
        names: datasets to fetch (`promptlab data list` names them; `all` for every one but ImageNet).
        root: the data root to fetch into (pass the same as --data.root).
        imagenet_dir: for imagenet, the folder holding your downloaded train/ and val/ (linked, not copied).
        dvc: track each fetched dataset with DVC, so that runs record its version.
        keep_archives: keep the downloaded archives in ROOT/.downloads/ after extracting them.

    Exit status:
        0 when every dataset is on disk and verified, 2 when one could not be fetched (the others are kept).
    """
    from promptlab.data.fetching.fetch import fetch_dataset, track_with_dvc
    from promptlab.data.fetching.remote import DATASET_SOURCES
    from promptlab.errors import UserError

    if names == ["all"]:
        names = [name for name, source in DATASET_SOURCES.items() if source.files]
    failed = 0
    for name in names:
        print(f"{name}:")
        try:
            folder, fetched = fetch_dataset(
                name,
                Path(root),
                say=print,
                imagenet_dir=Path(imagenet_dir) if imagenet_dir else None,
                keep_archives=keep_archives,
            )
            print(f"  {'fetched and verified' if fetched else 'already fetched and verified, nothing to do'}: {folder}")
            if dvc and name == "imagenet":  # a link to the user's copy: DVC would copy all of it into its cache
                print("  not tracked with DVC: ImageNet is linked to your copy, not fetched")
            elif dvc:
                print(f"  tracked with DVC: {track_with_dvc(folder)}")
        except UserError as error:
            print(f"  error: {error}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0
