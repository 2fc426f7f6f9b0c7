"""`promptlab data fetch` against loopback hosts serving small archives in each real layout: fetch,
verify, resume, refuse corrupted files and unsafe entries, do nothing the second time, name the URL
and the manual route offline, then train on what was fetched."""

import dataclasses
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import huggingface_hub.constants
import pytest

from promptlab.cli import main
from promptlab.data.catalog import STANDARD_DATASETS
from promptlab.data.dataset_error import DatasetError
from promptlab.data.fetching import remote
from promptlab.data.fetching.archives import UnsafeArchiveError, extract_archive
from promptlab.data.fetching.fetch import DOWNLOADS, MANIFEST, FetchError, fetch_dataset, fetched_manifest
from promptlab.data.sources import read_standard_dataset
from promptlab.data.versioning import dvc_data_version
from tests.data.fake_hosts import COMMIT, FakeHost
from tests.data.standard_layouts import archive_as_published, write_standard_dataset

MIRROR = f"/{remote.MIRROR_REPO}/resolve/{COMMIT}"


def published(name: str, tmp_path: Path, extra: dict[str, bytes] | None = None) -> bytes:
    return archive_as_published(name, write_standard_dataset(name, tmp_path / "original"), tmp_path, extra)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A loopback hub serving the mirror's caltech-101.zip (with a few-shot pickle, as the mirror's do)."""
    host = FakeHost({f"{MIRROR}/caltech-101.zip": published("caltech101", tmp_path)})
    monkeypatch.setenv("HF_ENDPOINT", host.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield host
    host.close()


def test_fetch_verifies_and_lays_out_the_dataset_as_the_reader_reads_it(hub, tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["data", "fetch", "caltech101", "--root", str(root)]) == 0
    assert "fetched and verified" in capsys.readouterr().out
    data = read_standard_dataset("caltech101", root)
    assert data.class_names == ["class_a", "class_b", "class_c"] and len(data.train) == 6 and len(data.test) == 3
    manifest = json.loads((root / "caltech-101" / MANIFEST).read_text())
    served = hub.files[f"{MIRROR}/caltech-101.zip"]
    assert manifest["files"][0]["checksum"] == f"sha256:{hashlib.sha256(served).hexdigest()}"
    assert manifest["files"][0]["revision"] == COMMIT
    assert not list(root.rglob("*.pkl")), "the mirror's pickled few-shot caches are not extracted"
    assert not (root / DOWNLOADS / "caltech101").exists() and not (root / ".partial" / "caltech101").exists()
    main(["data", "list", "--root", str(root)])
    assert any(
        line.startswith("caltech101") and "fetched, verified" in line for line in capsys.readouterr().out.splitlines()
    )


def test_second_fetch_does_nothing_and_says_so(hub, tmp_path, capsys):
    root = tmp_path / "data"
    fetch_dataset("caltech101", root, say=lambda _: None)
    requests = len(hub.requests)
    assert main(["data", "fetch", "caltech101", "--root", str(root)]) == 0
    assert "already fetched and verified, nothing to do" in capsys.readouterr().out
    assert len(hub.requests) == requests


def test_an_interrupted_download_leaves_nothing_and_resumes_on_the_next_call(hub, tmp_path, monkeypatch):
    root, path = tmp_path / "data", f"{MIRROR}/caltech-101.zip"
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 256)  # the real 10 MB: files of GBs
    hub.behaviour.cut_after, hub.behaviour.fail_after_cut = 1000, True  # cut mid-file, then the host fails
    with pytest.raises(FetchError, match=r"Could not download http.*caltech-101.zip .*by hand from https://data"):
        fetch_dataset("caltech101", root, say=lambda _: None)
    assert not (root / "caltech-101").exists() and not (root / ".partial" / "caltech101").exists()
    hub.behaviour.fail_status = None
    folder, fetched = fetch_dataset("caltech101", root, say=lambda _: None)
    assert fetched and (folder / MANIFEST).is_file()
    ranges = hub.gets(path)
    assert ranges[0] is None and ranges[-1] in ("bytes=768-", "bytes=1000-"), ranges  # resumed where it stopped


def test_a_corrupted_download_is_refused_deleted_and_nothing_extracted(hub, tmp_path):
    root, path = tmp_path / "data", f"{MIRROR}/caltech-101.zip"
    hub.behaviour.published_sha256[path] = "0" * 64
    with pytest.raises(FetchError, match=r"caltech-101.zip from .* does not match its pinned checksum .*deleted"):
        fetch_dataset("caltech101", root, say=lambda _: None)
    assert not (root / "caltech-101").exists()
    assert not list((root / DOWNLOADS).rglob("caltech-101.zip"))


def test_a_pinned_size_the_host_does_not_serve_is_refused_before_downloading(hub, tmp_path):
    hub.files[f"{MIRROR}/ucf101.zip"] = published("ucf101", tmp_path)  # not the pinned 140,164,538 bytes
    with pytest.raises(FetchError, match=r"ucf101.zip is [\d,]+ bytes, not the pinned 140,164,538"):
        fetch_dataset("ucf101", tmp_path / "data", say=lambda _: None)
    assert hub.gets(f"{MIRROR}/ucf101.zip") == []


def test_an_archive_entry_leaving_its_folder_is_refused_and_nothing_written(hub, tmp_path):
    root = tmp_path / "data"
    hub.files[f"{MIRROR}/caltech-101.zip"] = published("caltech101", tmp_path, {"caltech-101/../../escaped.txt": b"x"})
    with pytest.raises(UnsafeArchiveError, match=r"entry 'caltech-101/\.\./\.\./escaped.txt' that points outside"):
        fetch_dataset("caltech101", root, say=lambda _: None)
    assert not list(tmp_path.rglob("escaped.txt")) and not (root / "caltech-101").exists()


def _tar_with(member: tarfile.TarInfo, content: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(member, io.BytesIO(content) if content else None)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "absolute", "device"])
def test_tar_links_devices_and_absolute_paths_are_refused(tmp_path, kind):
    member = tarfile.TarInfo("/etc/passwd" if kind == "absolute" else "images/x.jpg")
    if kind == "symlink":
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        member.type, member.linkname = tarfile.LNKTYPE, "images/y.jpg"
    elif kind == "device":
        member.type = tarfile.CHRTYPE
    archive = tmp_path / "a.tar"
    archive.write_bytes(_tar_with(member))
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_zip_symlinks_and_bombs_are_refused(tmp_path):
    link = zipfile.ZipInfo("images/link.jpg")
    link.external_attr = (0o120777 << 16) | 0
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(link, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="a link or special file"):
        extract_archive(archive, tmp_path / "out")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("images/zeros.jpg", b"\0" * 50_000_000)
    with pytest.raises(UnsafeArchiveError, match="compressed beyond any image's ratio"):
        extract_archive(bomb, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_offline_the_error_names_the_url_and_the_manual_route(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["data", "fetch", "dtd", "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "Could not download https://huggingface.co/zhengli97/prompt_learning_dataset/resolve/" in error
    assert "dtd.zip" in error and "by hand from https://www.robots.ox.ac.uk/~vgg/data/dtd/" in error
    assert error.count("\n") == 1 and not (tmp_path / "dtd").exists()


def test_a_host_that_is_gone_names_the_url_and_the_manual_route(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    source = remote.DATASET_SOURCES["imagenet_a"]
    gone = dataclasses.replace(source.files[0], repo="http://127.0.0.1:9/imagenet-a.tar")
    monkeypatch.setitem(remote.DATASET_SOURCES, "imagenet_a", dataclasses.replace(source, files=(gone,)))
    with pytest.raises(FetchError, match=r"Could not download http://127.0.0.1:9/imagenet-a.tar .*natural-adv"):
        fetch_dataset("imagenet_a", tmp_path, say=lambda _: None)


def test_a_plain_url_host_with_a_pinned_md5(tmp_path, monkeypatch):
    """ImageNet-A from its authors' host: the tar's folder goes under imagenet-adversarial/ with
    ImageNet's classnames.txt, and reads as the 200-class subset (3 of them here)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    archive = published("imagenet_a", tmp_path)
    host = FakeHost({"/imagenet-a.tar": archive})
    source = remote.DATASET_SOURCES["imagenet_a"]
    served = dataclasses.replace(
        source.files[0], repo=f"{host.url}/imagenet-a.tar", md5=hashlib.md5(archive).hexdigest()
    )
    monkeypatch.setitem(remote.DATASET_SOURCES, "imagenet_a", dataclasses.replace(source, files=(served,)))
    try:
        folder, _ = fetch_dataset("imagenet_a", tmp_path / "data", say=lambda _: None)
    finally:
        host.close()
    assert folder == tmp_path / "data" / "imagenet-adversarial" and (folder / "classnames.txt").is_file()
    data = read_standard_dataset("imagenet_a", tmp_path / "data")
    assert data.class_names == ["stingray", "goldfinch", "junco"] and len(data.test) == 3


def test_imagenet_says_where_to_get_it_then_links_the_users_folder(tmp_path):
    with pytest.raises(FetchError, match=r"licence does not allow .* --imagenet_dir FOLDER"):
        fetch_dataset("imagenet", tmp_path / "data", say=lambda _: None)
    download = tmp_path / "ILSVRC"
    from promptlab.data.fetching.imagenet_classes import imagenet_wnids

    for split in ("train", "val"):
        for wnid in imagenet_wnids()[:-1]:
            (download / split / wnid).mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"lacks 1 of the 1,000 class folders \(e\.g\. n15075141\)"):
        fetch_dataset("imagenet", tmp_path / "data", imagenet_dir=download, say=lambda _: None)
    for split in ("train", "val"):
        (download / split / "n15075141").mkdir()
    folder, _ = fetch_dataset("imagenet", tmp_path / "data", imagenet_dir=download, say=lambda _: None)
    lines = (folder / "classnames.txt").read_text().splitlines()
    assert len(lines) == 1000 and lines[0] == "n01440764 tench" and (folder / "images").resolve() == download
    assert fetched_manifest("imagenet", tmp_path / "data") is not None


def test_a_folder_promptlab_did_not_fetch_is_left_alone(hub, tmp_path):
    write_standard_dataset("caltech101", tmp_path / "data")
    with pytest.raises(DatasetError, match=r"exists but was not fetched by promptlab .*use it as it is"):
        fetch_dataset("caltech101", tmp_path / "data", say=lambda _: None)


def test_fetched_dataset_trains_and_is_tracked_with_dvc(hub, tmp_path, capsys):
    from promptlab.cli.lightning import lightning_cli
    from promptlab.configs import shipped_config

    root = tmp_path / "data"
    assert main(["data", "fetch", "caltech101", "--root", str(root), "--dvc"]) == 0
    assert "tracked with DVC: dvc:" in capsys.readouterr().out
    assert dvc_data_version(root / STANDARD_DATASETS["caltech101"].folder).startswith("dvc:")
    runs = tmp_path / "runs"
    lightning_cli(
        [
            "fit",
            "-c",
            str(shipped_config("tiny/coop.yaml")),
            "--data.dataset=caltech101",
            f"--data.root={root}",
            "--data.shots=2",
            "--trainer.max_epochs=1",
            f"--trainer.logger.init_args.save_dir={runs}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    (metrics,) = runs.rglob("test_metrics.json")
    assert 0.0 <= json.loads(metrics.read_text())["accuracy"] <= 1.0


def test_a_disk_too_small_is_refused_before_downloading(hub, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**6, 10**6 - 100, 100))
    with pytest.raises(FetchError, match=r"caltech-101.zip needs about 0.0 GB free under .* and 0.0 GB are"):
        fetch_dataset("caltech101", tmp_path / "data", say=lambda _: None)
    assert hub.gets(f"{MIRROR}/caltech-101.zip") == []


def test_imagenet_keeps_a_users_classnames_and_is_not_copied_into_dvc(tmp_path, capsys):
    from promptlab.data.fetching.imagenet_classes import imagenet_wnids

    folder = tmp_path / "data" / "imagenet"
    for split in ("train", "val"):
        for wnid in imagenet_wnids():
            (folder / "images" / split / wnid).mkdir(parents=True)
    (folder / "classnames.txt").write_text("mine\n")
    assert main(["data", "fetch", "imagenet", "--root", str(tmp_path / "data"), "--dvc"]) == 0
    out = capsys.readouterr().out
    assert "kept the classnames.txt" in out and "not tracked with DVC" in out
    assert (folder / "classnames.txt").read_text() == "mine\n" and not (tmp_path / "data" / ".dvc").exists()
