"""Project and class names: any text is either a usable folder name or one
ProjectError, never an OSError; NFC and NFD spellings are one name; invisible characters are refused."""

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptlab.workspace.project import MAX_NAME_BYTES, MAX_NAME_CHARACTERS, ProjectError, Workspace, check_name


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


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zl", "Zp"]), min_size=1, max_size=3))
def test_invisible_and_direction_characters_are_refused(hidden):
    with pytest.raises(ProjectError):
        check_name(f"cat{hidden}dog", "class")


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
