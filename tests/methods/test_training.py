"""Training behaviour: the backbone stays bit-identical, the loss falls, the schedule is Dassl's."""

import lightning as L
import torch
from safetensors.torch import save_file

from promptlab.backbone import FrozenCLIP
from promptlab.data import FewShotDataModule
from promptlab.methods import CoOp, ZeroShotCLIP
from promptlab.methods._schedule import warmup_cosine_factor


def fit(model, image_folder, epochs: int = 8) -> L.Trainer:
    data = FewShotDataModule(root=str(image_folder), shots=4, batch_size=12, num_workers=0)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    model.connect_data(data)
    trainer.fit(model, datamodule=data)
    return trainer


def test_backbone_bit_identical_and_loss_falls(image_folder):
    torch.manual_seed(0)
    model = CoOp(
        class_names=["blue_triangle", "green_circle", "red_square"],
        backbone="clip-tiny",
        pretrained=None,
        n_ctx=4,
        lr=0.05,
        warmup_epochs=0,
    )
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    ctx_before = model.ctx.detach().clone()
    images = torch.randn(12, 3, 32, 32)
    labels = torch.arange(12) % 3
    with torch.no_grad():
        loss_before = torch.nn.functional.cross_entropy(model(images), labels)

    # Train on fixed random images so that the falling loss is the context's doing.
    class Fixed(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            return images[i], labels[i], i

    trainer = L.Trainer(
        max_epochs=30, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, torch.utils.data.DataLoader(Fixed(), batch_size=12))
    with torch.no_grad():
        loss_after = torch.nn.functional.cross_entropy(model(images), labels)
    assert loss_after < 0.8 * loss_before
    assert not torch.equal(model.ctx.detach(), ctx_before)
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in model.backbone.modules())


def test_checkpoint_holds_only_the_context(image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in FrozenCLIP("clip-tiny", None).model.state_dict().items()}, str(weights))
    classes = ["blue_triangle", "green_circle", "red_square"]
    model = CoOp(class_names=classes, backbone="clip-tiny", pretrained=None, weights_path=str(weights), n_ctx=4)
    trainer = fit(model, image_folder, epochs=1)
    assert not list(tmp_path.glob("*.json")), "without a logger nothing is written to the current directory"
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    checkpoint = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert list(checkpoint["state_dict"]) == ["ctx"]
    assert checkpoint["promptlab_method"] == "CoOp"


def test_checkpoint_of_random_weights_keeps_them(image_folder, tmp_path, monkeypatch):
    """Nothing else could rebuild them: export --run would otherwise draw other random weights."""
    monkeypatch.chdir(tmp_path)
    model = CoOp(class_names=["blue_triangle", "green_circle", "red_square"], backbone="clip-tiny", pretrained=None)
    trainer = fit(model, image_folder, epochs=1)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    state = torch.load(tmp_path / "m.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(state["backbone.model.visual.conv1.weight"], model.backbone.model.visual.conv1.weight)


def test_zero_shot_has_nothing_to_train():
    model = ZeroShotCLIP(class_names=["dog", "cat"], backbone="clip-tiny", pretrained=None, templates="ensemble")
    assert model.trainable_parameters() == []
    assert len(model.templates) == 7
    assert torch.allclose(model.class_features().norm(dim=-1), torch.ones(2))


def test_schedule_matches_dassl_constant_warmup_then_cosine():
    """Transcription of Dassl's ConstantWarmupScheduler(CosineAnnealingLR(T_max=max_epoch))."""
    lr, warmup_lr, max_epochs = 0.002, 1e-5, 10
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    expected = [warmup_lr]  # epoch 0: constant warm-up lr; the successor then steps from 0
    for _ in range(max_epochs - 1):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        cosine.step()
    ours = [lr * warmup_cosine_factor(e, max_epochs, 1, warmup_lr / lr) for e in range(max_epochs)]
    assert torch.allclose(torch.tensor(ours), torch.tensor(expected))
