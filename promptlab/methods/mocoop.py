"""MoCoOp: a mixture of soft prompts, one per group of hand-written templates, chosen per image by a router."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from promptlab.deploy.heads import Head, MixtureHead, mixture_logits, route
from promptlab.methods._base import COOP_EPOCHS, CLIPClassifier
from promptlab.methods._contract import Bars, Panel, Setting, Table, ToyDefaults
from promptlab.methods._prompts import build_prompt_layout, splice_context
from promptlab.methods._reports import plot_routing
from promptlab.methods._templates import ensemble_features
from promptlab.run_folder import run_dir

# The groups every reference dataset config shares (its SUN397 set): for custom datasets and the toy world.
GENERIC_TEMPLATE_GROUPS: list[list[str]] = [
    ["a photo of a {}."],
    ["a photo of many {}."],
    [
        "a low resolution photo of the {}.",
        "a low resolution photo of a {}.",
        "a pixelated photo of the {}.",
        "a pixelated photo of a {}.",
    ],
    ["a good photo of the {}.", "a good photo of a {}."],
]
ROUTING_FILE = "routing.json"


def split_template(template: str) -> tuple[str, str]:
    """``"a photo of a {}, a type of flower."`` -> (before, after): ``"a photo of a"``, ``", a type of flower"``.

    The words before and after the class name become an expert's learnable context. Periods are
    removed, as the reference removes them from its expert prompts (only its hard prototypes keep them).
    """
    if template.count("{}") != 1:
        raise ValueError(f"MoCoOp template {template!r} must contain exactly one '{{}}' for the class name.")
    before, after = template.replace(".", "").split("{}")
    return before.strip(), after.rstrip()


class MoCoOp(CLIPClassifier):
    """Mixture of prompts with a router (MoCoOp), over the shared frozen backbone.

    Each template group gets one expert: a soft prompt initialised from the group's first template
    without its periods (context before and after the class name, counted in tokens). A linear router
    on the normalised image feature picks the ``top_k`` experts; the image's class features are their
    softmax-weighted mixture. Training adds a gating loss (route each image towards the groups whose
    hard prototype of its class it resembles most) and a text loss (each expert's class features stay
    nearest their own group's hard prototypes).

    Args:
        template_groups: groups of templates with one ``{}`` each (default: :data:`GENERIC_TEMPLATE_GROUPS`).
        top_k: experts mixed per image (reference: 2).
        text_loss_weight: weight of the text-to-text loss (reference: 5 or 10).
        gate_loss_weight: weight of the gating loss (reference: 1).
        text_loss_scale: logit scale of the text loss: 1 (unscaled, as the MoCoOp code) or 100 (as LASP).
        gate_boost: added to the two most similar groups' scores in the gating target (reference: 10).
        correction: learn the correction vector added to every text feature before normalisation (LASP).
        tune_image_layernorms: also tune the image encoder's LayerNorms (the reference does; off by
            default so the backbone stays frozen and shared; an exported classifier then embeds the tower).
        layernorm_lr_factor: learning-rate factor of those LayerNorms (reference: 0.1).
        **kwargs: see :class:`CLIPClassifier` (reference optimisation: lr 0.032, 3 warm-up epochs).
    """

    key = "mocoop"
    label = "MoCoOp"
    about = "Learns several soft prompts and picks the best ones per image; steadier than CoOp."
    settings = (Setting("lr", "Learning rate", 0.002, 1e-5, 1.0),)
    toy = ToyDefaults("mocoop.yaml")
    epochs_by_shots = COOP_EPOCHS
    trainer_args = {"gradient_clip_val": 1.0}

    # buffers registered in __init__
    prototypes: torch.Tensor

    def __init__(
        self,
        template_groups: list[list[str]] | None = None,
        top_k: int = 2,
        text_loss_weight: float = 5.0,
        gate_loss_weight: float = 1.0,
        text_loss_scale: float = 1.0,
        gate_boost: float = 10.0,
        correction: bool = True,
        tune_image_layernorms: bool = False,
        layernorm_lr_factor: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        groups = [list(g) for g in (template_groups or GENERIC_TEMPLATE_GROUPS)]
        if not groups or any(not g for g in groups):
            raise ValueError("MoCoOp template_groups must be a non-empty list of non-empty template lists.")
        if top_k < 1:
            raise ValueError(f"MoCoOp top_k must be at least 1 (got {top_k}).")
        self.template_groups = groups
        backbone, names = self.backbone, self.prompt_class_names

        self.contexts = nn.ParameterList()
        self.shared_prefixes: list[int] = []
        for e, group in enumerate(groups):
            before, after = split_template(group[0])
            before_ids = backbone.word_ids(before) if before else []
            after_ids = backbone.word_ids(after) if after else []
            ctx = backbone.embed_tokens(torch.tensor(before_ids + after_ids, dtype=torch.long)).clone()
            self.contexts.append(nn.Parameter(ctx.float().reshape(len(before_ids) + len(after_ids), -1)))
            layout = build_prompt_layout(backbone, names, [len(before_ids), "{}", len(after_ids)])
            tokens = backbone.embed_tokens(layout.token_ids).detach()
            self.register_buffer(f"expert{e}_tokens", tokens, persistent=False)  # (C, L_e, width)
            self.register_buffer(f"expert{e}_slots", layout.context_slots, persistent=False)  # (C, n_ctx_e)
            self.register_buffer(f"expert{e}_pool", layout.pool_index, persistent=False)  # (C,)
            self.shared_prefixes.append(layout.shared_prefix)  # an expert's context is shared by all classes

        # Frozen hard prototypes P[G, C, D]: group means of normalised template features.
        prototypes = torch.stack([ensemble_features(backbone, names, group) for group in groups])
        self.register_buffer("prototypes", prototypes, persistent=False)
        self.router = nn.Linear(backbone.embed_dim, len(groups))
        self.correction = nn.Parameter(torch.zeros(1, backbone.embed_dim), requires_grad=correction)
        if tune_image_layernorms:  # the reference's ln_1 / ln_2 of every image transformer block
            for norm in backbone.image_layernorms(blocks_only=True):
                norm.requires_grad_(True)
        self._routing_counts: torch.Tensor | None = None  # (C, E) at test time
        self._last_route: torch.Tensor | None = None

    @property
    def n_experts(self) -> int:
        """E, the experts (one per template group)."""
        return len(self.template_groups)

    # -- features ---------------------------------------------------------------------------------

    def expert_features(self, expert: int) -> torch.Tensor:
        """(C, D) normalised class features of one expert."""
        tokens, slots = getattr(self, f"expert{expert}_tokens"), getattr(self, f"expert{expert}_slots")
        embeddings = splice_context(tokens, slots, self.contexts[expert])
        pool, prefix = getattr(self, f"expert{expert}_pool"), self.shared_prefixes[expert]
        features = self.backbone.encode_prompts(embeddings, pool, normalize=False, shared_prefix=prefix)
        return F.normalize(features + self.correction.to(features.dtype), dim=-1)

    def class_features(self) -> torch.Tensor:
        """(E, C, D) normalised class features of every expert."""
        return torch.stack([self.expert_features(e) for e in range(self.n_experts)])

    @override
    def logits(self, image_features: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
        weights, indices = route(self.router(image_features), self.hparams.top_k)
        self._last_route = indices.detach()
        return mixture_logits(image_features, class_features, weights, indices, self.backbone.logit_scale)

    @torch.no_grad()
    @override
    def export_head(self) -> Head:
        return MixtureHead(
            self.class_features().float(),  # (E, C, D)
            self.router.weight.detach().float(),
            self.router.bias.detach().float(),
            self.hparams.top_k,
            float(self.backbone.logit_scale),
        )

    # -- training ---------------------------------------------------------------------------------

    def training_losses(self, image_features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Classification, gating and text losses for (B, D) normalised image features, and their sum."""
        experts = self.class_features()  # (E, C, D)
        router_logits = self.router(image_features)  # (B, E)
        weights, indices = route(router_logits, self.hparams.top_k)
        logits = mixture_logits(image_features, experts, weights, indices, self.backbone.logit_scale)

        # Gating target: similarity to each group's prototype of the true class, top-2 boosted.
        similarity = torch.einsum("bd,gbd->bg", image_features, self.prototypes[:, labels].to(image_features.dtype))
        top2 = similarity.topk(min(2, self.n_experts), dim=-1).indices
        target = (similarity + torch.zeros_like(similarity).scatter(1, top2, self.hparams.gate_boost)).softmax(-1)
        # Not detached, as the reference: with tuned image LayerNorms the target's gradient reaches them.
        gate = F.cross_entropy(router_logits, target)

        # Text loss: expert g's class c must be nearest group g's prototype of class c.
        text_logits = self.hparams.text_loss_scale * torch.einsum("ecd,ekd->eck", experts, self.prototypes)
        n_classes = experts.shape[1]
        targets = torch.arange(n_classes, device=experts.device).repeat(self.n_experts)
        text = F.cross_entropy(text_logits.reshape(-1, n_classes), targets)
        cls = F.cross_entropy(logits, labels)
        loss = cls + self.hparams.text_loss_weight * text + self.hparams.gate_loss_weight * gate
        return {"loss": loss, "logits": logits, "cls": cls, "gate": gate, "text": text}

    @override
    def trainable_parameters(self) -> list[dict]:
        backbone = list(self.backbone.tuned_parameters().values())
        own = [p for name, p in self.named_parameters() if p.requires_grad and not name.startswith("backbone.")]
        groups = [{"params": own}]
        if backbone:
            groups.append({"params": backbone, "lr": self.hparams.lr * self.hparams.layernorm_lr_factor})
        return groups

    # -- inspection: which experts the router picks -----------------------------------------------

    @override
    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._routing_counts = torch.zeros(len(self.class_names), self.n_experts, dtype=torch.long)

    @override
    def test_step(self, batch, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        if batch is None or self._routing_counts is None or self._last_route is None:
            return
        labels = batch[1].cpu()
        chosen = self._last_route.cpu()  # (B, k)
        self._routing_counts.index_put_(
            (labels.repeat_interleave(chosen.shape[1]), chosen.flatten()),
            torch.ones(chosen.numel(), dtype=torch.long),
            accumulate=True,
        )

    @override
    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self._routing_counts is None:
            return
        counts = self._routing_counts.to(self.device)
        counts = self.trainer.strategy.reduce(counts, reduce_op="sum").cpu()  # summed over all processes
        out_dir = run_dir(self.trainer)
        if out_dir is not None:
            experts = [group[0] for group in self.template_groups]
            report = routing_report(counts, self.class_names, experts)
            (out_dir / ROUTING_FILE).write_text(json.dumps(report, indent=2))
            plot_routing(report, out_dir / "routing.png")
        self._routing_counts = None

    def inspection_panels(self, log_dir: Path, metrics: dict) -> list[Panel]:
        """Which expert prompts the router picks, overall and per true class."""
        try:
            routing = json.loads((log_dir / ROUTING_FILE).read_text())
        except (OSError, ValueError):
            return []
        experts = routing["experts"]
        per_class = [
            {"class": name, **{f"E{e}: {expert}": row[e] for e, expert in enumerate(experts)}}
            for name, row in routing["per_class"].items()
        ]
        return [
            Bars(
                "What MoCoOp learned: which expert prompts the router picks",
                dict(zip(experts, routing["overall"], strict=True)),
                axis="share of picks",
            ),
            Table("", per_class, caption="Share of picks per true class"),
        ]


def routing_report(counts: torch.Tensor, class_names: list[str], experts: list[str]) -> dict:
    """Share of router picks per expert, overall and per class, from (C, E) pick counts."""
    per_class = counts.float() / counts.sum(1, keepdim=True).clamp(min=1)
    overall = counts.sum(0).float() / counts.sum().clamp(min=1)
    return {
        "experts": experts,
        "overall": [round(float(v), 4) for v in overall],
        "per_class": {
            name: [round(float(v), 4) for v in row] for name, row in zip(class_names, per_class, strict=True)
        },
        "picks": int(counts.sum()),
    }
