"""Class features from hand-written text: the one template-ensemble head of zero-shot CLIP, NoLA's
description classifier, MoCoOp's prototypes and Tip-Adapter's CLIP branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from promptlab.backbone import OPENAI_IMAGENET_TEMPLATES, FrozenCLIP
from promptlab.data.catalog import ENSEMBLE_TEMPLATES

TemplateChoice = str | list[str]


def resolve_templates(templates: TemplateChoice, dataset_template: str) -> list[str]:
    """Template names (``dataset``, ``ensemble``, ``openai``) or a list -> template strings, each
    checked to contain ``{}``.
    """
    named = {
        "dataset": [dataset_template],
        "ensemble": list(ENSEMBLE_TEMPLATES),
        "openai": [t("{}") for t in OPENAI_IMAGENET_TEMPLATES],
    }
    if isinstance(templates, str) and templates not in named:
        raise ValueError(f"Unknown templates {templates!r}; use {', '.join(named)} or a list of templates with '{{}}'.")
    resolved = named[templates] if isinstance(templates, str) else list(templates)
    bad = [t for t in resolved if "{}" not in t]
    if not resolved or bad:
        raise ValueError(f"Template {bad[0] if bad else ''!r} has no '{{}}' for the class name; add one.")
    return resolved


@torch.no_grad()
def ensemble_features(
    backbone: FrozenCLIP,
    class_names: list[str],
    templates: list[str],
    extra_texts: list[list[str]] | None = None,
) -> torch.Tensor:
    """(C, D): per class, the renormalised mean of the normalised features of its texts (CLIP's prompt
    ensembling): every template filled with the class name (``{}`` replaced), plus ``extra_texts[c]``
    (NoLA's descriptions).
    """
    texts, owner = [], []
    for c, name in enumerate(class_names):
        filled = [t.replace("{}", name) for t in templates] + (list(extra_texts[c]) if extra_texts else [])
        texts += filled
        owner += [c] * len(filled)
    features = backbone.encode_text(texts)  # (sum of texts, D), normalised
    owner_index = torch.tensor(owner, device=features.device)
    sums = torch.zeros(len(class_names), features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, owner_index, features)
    return F.normalize(sums, dim=-1)  # the mean's direction: dividing by the count would not change it
