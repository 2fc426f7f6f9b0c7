"""Concurrent changes to one project: the same image uploaded to two classes at
the same moment is stored once, never in both; one file uploaded twice at once is added once; with
threads and with separate processes."""

import io
import multiprocessing
import threading

from PIL import Image

from promptlab.workspace.project import Project, Workspace


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, seed // 256 % 256, 7)).save(buffer, format="PNG")
    return buffer.getvalue()


def _project(tmp_path) -> Project:
    project = Workspace(tmp_path).create("pets")
    project.add_class("cat")
    project.add_class("dog")
    return project


def _upload(path, class_name: str, data: bytes, start, results) -> None:
    start.wait()
    report = Project(path).add_images(class_name, [("same.png", data)])  # its own Project, as another tab
    results.append((class_name, len(report.added), len(report.duplicates), len(report.rejected)))


def _check(project: Project, trials: int, results: list) -> None:
    stored = {image.stem for name in ("cat", "dog") for image in project.images(name)}
    assert len(stored) == trials  # every image stored exactly once ...
    assert sum(len(project.images(name)) for name in ("cat", "dog")) == trials  # ... in one class only
    assert sum(added for _, added, _, _ in results) == trials  # and reported "added" once


def test_threads_store_one_image_in_one_class_only(tmp_path):
    project, trials, results = _project(tmp_path), 30, []
    for trial in range(trials):
        start = threading.Barrier(3)
        threads = [
            threading.Thread(target=_upload, args=(project.path, name, png(trial), start, results))
            for name in ("cat", "dog", "cat")  # two classes, and the same class twice
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    _check(project, trials, results)


def test_processes_store_one_image_in_one_class_only(tmp_path):
    project, trials = _project(tmp_path), 10
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        results = manager.list()
        for trial in range(trials):
            start = manager.Barrier(2)
            processes = [
                context.Process(target=_upload, args=(project.path, name, png(1000 + trial), start, results))
                for name in ("cat", "dog")
            ]
            for process in processes:
                process.start()
            for process in processes:
                process.join(timeout=60)
                assert process.exitcode == 0
        _check(project, trials, list(results))
