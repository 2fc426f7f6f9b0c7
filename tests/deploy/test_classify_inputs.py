"""What `promptlab classify` reads besides files and folders (CSV and Parquet lists of paths, URIs over
fsspec) and what it writes besides CSV and JSON (Parquet): the same predictions, row for row, and the
same per-file refusals."""

import csv

import pytest

from promptlab.cli import main
from promptlab.data.path_lists import read_path_list
from promptlab.export import export_classifier
from tests.builders import BUILDERS
from tests.data.fake_hosts import FakeHost

pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")


@pytest.fixture
def classifier(tmp_path):
    return export_classifier(BUILDERS["CoOp"][0]().eval(), tmp_path / "c.onnx")


def classify_rows(args: list[str], output, expected_status: int = 0) -> list[list[str]]:
    assert main(["classify", *args, "-o", str(output), "--no_progress"]) == expected_status
    with open(output, newline="") as file:
        return list(csv.reader(file))


def test_csv_and_parquet_lists_give_the_folders_rows(classifier, image_folder, tmp_path, capsys):
    images = sorted(str(p) for p in image_folder.rglob("*.png"))
    by_folder = classify_rows(["--classifier", str(classifier), str(image_folder)], tmp_path / "folder.csv")

    relative = [str(p.relative_to(image_folder)) for p in sorted(image_folder.rglob("*.png"))]
    csv_list = image_folder / "list.csv"  # relative to the list's folder, a header named "Path", extra column
    csv_list.write_text("id,Path\n" + "".join(f"{i},{p}\n" for i, p in enumerate(relative)))
    by_csv = classify_rows(["--classifier", str(classifier), str(csv_list)], tmp_path / "csv.csv")

    bare_list = tmp_path / "bare.csv"  # one column, no header
    bare_list.write_text("\n".join(images) + "\n")
    by_bare = classify_rows(["--classifier", str(classifier), str(bare_list)], tmp_path / "bare_out.csv")

    parquet_list = tmp_path / "list.parquet"
    pq.write_table(pa.table({"uri": [f"file://{p}" for p in images], "n": list(range(len(images)))}), parquet_list)
    by_parquet = classify_rows(["--classifier", str(classifier), str(parquet_list)], tmp_path / "pq.csv")

    assert len(by_folder) == 31
    assert by_csv == by_folder and by_bare == by_folder
    assert [row[0] for row in by_parquet[1:]] == [f"file://{p}" for p in images]
    assert [row[1:] for row in by_parquet] == [row[1:] for row in by_folder]


def test_a_missing_or_broken_listed_image_is_that_rows_refusal(classifier, image_folder, tmp_path, capsys):
    (image_folder / "red_square" / "0.png").write_bytes(b"not a picture")
    listed = tmp_path / "list.csv"
    entries = [image_folder / "red_square" / "0.png", "", tmp_path / "gone.png", image_folder / "red_square" / "1.png"]
    listed.write_text("path\n" + "".join(f"{entry}\n" for entry in entries))
    rows = classify_rows(["--classifier", str(classifier), str(listed)], tmp_path / "out.csv", expected_status=3)
    assert len(rows) == 2 and rows[1][0].endswith("1.png")
    err = capsys.readouterr().err
    assert "Skipped 2 unreadable file(s)" in err and "gone.png' not found" in err and "0.png" in err


def test_a_list_without_a_path_column_is_refused_in_one_sentence(tmp_path):
    listed = tmp_path / "list.csv"
    listed.write_text("a,b\n1,2\n")
    with pytest.raises(Exception, match=r"has columns \['a', 'b'\] and none is named path, uri, image, file"):
        read_path_list(listed)


def test_http_uris_are_read_through_fsspec(classifier, image_folder, tmp_path, capsys):
    pytest.importorskip("aiohttp")  # fsspec's HTTP filesystem
    images = sorted(image_folder.rglob("*.png"))[:4]
    host = FakeHost({f"/img/{i}.png": p.read_bytes() for i, p in enumerate(images)})
    try:
        uris = [f"{host.url}/img/{i}.png" for i in range(4)] + [f"{host.url}/img/missing.png"]
        by_uri = classify_rows(["--classifier", str(classifier), *uris], tmp_path / "uri.csv", expected_status=3)
    finally:
        host.close()
    by_path = classify_rows(["--classifier", str(classifier), *map(str, images)], tmp_path / "path.csv")
    assert [row[1:] for row in by_uri] == [row[1:] for row in by_path]
    assert "missing.png' not found or unreachable" in capsys.readouterr().err


def test_parquet_output_has_typed_columns_and_the_csvs_values(classifier, image_folder, tmp_path):
    rows = classify_rows(["--classifier", str(classifier), str(image_folder)], tmp_path / "out.csv")
    assert (
        main(["classify", "--classifier", str(classifier), str(image_folder), "-o", str(tmp_path / "out.parquet")]) == 0
    )
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == rows[0]
    assert str(table.schema.field("probability").type) == "double"
    parquet_rows = table.to_pylist()
    assert [r["path"] for r in parquet_rows] == [row[0] for row in rows[1:]]
    assert [r["label"] for r in parquet_rows] == [row[1] for row in rows[1:]]
    assert max(abs(r["probability"] - float(row[2])) for r, row in zip(parquet_rows, rows[1:], strict=True)) < 1e-6
    assert parquet_rows[0]["top_k"][0]["label"] == parquet_rows[0]["label"]
    assert not list(tmp_path.glob(".*partial"))


def test_an_output_of_another_kind_is_refused_before_any_work(classifier, image_folder, tmp_path, capsys):
    assert main(["classify", "--classifier", str(classifier), str(image_folder), "-o", str(tmp_path / "out.txt")]) == 2
    assert "name a .csv, .json, .parquet file" in capsys.readouterr().err
