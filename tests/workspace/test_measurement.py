"""The intervals the app shows next to accuracies measured on a few held-out images, and file sizes."""

import math

import pytest

from promptlab.files import human_size
from promptlab.workspace.measurement import accuracy_note, difference_interval, wilson_interval, within_noise


@pytest.mark.parametrize(
    ("accuracy", "images", "low", "high"),
    [(1.0, 6, 0.6097, 1.0), (0.5, 10, 0.2366, 0.7634), (0.0, 6, 0.0, 0.3903), (0.9, 1000, 0.8798, 0.9171)],
)
def test_wilson_interval_matches_its_formula(accuracy, images, low, high):
    assert wilson_interval(accuracy, images) == pytest.approx((low, high), abs=1e-4)


def test_the_inspect_pages_case_is_within_noise_and_a_large_gap_is_not():
    assert within_noise(1.0, 4 / 6, 6)  # 6 of 6 against 4 of 6: "+33.3 points" on 6 images says little
    assert not within_noise(0.95, 0.60, 200)
    low, high = difference_interval(0.95, 0.60, 200)
    assert 0 < low < 0.35 < high < 1 and math.isclose((low + high) / 2, (191 / 202) - (121 / 202), abs_tol=1e-9)


def test_captions_name_the_image_count_and_interval():
    assert accuracy_note(1.0, 6) == "on 6 held-out images, 95% interval 61%-100% (Wilson)"
    assert accuracy_note(1.0, 1).startswith("on 1 held-out image,")


@pytest.mark.parametrize(
    ("size", "shown"), [(0, "0 B"), (1023, "1023 B"), (3891, "3.8 KB"), (5 * 2**20, "5.0 MB"), (3 * 2**30, "3.0 GB")]
)
def test_human_size(size, shown):
    assert human_size(size) == shown
