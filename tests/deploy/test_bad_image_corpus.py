"""The generated corpus of bad image files through all four entry points: the app's
upload, the Python API, `promptlab classify` and the folder loader. Each file is accepted or
refused with one sentence naming it; no raw exception, no hang, the same verdict everywhere, and
no decoder chatter on the terminal."""

import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import BmpImagePlugin

from promptlab.backbone import PreprocessConfig
from promptlab.cli import main
from promptlab.data import FewShotDataModule
from promptlab.data.images import IMAGE_EXTENSIONS, ImageLoadError, decode_image_bytes
from promptlab.deploy.classifier import Classifier
from promptlab.export import export_classifier
from promptlab.workspace.project import Workspace
from tests.builders import BUILDERS
from tests.fuzz_corpus import corpus as generated_corpus
from tests.fuzz_corpus import encode, picture

# Exception types Pillow's decoders have been seen to raise besides OSError, and a few more.
RAISED = (
    NotImplementedError,
    ValueError,
    KeyError,
    IndexError,
    struct.error,
    ZeroDivisionError,
    TypeError,
    AttributeError,
    RecursionError,
    MemoryError,
    EOFError,
    SyntaxError,
)
WIDTH_OF_FIRST = 70  # BMPs of width 70 + i raise RAISED[i] from the patched decoder


@pytest.fixture
def raising_bmp_decoder(monkeypatch):
    original = BmpImagePlugin.BmpImageFile.load

    def load(self):
        index = self.size[0] - WIDTH_OF_FIRST
        if 0 <= index < len(RAISED):
            raise RAISED[index]("from the patched decoder")
        return original(self)

    monkeypatch.setattr(BmpImagePlugin.BmpImageFile, "load", load)


@pytest.fixture
def no_hang():
    """Fails the test (instead of hanging CI) when one entry point takes over two minutes."""

    def timeout(signum, frame):
        raise TimeoutError("an entry point hung on the bad-image corpus")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    files = {name: data for name, data in generated_corpus().items() if Path(name).suffix in IMAGE_EXTENSIONS}
    for i, error in enumerate(RAISED):
        files[f"raises-{error.__name__}.bmp"] = encode(picture((WIDTH_OF_FIRST + i, 20)), "BMP")
    return files


@pytest.fixture
def verdicts(corpus, raising_bmp_decoder) -> dict[str, str | None]:
    """File name -> None (accepted) or the refusal, decoded directly."""
    result = {}
    for name, data in corpus.items():
        try:
            decode_image_bytes(data, name)
            result[name] = None
        except ImageLoadError as error:
            result[name] = str(error)
    return result


def assert_one_sentence_naming(message: str, name: str) -> None:
    assert f"Cannot read image '{name}'" in message or f"{name}'" in message, message
    assert "\n" not in message and message.endswith("."), message
    assert "Traceback" not in message


def test_decoding_the_corpus_accepts_or_refuses_each_file_in_one_sentence(corpus, verdicts):
    refused = {name: reason for name, reason in verdicts.items() if reason}
    assert len(corpus) > 200 and len(refused) > 100 and len(refused) < len(corpus)
    for name, reason in refused.items():
        assert_one_sentence_naming(reason, name)
    for error in RAISED:
        assert f"({error.__name__}: " in refused[f"raises-{error.__name__}.bmp"]
    plain = ("truncated or corrupt", "variant of", "too large", "declares", "not a JPEG", "decoder failed")
    assert all(any(words in reason for words in plain) for reason in refused.values())
    assert "Ghostscript" not in " ".join(refused.values())


def test_app_upload(corpus, verdicts, tmp_path, no_hang):
    project = Workspace(tmp_path / "workspace").create("fuzz")
    project.add_class("things")
    report = project.add_images("things", list(corpus.items()))
    rejected = dict(report.rejected)
    assert set(rejected) == {name for name, reason in verdicts.items() if reason}
    for name, reason in rejected.items():
        assert_one_sentence_naming(reason, name)
    assert len(report.added) + len(report.duplicates) == sum(reason is None for reason in verdicts.values())


@pytest.fixture
def corpus_folder(corpus, tmp_path) -> Path:
    folder = tmp_path / "corpus"
    for i, (name, data) in enumerate(corpus.items()):  # two classes for the loader
        (folder / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        (folder / ("a" if i % 2 else "b") / name).write_bytes(data)
    return folder


@pytest.fixture
def classifier_file(tmp_path) -> Path:
    return export_classifier(BUILDERS["CoOp"][0](), tmp_path / "c.safetensors")


def test_python_api(corpus_folder, verdicts, classifier_file, no_hang):
    classifier = Classifier.load(classifier_file, device="cpu")
    for path in sorted(corpus_folder.rglob("*.*")):
        if verdicts[path.name] is None:
            assert len(classifier.predict([path])) == 1
        else:
            with pytest.raises(ImageLoadError) as refusal:
                classifier.predict([path])
            assert_one_sentence_naming(str(refusal.value), str(path))


def test_classify_command(corpus_folder, verdicts, classifier_file, tmp_path, capfd, no_hang):
    output, log = tmp_path / "out.csv", tmp_path / "decoders.log"
    status = main(
        [
            "classify",
            "--classifier",
            str(classifier_file),
            str(corpus_folder),
            "-o",
            str(output),
            "--decoder_log",
            str(log),
            "--no_progress",
        ]
    )
    accepted = sum(reason is None for reason in verdicts.values())
    assert status == 3 and len(output.read_text().splitlines()) == 1 + accepted
    _out, err = capfd.readouterr()
    assert f"Skipped {len(verdicts) - accepted} unreadable file(s)" in err
    # The decoders' own chatter (libtiff/libjpeg prints, Pillow warnings) is in the log, not on the terminal.
    for noise in ("JPEGLib", "TIFFReadDirectory", "UserWarning", "Corrupt EXIF", "warnings.warn"):
        assert noise not in err
    assert log.stat().st_size > 0 and f"are in {log}" in err
    assert all(line.startswith("  Cannot read image ") for line in err.splitlines() if line.startswith("  "))


def test_folder_loader_with_skip_bad_images(corpus_folder, verdicts, no_hang):
    data = FewShotDataModule(root=str(corpus_folder), shots=0, num_workers=0, test_batch_size=64, skip_bad_images=True)
    data.preprocess = PreprocessConfig(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    splits = data.splits
    samples = splits.train + splits.val + splits.test
    assert {Path(s.path).name for s in samples} == {name for name, reason in verdicts.items() if reason is None}
    assert {Path(s.path).name for s in data.unreadable_images} == {n for n, r in verdicts.items() if r}
    loaded = sum(batch[0].shape[0] for batch in data._loader(samples, train=False) if batch is not None)
    assert loaded == len(samples)


def test_classify_as_a_real_process_with_stderr_in_a_file(corpus_folder, classifier_file, tmp_path):
    """Real descriptors, not pytest's capture: stderr redirected to a file, as in CI logs and shells.
    (Restoring the terminal once flushed a closed stream there, and the traceback went to the log.)"""
    err, log = tmp_path / "stderr.txt", tmp_path / "decoders.log"
    command = [sys.executable, "-m", "promptlab", "classify", "--classifier", str(classifier_file)]
    command += [str(corpus_folder), "-o", str(tmp_path / "out.csv"), "--decoder_log", str(log)]
    with err.open("w") as stderr:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=600)
    text = err.read_text()
    assert done.returncode == 3 and "Traceback" not in text, text[-2000:]
    assert "Skipped" in text and f"are in {log}" in text and "Wrote" in done.stdout
    assert "JPEGLib" not in text and "JPEGLib" in log.read_text()
