"""Methods on the random-weights tiny CLIP, set away from their initialisation as training would,
one per kind of head an exported classifier can hold (and the encoder changes: NoLA's visual prompts,
CLIP-LoRA's deltas, MaPLe's deep prompts): for the tests of
files, runtimes and class changes that need a learned method without training one."""

import torch
import torch.nn.functional as F

from promptlab.deploy.heads import CacheHead, ConditionalHead, LinearHead, MixtureHead
from promptlab.methods import (
    CLAP,
    CLIPLoRA,
    CoCoOp,
    CoOp,
    KgCoOp,
    LinearProbe,
    MaPLe,
    MoCoOp,
    NoLA,
    ProLIP,
    TipAdapter,
    TipAdapterF,
)

CLASSES = ["blue_triangle", "green_circle", "red_square"]
TINY = {"class_names": CLASSES, "backbone": "clip-tiny", "pretrained": None}


def _coop():
    model = CoOp(**TINY, n_ctx=4)
    with torch.no_grad():
        model.ctx.normal_(std=0.5)  # far from init, as after training
    return model


def _kgcoop():
    model = KgCoOp(**TINY)
    with torch.no_grad():
        model.ctx.add_(torch.randn_like(model.ctx) * 0.3)
    return model


def _mocoop():
    model = MoCoOp(**TINY)
    with torch.no_grad():
        for context in model.contexts:
            context.add_(torch.randn_like(context) * 0.3)
        model.router.weight.normal_(std=2.0)
    return model


def _nola():
    model = NoLA(**TINY, n_prompts=3)
    with torch.no_grad():
        model.visual_prompts.normal_(std=0.5)
        model.head.weight.add_(torch.randn_like(model.head.weight) * 0.1)
    return model


def _cocoop():
    model = CoCoOp(**TINY)
    with torch.no_grad():
        model.ctx.normal_(std=0.5)
        model.meta_net.linear2.weight.normal_(std=0.5)  # a shift that differs from image to image
    return model


def _maple():
    model = MaPLe(**TINY, prompt_depth=2)
    with torch.no_grad():
        for prompt in model.compound_prompts_text:
            prompt.normal_(std=0.5)  # deep prompts away from their init
    return model


def _clip_lora():
    model = CLIPLoRA(**TINY)
    with torch.no_grad():
        for parameter in model.lora_parameters:
            parameter.normal_(std=0.3)  # B away from 0: the adapters change both towers
    return model


def _features(n: int, dim: int, views: int | None = None) -> torch.Tensor:
    shape = (n, views, dim) if views else (n, dim)
    return F.normalize(torch.randn(*shape), dim=-1)


def _linear_probe():
    model = LinearProbe(**TINY)
    dim = model.backbone.embed_dim
    labels = torch.arange(12) % 3
    model.fit_features(_features(12, dim), labels, _features(6, dim), torch.arange(6) % 3)
    return model


def _clap():
    model = CLAP(**TINY, epochs=5)
    model.fit_features(_features(9, model.backbone.embed_dim, views=2), torch.arange(9) % 3)
    return model


def _prolip():
    model = ProLIP(**TINY)
    with torch.no_grad():
        model.projection.add_(torch.randn_like(model.projection) * 0.1)  # the image tower's projection moved
    return model


def _tip_adapter(cls=TipAdapter):
    model = cls(**TINY)
    model.build_cache(_features(9, model.backbone.embed_dim, views=2), torch.arange(9) % 3)
    with torch.no_grad():
        model.cache_keys.add_(torch.randn_like(model.cache_keys) * 0.1)  # as after -F's training
    model.alpha.fill_(2.3)
    model.beta.fill_(4.1)
    return model


BUILDERS = {
    "CoOp": (_coop, LinearHead),
    "KgCoOp": (_kgcoop, LinearHead),
    "MoCoOp": (_mocoop, MixtureHead),
    "NoLA": (_nola, LinearHead),
    "CLIPLoRA": (_clip_lora, LinearHead),
    "CoCoOp": (_cocoop, ConditionalHead),
    "MaPLe": (_maple, LinearHead),
    "LinearProbe": (_linear_probe, LinearHead),
    "CLAP": (_clap, LinearHead),
    "ProLIP": (_prolip, LinearHead),
    "TipAdapter": (_tip_adapter, CacheHead),
    "TipAdapterF": (lambda: _tip_adapter(TipAdapterF), CacheHead),
}

# One method per kind of exported head (linear, mixture, cache, conditional) and of encoder change (visual
# prompts, LoRA, deep prompts), and the other methods the field compares against (KgCoOp).
ONE_PER_HEAD_KIND = ["CoOp", "KgCoOp", "MoCoOp", "NoLA", "CLIPLoRA", "MaPLe", "ProLIP", "TipAdapter", "CoCoOp"]
