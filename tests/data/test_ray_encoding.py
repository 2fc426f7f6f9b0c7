"""``--data.engine ray``: the feature cache's views and NoLA's pass over its pool computed by a Ray Data
actor pool equal the local path's (the same seeds per view, the same refusals, the same pseudo-labels)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from promptlab.cli import main
from promptlab.data import transforms
from promptlab.data.feature_cache import FeatureCache, encoder_key
from promptlab.data.images import ImageLoadError, list_images

pytest.importorskip("ray.data")


def test_cached_views_on_ray_equal_the_local_ones(ray_cluster, tiny_backbone, image_folder, tmp_path):
    key = encoder_key(tiny_backbone.model_name, tiny_backbone.image_encoder_state())
    paths = list_images(image_folder / "blue_triangle") + list_images(image_folder / "red_square")[:3]
    paths[4].write_bytes(b"not an image")
    transform = transforms.train_transform(tiny_backbone.preprocess, (0.5, 1.0))
    results = {}
    for engine in ("local", "ray"):
        cache = FeatureCache(tmp_path / engine, tiny_backbone.encode_image, key)
        with pytest.raises(ImageLoadError, match="Cannot read image"):
            cache.features(paths, transform, 3, torch.device("cpu"), batch_size=6, engine=engine)
        results[engine] = cache.features(
            paths, transform, 3, torch.device("cpu"), batch_size=6, skip_bad_images=True, engine=engine
        )
    (local, local_kept), (on_ray, ray_kept) = results["local"], results["ray"]
    assert local.shape == (12, 3, tiny_backbone.embed_dim) and torch.equal(local_kept, ray_kept)
    assert 4 not in local_kept.tolist()
    assert torch.allclose(local, on_ray, atol=1e-6)
    assert not torch.allclose(local[:, 0], local[:, 1])  # three distinct augmented views, the same on both


def test_nola_pseudo_labels_on_ray_equal_the_local_ones(ray_cluster, image_folder, unlabelled_pool, tmp_path):
    pool = unlabelled_pool
    labels, stages = {}, {}
    for engine in ("local", "ray"):
        runs = tmp_path / engine
        args = ["fit", "-c", "configs/tiny/nola.yaml", f"--data.root={image_folder}", f"--data.unlabelled={pool}"]
        args += ["--trainer.max_epochs=1", f"--data.engine={engine}", f"--trainer.logger.init_args.save_dir={runs}"]
        assert main(args) == 0
        (run,) = (p.parent for p in runs.rglob("nola_stages.json"))
        labels[engine] = load_file(str(run / "nola_pseudo_labels.safetensors"))
        stages[engine] = json.loads((run / "nola_stages.json").read_text())
    assert torch.equal(labels["local"]["pool_labels"], labels["ray"]["pool_labels"])
    assert torch.equal(labels["local"]["stage1_labels"], labels["ray"]["stage1_labels"])
    assert stages["local"]["unreadable_images"] == stages["ray"]["unreadable_images"] == 1
    assert stages["local"] == pytest.approx(stages["ray"], abs=1e-6)


def test_a_coop_run_caches_its_features_on_ray(ray_cluster, image_folder, tmp_path):
    outcomes = {}
    for engine in ("local", "ray"):
        args = ["fit", "-c", "configs/tiny/coop.yaml", f"--data.root={image_folder}", "--trainer.max_epochs=2"]
        args += [f"--data.engine={engine}", f"--data.cache_dir={tmp_path / engine / 'cache'}", "--data.cache_views=2"]
        assert main([*args, f"--trainer.logger.init_args.save_dir={tmp_path / engine}"]) == 0
        (checkpoint,) = (tmp_path / engine).rglob("*.ckpt")
        outcomes[engine] = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]["ctx"]
        cached = len(list((tmp_path / engine / "cache").rglob("*.safetensors")))
        outcomes[f"{engine} files"] = cached
    assert outcomes["local files"] == outcomes["ray files"] > 0
    assert torch.allclose(outcomes["local"], outcomes["ray"], atol=1e-5)
