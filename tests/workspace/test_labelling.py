"""Label these next: uncertain and diverse pool images first, one call to label
one, set-aside images never suggested again; works from zero-shot before any run."""

import pytest
import torch
import torch.nn.functional as F

from promptlab.workspace.active_selection import margins, rank_for_labelling
from promptlab.workspace.labelling import put_aside, ranking_classifier, set_aside, suggest_labels
from promptlab.workspace.project import ProjectError
from tests.ui_support import SHAPES, toy_project


def test_margins_are_the_gap_between_the_two_best_classes():
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    assert torch.allclose(margins(probabilities), torch.tensor([0.5, 0.05]))


def test_the_most_uncertain_image_comes_first():
    features = F.normalize(torch.randn(5, 8), dim=-1)
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.51, 0.49], [0.99, 0.01], [0.7, 0.3]])
    assert rank_for_labelling(probabilities, features, count=1) == [2]


def test_near_duplicates_of_a_pick_wait_behind_distinct_images():
    """Ten copies of one ambiguous image and three distinct, slightly less ambiguous ones."""
    torch.manual_seed(0)
    base = F.normalize(torch.randn(1, 16), dim=-1)
    copies = F.normalize(base + 0.01 * torch.randn(10, 16), dim=-1)
    distinct = F.normalize(torch.randn(3, 16), dim=-1)
    features = torch.cat([copies, distinct])
    probabilities = torch.tensor([[0.5, 0.5]] * 10 + [[0.6, 0.4]] * 3)
    picks = rank_for_labelling(probabilities, features, count=4)
    assert picks[0] < 10 and sorted(picks[1:]) == [10, 11, 12]  # one copy, then the distinct ones


def test_images_like_labelled_ones_come_later():
    torch.manual_seed(1)
    labelled = F.normalize(torch.randn(1, 16), dim=-1)
    features = torch.cat([labelled, F.normalize(torch.randn(1, 16), dim=-1)])
    probabilities = torch.tensor([[0.5, 0.5], [0.55, 0.45]])
    assert rank_for_labelling(probabilities, features, labelled, count=2) == [1, 0]


def test_suggest_label_and_set_aside_from_zero_shot(tmp_path):
    project = toy_project(tmp_path, per_class=2, pool=9)
    classifier, which = ranking_classifier(project)
    assert which == "zero-shot CLIP (toy-clip) on the class names" and classifier.class_names == list(SHAPES)
    suggestions = suggest_labels(project, classifier, count=4)
    assert len(suggestions) == 4 and len({s.path for s in suggestions}) == 4
    assert all(s.guess in SHAPES and 0 < s.probability <= 1 and 0 <= s.margin <= 1 for s in suggestions)
    first, second = suggestions[0], suggestions[1]
    labelled = project.label_image(first.path, "circle")
    assert labelled.parent.name == "circle" and not first.path.exists() and len(project.images("circle")) == 3
    put_aside(project, second.path, "none_of_these")
    assert set_aside(project)["none_of_these"] == [second.path.name] and second.path.exists()
    memo = {}
    remaining = {s.path for s in suggest_labels(project, classifier, count=20, memo=memo)}
    assert len(remaining) == 7 and first.path not in remaining and second.path not in remaining
    assert len(memo) == 7 + 7  # the pool left and the labelled images, encoded once
    assert [s.path for s in suggest_labels(project, classifier, 20, memo)] == [
        s.path for s in suggest_labels(project, classifier, 20)
    ]


def test_labelling_an_image_twice_says_it_is_gone(tmp_path):
    project = toy_project(tmp_path, per_class=2, pool=2)
    image = project.images(None)[0]
    project.label_image(image, "square")
    with pytest.raises(ProjectError, match=r"is not in the unlabelled pool .* \(any more\)"):
        project.label_image(image, "circle")
    assert len(project.images("square")) == 3 and len(project.images("circle")) == 2
