"""The data module and a method meet through ``connect_data`` alone: both work without a Trainer."""

import torch

from promptlab.data import FewShotDataModule
from promptlab.methods import CoOp, LinearProbe, NoLA, TipAdapter

CLASSES = ["blue_triangle", "green_circle", "red_square"]
TINY = {"class_names": CLASSES, "backbone": "clip-tiny", "pretrained": None}


def test_frozen_encoder_is_cached_and_a_tuned_one_is_not(image_folder, tmp_path):
    data = FewShotDataModule(root=str(image_folder), shots=4, num_workers=0, cache_dir=str(tmp_path))
    CoOp(**TINY, n_ctx=2).connect_data(data)
    features = next(iter(data.train_dataloader()))[0]
    assert features.dim() == 2  # (B, D) cached features
    NoLA(**TINY, n_prompts=2).connect_data(data)  # tunes the image tower: nothing to cache
    assert next(iter(data.test_dataloader()))[0].dim() == 4


def test_feature_fitted_methods_fit_without_a_trainer(image_folder, tmp_path):
    torch.manual_seed(0)
    data = FewShotDataModule(root=str(image_folder), shots=4, num_workers=0, cache_dir=str(tmp_path), cache_views=2)
    for method in (LinearProbe(**TINY), TipAdapter(**TINY, search_step=(5, 5))):
        method.connect_data(data)
        method.on_fit_start()
        features, labels, _ = next(iter(data.test_dataloader()))
        with torch.no_grad():
            predictions = method(features).argmax(-1)
        assert predictions.shape == labels.shape
    assert len(method.cache_keys) == 12 and method.cache_values.sum() == 12  # 4 shots x 3 classes, one-hot
