"""The benchmark scripts run (on the tiny model) and their outputs agree; timings are not asserted."""

import pytest

from benchmarks.text_encoder import PROMPT_KINDS, measure


@pytest.mark.parametrize("kind", list(PROMPT_KINDS))
def test_text_encoder_benchmark_outputs_identical(tiny_backbone, kind):
    result = measure(tiny_backbone, n_classes=12, kind=kind, repeats=1, chunk_size=5)
    assert result["max_abs_difference"] < 1e-5
    assert result["tokens_max"] < result["tokens_full"]


def test_speed_benchmark_quick_mode(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "speed.json"
    subprocess.run([sys.executable, "benchmarks/speed.py", "--quick", "--out", str(out)], check=True, timeout=600)
    results = json.loads(out.read_text())
    (training,) = results["training"]
    assert training["ours_epoch_s"] > 0 and training["reference_epoch_s"] > 0
    assert {m["variant"] for m in results["memory"]} == {"reference", "ours", "ours_checkpointing"}
    assert all(m["step_peak_mb"] >= 0 for m in results["memory"])
    assert results["inference"][0]["classifier_per_s"] > 0
    assert "| memory, one step |" in out.with_suffix(".md").read_text()


def test_reference_style_coop_equals_ours_before_training():
    """The benchmark's reference loop computes the same classifier as promptlab's CoOp (77 tokens vs truncated)."""
    import torch

    from benchmarks.speed import ReferenceCoOp, class_names
    from promptlab.methods import CoOp

    model = CoOp(class_names=class_names(20), backbone="clip-tiny", pretrained=None, n_ctx=16)
    backbone = model.backbone
    reference = ReferenceCoOp(backbone.model, backbone.tokenize, model.class_names, model.ctx)
    assert torch.allclose(reference.text_features(), model.class_features(), atol=1e-5)
    images = torch.randn(4, 3, 32, 32)
    assert torch.allclose(reference(images), model(images), atol=1e-3)


def test_method_costs_benchmark_quick_mode(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "method_costs.json"
    command = [sys.executable, "benchmarks/method_costs.py", "--quick", "--out", str(out)]
    subprocess.run(command, check=True, timeout=600)
    results = json.loads(out.read_text())
    assert {(r["method"], r["variant"]) for r in results["training"]} == {
        (m, v) for m in ("clip_lora", "maple", "cocoop", "kgcoop") for v in ("reference", "ours")
    }
    assert all(r["step_s"] > 0 for r in results["training"])
    assert results["cocoop_inference"]["max_probability_difference"] < 1e-5  # the stand-in computes the same
    assert "| clip_lora |" in out.with_suffix(".md").read_text()


def test_int8_benchmark_quick_mode(tmp_path):
    """Both quantization modes run on toy-clip and on each head kind asked for; timings are not asserted."""
    import json

    from benchmarks.int8 import main
    from promptlab.toy.world import generate

    generate(tmp_path / "data" / "toy", per_class_and_style=10, unlabelled_per_class=1, pretrain_images=0)
    out = tmp_path / "int8.json"
    args = ["--quick", "--methods", "Zero-shot CLIP", "--data_root", str(tmp_path / "data"), "--out", str(out)]
    main([*args, "--runs", str(tmp_path / "runs")])
    results = json.loads(out.read_text())
    (speed,) = results["throughput"]
    assert speed["backbone"] == "toy-clip" and speed["int8_dynamic_per_s"] > 0
    (head,) = results["heads"]
    assert head["method"] == "Zero-shot CLIP" and 0 <= head["int8_dynamic_agreement"] <= 1


def test_bulk_benchmark_quick_mode(tmp_path):
    """Local and ray classify write identical CSVs; timings are not asserted."""
    import json

    from benchmarks.bulk import main
    from promptlab.toy.world import generate

    generate(tmp_path / "data" / "toy", per_class_and_style=10, unlabelled_per_class=1, pretrain_images=0)
    out = tmp_path / "bulk.json"
    main(["--quick", "--images", "100", "--data_root", str(tmp_path / "data"), "--out", str(out)])
    (run,) = json.loads(out.read_text())["runs"]
    assert run["same_paths_in_order"] and run["same_top1"] == 1.0 and run["rows"] == 100 and run["ray_peak_mb"] > 0


def test_cache_sharing_benchmark_quick_mode(tmp_path):
    """Two gloo ranks: once per rank each encodes every image, shared each encodes half; same features."""
    import json

    from benchmarks.cache_sharing import main
    from promptlab.toy.world import generate

    generate(tmp_path / "data" / "toy", per_class_and_style=10, unlabelled_per_class=1, pretrain_images=0)
    out = tmp_path / "cache_sharing.json"
    main(["--quick", "--images", "20", "--no_ray", "--data_root", str(tmp_path / "data"), "--out", str(out)])
    (run,) = json.loads(out.read_text())["runs"]
    assert [rank["unshared_encoded"] for rank in run["ranks"]] == [20, 20]
    assert [rank["shared_encoded"] for rank in run["ranks"]] == [10, 10]
    assert all(rank["identical"] for rank in run["ranks"])


def test_nola_prompt_cost_benchmark_runs_on_one_task(tmp_path):
    """Zero prompts of any scale change nothing; the table has a row per prompt count."""
    import json

    from benchmarks.nola_prompt_cost import main
    from promptlab.toy.world import generate

    generate(tmp_path / "data" / "toy", per_class_and_style=10, unlabelled_per_class=1, pretrain_images=0)
    out = tmp_path / "cost.json"
    main(["--tasks", "shapes", "--prompts", "0", "4", "--data_root", str(tmp_path / "data"), "--out", str(out)])
    none, four = json.loads(out.read_text())["runs"]
    assert set(none["accuracy"].values()) == {none["accuracy"]["no prompts"]}
    assert four["prompts"] == 4 and 0 <= four["accuracy"]["x1"] <= 1


def test_nola_loss_signals_band_separates_losing_runs():
    """Runs lost below and above a band of agreement: the fitted band lies between them, ends at midpoints,
    and is checked on the other world.
    """
    from benchmarks.nola_loss_signals import FIGURES, analyse, choose

    def run(world: str, value: float, gain: float) -> dict:
        figures, images = dict.fromkeys(FIGURES, value), {"pool": 100, "mixed_test": 50}
        return {"world": world, "figures": figures, "pool_gain": gain, "test_gain": {"mixed": gain}, "images": images}

    runs = [run("a", 0.6, -0.05), run("a", 0.7, 0.01), run("a", 0.8, 0.02), run("a", 0.9, -0.03)]
    runs += [run("b", 0.62, 0.02), run("b", 0.75, 0.01), run("b", 0.95, -0.01)]
    rule = analyse(runs, "a", "b")["final_vs_dino"]
    assert (rule["low"], rule["high"]) == (pytest.approx(0.65), pytest.approx(0.85)) and rule["misclassified"] == 0
    assert (rule["held_out_right"], rule["held_out_runs"]) == (2, 3)  # 0.62 won although below the band
    one_sided = analyse([r for r in runs if r["figures"]["final_vs_dino"] < 0.85], "a", "b")
    assert one_sided["final_vs_dino"]["high"] == 1.0  # nothing lost above: that end stays open
    assert choose(one_sided) in FIGURES


def test_nola_loss_signals_benchmark_quick_mode(tmp_path):
    """One short NoLA run on a small world: every figure is an agreement, gains are against zero-shot."""
    import json

    from benchmarks.nola_loss_signals import FIGURES, main
    from promptlab.toy.world import generate

    generate(tmp_path / "data" / "toy", per_class_and_style=10, unlabelled_per_class=4, pretrain_images=0)
    out = tmp_path / "signals.json"
    main(["--quick", "--data_root", str(tmp_path / "data"), "--out", str(out)])
    (run,) = json.loads(out.read_text())["runs"]
    assert set(run["figures"]) == set(FIGURES) and all(0 <= v <= 1 for v in run["figures"].values())
    assert run["nola_reported"] == pytest.approx(run["figures"], abs=1e-6)  # the app shows what was measured
    pool = run["pool_accuracy"]
    assert run["pool_gain"] == pytest.approx(pool["final"] - pool["zero_shot"])
    assert run["images"]["pool"] == 4 * 8 * 4 and run["images"]["mixed_test"] == 4 * 8 * 5


def test_nola_fit_benchmark_runs_without_prompts_for_one_epoch(tmp_path):
    """NoLA with no visual prompts trains (head and layer norms only); the linear bound uses the same labeller."""
    import json

    from benchmarks.nola_fit import main
    from promptlab.toy.world import generate

    generate(tmp_path / "data" / "toy", per_class_and_style=10, unlabelled_per_class=4, pretrain_images=0)
    out = tmp_path / "fit.json"
    main(["--prompts", "0", "--epochs", "1", "--data_root", str(tmp_path / "data"), "--out", str(out)])
    results = json.loads(out.read_text())
    (run,) = results["runs"]
    assert run["prompts"] == 0 and 0 <= run["figures"]["final_vs_dino"] <= 1
    assert results["linear_bound"]["teacher_accuracy"] == pytest.approx(run["pool_accuracy"]["dino"])


@pytest.mark.parametrize("builder", ["CoOp", "NoLA", "MaPLe"])  # plain, prompts after CLS, prompts after patches
def test_open_set_candidates_take_the_patch_tokens_of_any_encoder(builder, tmp_path):
    import torch

    from benchmarks.open_set import CANDIDATES, candidate_scores, patch_features
    from promptlab.deploy.classifier import Classifier
    from promptlab.export import export_classifier
    from tests.builders import BUILDERS

    classifier = Classifier.load(export_classifier(BUILDERS[builder][0](), tmp_path / "c.safetensors"), device="cpu")
    visual, size = classifier.backbone.model.visual, classifier.meta["preprocess"]["size"]
    images = torch.rand(3, 3, size, size) * 2 - 1
    with patch_features(classifier) as local:
        features, probabilities = classifier.features_and_probabilities(images)
    (patches,) = local
    assert patches.shape == (3, visual.grid_size[0] * visual.grid_size[1], features.shape[1])
    assert torch.allclose(patches.norm(dim=-1), torch.ones(patches.shape[:2]), atol=1e-5)
    text = classifier.head.weight.detach()
    scores = candidate_scores(features, patches, probabilities, features, torch.tensor([0, 1, 0]), text)
    assert set(scores) == set(CANDIDATES)
    assert (scores["gl_mcm"] >= scores["mcm"] + 1 / len(text) - 1e-6).all()  # a patch's MCM is at least 1/C
