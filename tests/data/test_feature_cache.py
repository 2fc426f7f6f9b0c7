"""The feature cache: keys, reuse, exact features, bad images, and when it applies."""

from pathlib import Path

import lightning as L
import pytest
import torch

from promptlab.backbone import FrozenCLIP
from promptlab.data import FewShotDataModule, transforms
from promptlab.data.feature_cache import FeatureCache, encoder_key, transform_key
from promptlab.data.images import ImageLoadError, list_images, load_image
from promptlab.methods import CoOp, NoLA

CLASSES = ["blue_triangle", "green_circle", "red_square"]


class CountingEncoder:
    """Wraps an image encoder and counts the images it encodes."""

    def __init__(self, backbone: FrozenCLIP) -> None:
        self.backbone, self.images = backbone, 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.images += len(images)
        return self.backbone.encode_image(images)


@pytest.fixture
def cache(tiny_backbone, tmp_path):
    key = encoder_key(tiny_backbone.model_name, tiny_backbone.image_encoder_state())
    return FeatureCache(tmp_path / "cache", CountingEncoder(tiny_backbone), key)


def test_features_are_computed_once_and_equal_the_encoder(cache, tiny_backbone, image_folder):
    paths = list_images(image_folder / "red_square")[:5]
    transform = transforms.test_transform(tiny_backbone.preprocess)
    features, kept = cache.features(paths, transform, 1, torch.device("cpu"), batch_size=2)
    assert features.shape == (5, 1, tiny_backbone.embed_dim) and kept.tolist() == [0, 1, 2, 3, 4]
    expected = tiny_backbone.encode_image(torch.stack([transform(load_image(p)) for p in paths]))
    assert torch.allclose(features[:, 0], expected, atol=1e-6)
    assert cache.encoder.images == 5

    again, _ = cache.features(paths, transform, 1, torch.device("cpu"))
    assert cache.encoder.images == 5  # all read from disk
    assert torch.equal(again, features)
    assert not list(cache.root.rglob("*.tmp"))


def test_augmented_views_are_distinct_and_reproducible(cache, tiny_backbone, image_folder, tmp_path):
    paths = list_images(image_folder / "green_circle")[:3]
    transform = transforms.train_transform(tiny_backbone.preprocess, (0.3, 1.0))
    views, _ = cache.features(paths, transform, 4, torch.device("cpu"))
    assert views.shape[:2] == (3, 4)
    assert not torch.allclose(views[:, 0], views[:, 1])
    fresh = FeatureCache(tmp_path / "elsewhere", cache.encoder, cache.key)  # same draws, seeded by content
    assert torch.allclose(fresh.features(paths, transform, 4, torch.device("cpu"))[0], views, atol=1e-6)


def test_building_the_cache_leaves_the_training_random_state_alone(cache, tiny_backbone, image_folder):
    # A cold cache must train exactly like a warm one: encoding draws nothing from the global RNG.
    paths = list_images(image_folder / "green_circle")[:3]
    transform = transforms.train_transform(tiny_backbone.preprocess, (0.3, 1.0))
    torch.manual_seed(0)
    cache.features(paths, transform, 2, torch.device("cpu"))  # cold: encodes
    after_cold = torch.rand(3)
    torch.manual_seed(0)
    cache.features(paths, transform, 2, torch.device("cpu"))  # warm: reads
    assert torch.equal(torch.rand(3), after_cold)


def test_keys_follow_weights_transform_and_views(tiny_backbone):
    other = FrozenCLIP("clip-tiny", pretrained=None)  # other random weights
    assert encoder_key("clip-tiny", tiny_backbone.image_encoder_state()) != encoder_key(
        "clip-tiny", other.image_encoder_state()
    )
    cfg = tiny_backbone.preprocess
    keys = {
        transform_key(transforms.train_transform(cfg, (0.5, 1.0)), 8),
        transform_key(transforms.train_transform(cfg, (0.08, 1.0)), 8),
        transform_key(transforms.train_transform(cfg, (0.5, 1.0)), 4),
        transform_key(transforms.test_transform(cfg), 1),
    }
    assert len(keys) == 4


def test_same_content_under_another_name_is_reused(cache, tiny_backbone, image_folder, tmp_path):
    source = list_images(image_folder / "red_square")[0]
    copy = tmp_path / "renamed.png"
    copy.write_bytes(source.read_bytes())
    transform = transforms.test_transform(tiny_backbone.preprocess)
    cache.features([source], transform, 1, torch.device("cpu"))
    cache.features([copy], transform, 1, torch.device("cpu"))
    assert cache.encoder.images == 1


def test_unreadable_images_are_named_or_skipped(cache, tiny_backbone, image_folder):
    bad = image_folder / "red_square" / "corrupt.png"
    bad.write_bytes(b"not a png")
    paths = [list_images(image_folder / "red_square")[0], bad, image_folder / "missing.png"]
    transform = transforms.test_transform(tiny_backbone.preprocess)
    with pytest.raises(ImageLoadError, match=r"corrupt\.png.*skip_bad_images"):
        cache.features(paths[:2], transform, 1, torch.device("cpu"))
    with pytest.raises(ImageLoadError, match=r"missing\.png.*skip_bad_images"):
        cache.features(paths[::2], transform, 1, torch.device("cpu"))
    features, kept = cache.features(paths, transform, 1, torch.device("cpu"), skip_bad_images=True)
    assert kept.tolist() == [0] and len(features) == 1


def fit_coop(image_folder: Path, **data_args) -> tuple[CoOp, FewShotDataModule, L.Trainer]:
    torch.manual_seed(0)
    model = CoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None, n_ctx=4, lr=0.05)
    data = FewShotDataModule(root=str(image_folder), shots=4, batch_size=6, num_workers=0, **data_args)
    model.connect_data(data)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=data)
    return model, data, trainer


def test_training_reads_cached_features_not_images(image_folder, tmp_path, monkeypatch):
    model, data, trainer = fit_coop(image_folder, cache_dir=str(tmp_path / "cache"), cache_views=3)
    batch = next(iter(trainer.train_dataloader))
    assert batch[0].shape == (6, model.backbone.embed_dim)  # features, not images
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == len(data.splits.train) + len(data.splits.val)
    test_features = next(iter(data.test_dataloader()))[0]
    sample = data.splits.test[0]
    image = transforms.test_transform(model.preprocess)(load_image(data.splits.image_root / sample.path))
    assert torch.allclose(test_features[0], model.backbone.encode_image(image[None])[0], atol=1e-6)

    # A second run encodes nothing.
    monkeypatch.setattr(FrozenCLIP, "encode_image", lambda *a, **k: pytest.fail("image encoder ran"))
    fit_coop(image_folder, cache_dir=str(tmp_path / "cache"), cache_views=3)


def test_cache_off_and_tuned_image_encoders_read_images(image_folder, tmp_path):
    _, _, trainer = fit_coop(image_folder, cache_dir=str(tmp_path / "cache"), cache_features=False)
    assert next(iter(trainer.train_dataloader))[0].dim() == 4
    assert not (tmp_path / "cache").exists()
    nola = NoLA(class_names=CLASSES, backbone="clip-tiny", pretrained=None, n_prompts=2)
    assert not nola.caches_image_features


def test_mixed_precision_training_on_cached_features(image_folder, tmp_path):
    torch.manual_seed(0)
    model = CoOp(class_names=CLASSES, backbone="clip-tiny", pretrained=None, n_ctx=4, lr=0.05)
    data = FewShotDataModule(root=str(image_folder), shots=4, batch_size=6, num_workers=0, cache_dir=str(tmp_path))
    model.connect_data(data)
    trainer = L.Trainer(max_epochs=1, precision="bf16-mixed", logger=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=data)  # the GPU default; bf16 autocast also runs on the CPU
    assert torch.isfinite(model.ctx).all() and model.ctx.dtype == torch.float32


def test_processes_share_the_encoding_work(cache, tiny_backbone, image_folder):
    paths = list_images(image_folder / "blue_triangle")  # 10 images
    transform = transforms.test_transform(tiny_backbone.preprocess)
    encoded_at_barriers = []

    def barrier() -> None:
        encoded_at_barriers.append(cache.encoder.images)

    # Process 0 of 2 encodes its half; then, as process 1 never came, the rest itself.
    cache.features(paths, transform, 1, torch.device("cpu"), rank=0, world_size=2, barrier=barrier)
    assert encoded_at_barriers == [0, 5]
    assert cache.encoder.images == 10
