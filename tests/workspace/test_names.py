"""Project and class names: any text is either a usable folder name or one
ProjectError, never an OSError; NFC and NFD spellings are one name; invisible characters are refused,
except the joiners that written words need; projects, like classes, ignore case."""

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptlab.workspace.project import (
    DECODER_LOG_FILE,
    MAX_NAME_BYTES,
    MAX_NAME_CHARACTERS,
    ProjectError,
    Workspace,
    check_name,
)
from tests.fuzz_corpus import corpus


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_text_is_a_usable_name_or_one_project_error(tmp_path_factory, text):
    try:
        name = check_name(text, "class")
    except ProjectError as error:
        assert str(error).startswith("The class name ")
        return
    assert name == unicodedata.normalize("NFC", name) and name == name.strip()
    assert len(name) <= MAX_NAME_CHARACTERS and len(name.encode()) <= MAX_NAME_BYTES
    folder = tmp_path_factory.mktemp("names") / name
    folder.mkdir()  # a real folder of that name can be made
    assert folder.is_dir()


JOINERS = ("\u200c", "\u200d")


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zl", "Zp"]), min_size=1, max_size=3))
def test_invisible_and_direction_characters_are_refused(hidden):
    if hidden in JOINERS:  # one joiner between two letters is how some words are written
        assert check_name(f"cat{hidden}dog", "class") == f"cat{hidden}dog"
        return
    with pytest.raises(ProjectError):
        check_name(f"cat{hidden}dog", "class")


@pytest.mark.parametrize(
    "name",
    ["👨\u200d👩\u200d👧", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\u0915\u094d\u200d\u0937"],
    ids=["family emoji (ZWJ)", "Persian (ZWNJ)", "Devanagari (ZWJ)"],
)
def test_joiners_inside_words_are_allowed(name, tmp_path):
    project = Workspace(tmp_path).create(name)
    project.add_class(name)
    assert project.classes() == [name]


@pytest.mark.parametrize("name", ["\u200d", "a\u200d", "\u200cb", "a \u200d b", "a\u200d\u200db", "a\u202eb"])
def test_joiners_alone_and_direction_overrides_are_refused(name):
    with pytest.raises(ProjectError, match="invisible or text-direction character"):
        check_name(name, "class")


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("a\tb", "a tab"),
        ("a\nb", "a line break"),
        ("a\x00b", "a NUL character"),
        ("a\x07b", "the control character U\\+0007"),
        ("a/b", "'/'"),
    ],
)
def test_a_refused_character_is_named(name, named):
    with pytest.raises(ProjectError, match=f"contains {named}"):
        check_name(name, "project")


def test_projects_ignore_case_as_classes_do(tmp_path):
    workspace = Workspace(tmp_path)
    workspace.create("Cats")
    for other in ("cats", "CATS", " cAts "):
        with pytest.raises(ProjectError, match="already exists as 'Cats' \\(names ignore case"):
            workspace.create(other)
    assert workspace.projects() == ["Cats"] and workspace.open("cats").path.name == "Cats"


def test_the_limits_and_their_message_agree():
    assert check_name("x" * MAX_NAME_CHARACTERS, "class") == "x" * MAX_NAME_CHARACTERS
    with pytest.raises(ProjectError, match="at most 80 characters"):
        check_name("x" * (MAX_NAME_CHARACTERS + 1), "class")
    with pytest.raises(ProjectError, match="200 bytes"):
        check_name("🐈" * 51, "class")  # 51 characters, 204 bytes


def test_nfc_and_nfd_spellings_are_one_class(tmp_path):
    project = Workspace(tmp_path).create("pets")
    project.add_class(unicodedata.normalize("NFC", "café"))
    with pytest.raises(ProjectError, match="duplicate"):
        project.add_class(unicodedata.normalize("NFD", "café"))
    assert project.classes() == ["café"]


def test_eighty_emoji_are_refused_in_one_sentence_not_an_os_error(tmp_path):
    workspace = Workspace(tmp_path)
    with pytest.raises(ProjectError, match="too long"):
        workspace.create("🐈" * 80)
    project = workspace.create("pets")
    with pytest.raises(ProjectError, match="too long"):
        project.add_class("🐈" * 80)
    project.add_class("cat")
    with pytest.raises(ProjectError, match="too long"):
        project.rename_class("cat", "🐈" * 80)


def test_the_image_decoders_own_prints_about_uploads_go_to_the_projects_log(tmp_path, capfd):
    project = Workspace(tmp_path).create("pets")
    project.add_class("cat")
    damaged = {name: data for name, data in corpus().items() if name.endswith(".tif")}
    report = project.add_images("cat", list(damaged.items()))
    assert report.rejected  # the damaged ones, each with its sentence
    printed = capfd.readouterr().err
    assert "TIFF" not in printed and "JPEGLib" not in printed, printed[:500]
    assert "TIFF" in (project.path / DECODER_LOG_FILE).read_text()  # libtiff's own lines, kept for whoever asks
