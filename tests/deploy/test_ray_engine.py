"""``promptlab classify --engine ray``: Ray Data's actor pool gives the local path's output row for row,
with the same refusals, and without Ray says how to install it."""

import builtins

import pytest

from promptlab.cli import main
from promptlab.export import export_classifier
from tests.builders import BUILDERS

pytest.importorskip("ray.data")


@pytest.mark.parametrize("suffix", [".safetensors", ".onnx"])
def test_ray_rows_equal_the_local_rows(ray_cluster, image_folder, tmp_path, suffix, capsys):
    classifier = export_classifier(BUILDERS["CoOp"][0]().eval(), tmp_path / f"c{suffix}")
    (image_folder / "red_square" / "broken.png").write_bytes(b"not a picture")
    outputs = {}
    for engine in ("local", "ray"):
        outputs[engine] = tmp_path / f"{engine}.csv"
        args = ["classify", "--classifier", str(classifier), str(image_folder), "-o", str(outputs[engine])]
        assert main([*args, "--engine", engine, "--batch_size", "7", "--no_progress"]) == 3  # one file skipped
        assert "broken.png" in capsys.readouterr().err
    local, ray_rows = (outputs[e].read_text().splitlines() for e in ("local", "ray"))
    assert len(local) == 31 and local == ray_rows  # header + 30 images, identical rows in input order


def test_without_ray_the_engine_says_how_to_install_it(image_folder, tmp_path, monkeypatch, capsys):
    classifier = export_classifier(BUILDERS["CoOp"][0]().eval(), tmp_path / "c.onnx")
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name.startswith("ray"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["classify", "--classifier", str(classifier), str(image_folder), "--engine", "ray"]) == 2
    assert "--engine ray needs Ray Data: install it with pip install 'promptlab-clip[ray]'." in capsys.readouterr().err


def test_ray_reads_a_parquet_list_and_writes_parquet_like_the_local_path(ray_cluster, image_folder, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow

    classifier = export_classifier(BUILDERS["CoOp"][0]().eval(), tmp_path / "c.onnx")
    listed = tmp_path / "list.parquet"
    pq.write_table(pyarrow.table({"path": sorted(str(p) for p in image_folder.rglob("*.png"))}), listed)
    tables = {}
    for engine in ("local", "ray"):
        output = tmp_path / f"{engine}.parquet"
        args = ["classify", "--classifier", str(classifier), str(listed), "-o", str(output), "--engine", engine]
        assert main([*args, "--batch_size", "7", "--no_progress"]) == 0
        tables[engine] = pq.read_table(output).to_pylist()
    assert len(tables["local"]) == 30 and tables["local"] == tables["ray"]
