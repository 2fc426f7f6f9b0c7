"""The benchmark scripts run (on the tiny model) and their outputs agree; timings are not asserted."""

import pytest

from benchmarks.text_encoder import PROMPT_KINDS, measure


@pytest.mark.parametrize("kind", list(PROMPT_KINDS))
def test_text_encoder_benchmark_outputs_identical(tiny_backbone, kind):
    result = measure(tiny_backbone, n_classes=12, kind=kind, repeats=1, chunk_size=5)
    assert result["max_abs_difference"] < 1e-5
    assert result["tokens_max"] < result["tokens_full"]
