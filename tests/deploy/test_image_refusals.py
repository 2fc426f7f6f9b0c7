"""Every decoding failure is one file's refusal, at every entry point: a
decoder that raises something other than an OSError, and a tiny JPEG that declares 81 Mpx."""

import io

import pytest
import torch
from PIL import BmpImagePlugin, Image

from promptlab.backbone import PreprocessConfig
from promptlab.cli import main
from promptlab.data import FewShotDataModule
from promptlab.data.images import MAX_IMAGE_PIXELS, ImageLoadError, decode_image_bytes
from promptlab.deploy.classifier import Classifier
from promptlab.export import export_classifier
from promptlab.workspace.project import Workspace
from tests.builders import BUILDERS


def declared_9000_square_jpeg() -> bytes:
    """A 16 x 16 JPEG whose header (SOF0) says 9000 x 9000: under 1 KB, 81 Mpx once decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = (9000).to_bytes(2, "big") * 2
    return bytes(data)


def bmp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (30, 30, 200)).save(buffer, format="BMP")
    return buffer.getvalue()


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (30, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def broken_bmp_decoder(monkeypatch):
    """BMP decoding raises NotImplementedError, as some PIL decoders do for unimplemented variants."""

    def unimplemented(self):
        raise NotImplementedError("unsupported BMP variant")

    monkeypatch.setattr(BmpImagePlugin.BmpImageFile, "load", unimplemented)


@pytest.fixture
def bad_folder(tmp_path, broken_bmp_decoder):
    """A class folder of three good PNGs, the 81-Mpx JPEG and a BMP whose decoder fails."""
    for name in ("red", "green"):
        folder = tmp_path / "images" / name
        folder.mkdir(parents=True)
        for i in range(3):
            (folder / f"{i}.png").write_bytes(png())
    (tmp_path / "images" / "red" / "huge.jpg").write_bytes(declared_9000_square_jpeg())
    (tmp_path / "images" / "red" / "odd.bmp").write_bytes(bmp())
    return tmp_path / "images"


def test_the_pixel_limit_is_checked_before_decoding():
    assert MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS  # below PIL's own bomb limit
    with pytest.raises(ImageLoadError, match=r"'huge.jpg': it declares 9000 x 9000 pixels \(81 Mpx\).*64 Mpx"):
        decode_image_bytes(declared_9000_square_jpeg(), "huge.jpg")


def test_any_decoder_exception_is_an_image_load_error(broken_bmp_decoder):
    with pytest.raises(
        ImageLoadError,
        match=r"'odd.bmp': it is a variant of BMP that promptlab's image library cannot decode \(NotImplementedError",
    ):
        decode_image_bytes(bmp(), "odd.bmp")


def test_app_upload_refuses_each_bad_file_and_keeps_the_rest(tmp_path, broken_bmp_decoder):
    project = Workspace(tmp_path / "workspace").create("pets")
    project.add_class("cat")
    report = project.add_images(
        "cat", [("huge.jpg", declared_9000_square_jpeg()), ("odd.bmp", bmp()), ("ok.png", png())]
    )
    assert len(report.added) == 1 and [name for name, _ in report.rejected] == ["huge.jpg", "odd.bmp"]


def test_python_api_names_the_bad_file(bad_folder):
    model = BUILDERS["CoOp"][0]()
    classifier = Classifier.load(export_classifier(model, bad_folder.parent / "c.safetensors"), device="cpu")
    for name in ("huge.jpg", "odd.bmp"):
        with pytest.raises(ImageLoadError, match=name):
            classifier.predict([bad_folder / "red" / "0.png", bad_folder / "red" / name])


def test_classify_skips_and_names_them_and_writes_the_rest(bad_folder, capsys):
    torch.manual_seed(0)
    classifier = export_classifier(BUILDERS["CoOp"][0](), bad_folder.parent / "c.safetensors")
    output = bad_folder.parent / "out.csv"
    assert main(["classify", "--classifier", str(classifier), str(bad_folder), "-o", str(output)]) == 3
    assert len(output.read_text().splitlines()) == 1 + 6
    err = capsys.readouterr().err
    assert "Skipped 2 unreadable file(s)" in err and "huge.jpg" in err and "odd.bmp" in err


def test_the_folder_loader_skips_them_when_asked(bad_folder):
    data = FewShotDataModule(root=str(bad_folder), shots=0, num_workers=0, test_batch_size=64, skip_bad_images=True)
    data.preprocess = PreprocessConfig(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    samples = data.splits.train + data.splits.val + data.splits.test
    images = sum(batch[0].shape[0] for batch in data._loader(samples, train=False) if batch is not None)
    assert len(samples) == 6 and images == 6  # screened before the split: both classes keep training images
    assert sorted(s.path for s in data.unreadable_images) == ["red/huge.jpg", "red/odd.bmp"]


def test_a_classifier_of_a_local_weights_file_asks_for_it(tmp_path):
    """Exported from ``pretrained: null`` plus a weights file, loaded without
    ``weights_path``: one sentence instead of ``TypeError: 'NoneType' object is not subscriptable``."""
    from safetensors.torch import save_file

    from promptlab.backbone import FrozenCLIP
    from promptlab.deploy.classifier_file import ClassifierFileError
    from promptlab.methods import ZeroShotCLIP

    weights = tmp_path / "clip-tiny.safetensors"
    save_file({k: v.contiguous() for k, v in FrozenCLIP("clip-tiny", None).model.state_dict().items()}, str(weights))
    model = ZeroShotCLIP(class_names=["a", "b"], backbone="clip-tiny", pretrained=None, weights_path=str(weights))
    path = export_classifier(model, tmp_path / "c.safetensors")
    with pytest.raises(ClassifierFileError, match=r"needs the weights file .*; pass weights_path"):
        Classifier.load(path, device="cpu")
    assert Classifier.load(path, weights_path=str(weights), device="cpu").predict_proba(
        torch.zeros(1, 3, 32, 32)
    ).shape == (1, 2)


def test_classify_exit_status_tells_all_some_and_none(bad_folder):
    classifier = str(export_classifier(BUILDERS["CoOp"][0](), bad_folder.parent / "c.safetensors"))
    assert main(["classify", "--classifier", classifier, str(bad_folder / "green")]) == 0
    assert main(["classify", "--classifier", classifier, str(bad_folder / "red")]) == 3
    assert main(["classify", "--classifier", classifier, str(bad_folder / "red" / "odd.bmp")]) == 1


def test_the_app_takes_the_multi_picture_jpegs_cameras_write(tmp_path):
    buffer = io.BytesIO()
    picture = Image.new("RGB", (16, 16), (1, 2, 3))
    picture.save(buffer, format="MPO", save_all=True, append_images=[picture])
    project = Workspace(tmp_path / "workspace").create("pets")
    project.add_class("cat")
    report = project.add_images("cat", [("camera.jpg", buffer.getvalue())])
    assert not report.rejected and report.added[0].endswith(".jpg")
