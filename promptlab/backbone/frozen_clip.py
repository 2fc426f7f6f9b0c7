"""The frozen CLIP backbone.

It loads any open_clip model (by name and pretrained tag, or from a local weights file), keeps it
frozen and in eval mode, and exposes what prompt learning needs: image encoding, BPE tokenising,
and a text encoder driven by token *embeddings*, so learned context vectors can be spliced in.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from promptlab.backbone.deep_prompts import Provider, install_deep_prompts, install_image_deep_prompts
from promptlab.backbone.lora import AttentionLoRA, LoRASpec, install_lora, lora_deltas, merge_lora_deltas
from promptlab.backbone.preprocess import PreprocessConfig
from promptlab.backbone.source import BackboneError, is_custom_architecture, resolve_backbone
from promptlab.backbone.text_tower import TextTower
from promptlab.backbone.visual_prompts import install_visual_prompts, visual_prompts_disabled
from promptlab.backbone.weights import load_checked_weights

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).resolve().parents[1] / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)


def list_backbones() -> list[str]:
    """Names of every architecture open_clip knows, including promptlab's tiny test models."""
    return [name for name in open_clip.list_models() if not is_custom_architecture(name)]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks (weights files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FrozenCLIP(nn.Module):
    """A frozen open_clip CLIP model with a prompt-aware text encoder.

    Args:
        model_name: open_clip architecture name (``ViT-B-16``, ``RN50``, ``clip-tiny``...), or
            ``local-dir:/path`` / ``hf-hub:org/repo`` (a folder with ``open_clip_config.json`` and
            the weights, see :mod:`promptlab.backbone.source`).
        pretrained: open_clip pretrained tag (``openai``...) or None for random weights; ignored
            for ``local-dir:`` and ``hf-hub:`` backbones.
        weights_path: local weights file; takes precedence over downloading the tag's weights (the tag,
            if given, still selects the preprocessing).
        precision: weight precision of the frozen model.
        preprocess: overrides of the preprocessing (``size``, ``mean``, ``std``, ``interpolation``),
            for weights files that come without a config.
        model_cfg: the architecture config, when known already (exported classifiers record it).
        load_weights: False to build the architecture with random weights (the caller loads its own).
    """

    def __init__(
        self,
        model_name: str = "ViT-B-16",
        pretrained: str | None = "openai",
        weights_path: str | None = None,
        precision: str = "fp32",
        preprocess: dict | None = None,
        model_cfg: dict | None = None,
        load_weights: bool = True,
    ) -> None:
        super().__init__()
        source = resolve_backbone(model_name, pretrained, weights_path, model_cfg, preprocess, load_weights)
        self.model_name = model_name
        self.pretrained = None if model_name.startswith(("local-dir:", "hf-hub:")) else pretrained
        self.model_cfg = source.model_cfg
        self.weights_file = source.weights_file
        try:
            with _without_random_weights_warning():  # weights are loaded below, after their shapes are checked
                self.model = open_clip.create_model(
                    source.architecture,
                    precision=precision,
                    force_quick_gelu=bool(source.model_cfg.get("quick_gelu")),
                    force_preprocess_cfg=source.preprocess_cfg,
                    pretrained_text=False,  # a Hugging Face text tower's own weights: ours come below, whole
                )
        except (TypeError, KeyError, ValueError, RuntimeError) as error:
            if not is_custom_architecture(source.architecture):
                raise
            raise BackboneError(
                f"open_clip cannot build backbone {model_name!r} from its model_cfg ({type(error).__name__}: "
                f"{str(error)[:200]}); fix the config."
            ) from error
        if self.weights_file is not None:
            load_checked_weights(self.model, self.weights_file, model_name)
        self.preprocess = PreprocessConfig.from_open_clip(self.model.visual.preprocess_cfg)
        if self.weights_file is None and load_weights:
            log.info("Backbone %s has random weights (no pretrained tag or weights file).", model_name)
        elif self.weights_file is not None and not pretrained and source.preprocess_origin == "open_clip's defaults":
            log.info(
                "Backbone %s loads %s without a pretrained tag: images are normalised with mean %s and std %s, "
                "open_clip's defaults (set preprocess to change them).",
                model_name,
                self.weights_file,
                self.preprocess.mean,
                self.preprocess.std,
            )
        self._text = TextTower(self.model, source.architecture)
        self.lora_spec: LoRASpec | None = None  # the adapters a method installed (CLIP-LoRA)
        self.requires_grad_(False)
        self.eval()

    # -- frozen behaviour --------------------------------------------------------------------------

    def train(self, mode: bool = True) -> FrozenCLIP:
        """Stays in eval mode whatever Lightning asks: CLIP's dropout and norms must not change. Only the
        dropout of LoRA adapters a method installed follows ``mode``: it belongs to the method.
        """
        super().train(False)
        for module in self.modules():
            if isinstance(module, AttentionLoRA):
                module.train(mode)
        return self

    def tuned_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters a method chose to train (MoCoOp's optional LayerNorms, NoLA's prompts and
        LayerNorms), by name; empty while the backbone is fully frozen.
        """
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def set_text_checkpointing(self, enabled: bool) -> None:
        """Activation checkpointing in the text tower: each block is recomputed in the backward pass
        instead of storing its activations (less memory for many classes, about a third more time).
        """
        self._text.tower.transformer.grad_checkpointing = enabled

    def weights_sha256(self) -> str | None:
        """SHA-256 of the weights file, or None for random weights."""
        return file_sha256(self.weights_file) if self.weights_file else None

    # -- properties -------------------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint image-text embedding."""
        return self.model.visual.output_dim

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(learned temperature), 100 for OpenAI CLIP."""
        return self.model.logit_scale.exp()

    @property
    def context_length(self) -> int:
        """Token positions the text tower takes (77 for CLIP)."""
        return self._text.context_length

    @property
    def text_width(self) -> int:
        """Width of the text tower's token embeddings (the width of a context vector)."""
        return self._text.width

    # -- images -----------------------------------------------------------------------------------

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, D) features."""
        features = self.model.encode_image(images.to(next(self.model.visual.parameters()).dtype))
        return F.normalize(features, dim=-1) if normalize else features

    @property
    def image_projection(self) -> nn.Parameter:
        """The image tower's last projection, (width, D): ViT towers (ProLIP trains it).

        Raises:
            BackboneError: the tower has none (a ResNet's attention pool, a timm trunk).
        """
        projection = getattr(self.model.visual, "proj", None)
        if not isinstance(projection, nn.Parameter):
            raise BackboneError(
                f"Backbone {self.model_name!r} has no final image projection matrix (a ViT's visual.proj); "
                "use a ViT backbone such as ViT-B-16."
            )
        return projection

    def set_image_projection(self, projection: nn.Parameter) -> None:
        """Makes ``projection`` (width, D) the image tower's last projection: the same tensor, so training it
        trains the tower's (ProLIP).
        """
        if projection.shape != self.image_projection.shape:
            raise BackboneError(
                f"A projection of shape {tuple(projection.shape)} does not fit {self.model_name!r}'s "
                f"{tuple(self.image_projection.shape)}."
            )
        self.model.visual.proj = projection

    def encode_image_pre_projection(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, width) pooled features before the last projection."""
        visual, projection = self.model.visual, self.image_projection
        visual.proj = None  # open_clip's ViT skips the projection without one
        try:
            return self.model.encode_image(images.to(projection.dtype))
        finally:
            visual.proj = projection

    # -- the image tower as methods change it -------------------------------------------------------

    @property
    def image_encoder(self) -> nn.Module:
        """The image encoder module itself (the toy DINO starts from toy-clip's)."""
        return self.model.visual

    @property
    def image_width(self) -> int:
        """Token width of a ViT image encoder (the width of a visual prompt token)."""
        conv = getattr(self.model.visual, "conv1", None)
        if not isinstance(conv, nn.Conv2d) or not hasattr(self.model.visual, "class_embedding"):  # a ResNet has a conv1
            raise BackboneError(f"Backbone {self.model_name!r} has no ViT image encoder; use a ViT such as ViT-B-32.")
        return conv.out_channels

    def image_layernorms(self, blocks_only: bool = False) -> list[nn.LayerNorm]:
        """The image encoder's LayerNorms: every one, or (``blocks_only``) the transformer blocks' ln_1 / ln_2.

        Raises:
            BackboneError: ``blocks_only`` for an image encoder that is not a transformer.
        """
        visual = self.model.visual
        if blocks_only:
            visual = getattr(visual, "transformer", None)
            if visual is None:
                raise BackboneError(f"Backbone {self.model_name!r} has no transformer image encoder.")
        return [m for m in visual.modules() if isinstance(m, nn.LayerNorm)]

    def add_visual_prompts(self, prompts: nn.Parameter) -> None:
        """Runs the image encoder with ``prompts`` (P, image_width) inserted after the CLS token."""
        install_visual_prompts(self.model.visual, prompts)

    @property
    def visual_prompt_count(self) -> int:
        """P, the visual prompt tokens installed (0 for none)."""
        prompts = getattr(self.model.visual, "visual_prompts", None)
        return 0 if prompts is None else int(prompts.shape[0])

    def without_visual_prompts(self) -> contextlib.AbstractContextManager[None]:
        """A context in which the image encoder runs as if no prompts were installed."""
        return visual_prompts_disabled(self.model.visual)

    def image_encoder_state(self) -> dict[str, torch.Tensor]:
        """The image encoder's tensors (visual prompts included, LoRA adapters not: see :meth:`image_lora_deltas`),
        as an exported classifier embeds them.
        """
        return {k: v for k, v in self.model.visual.state_dict().items() if ".lora." not in k}

    def text_encoder_state(self) -> dict[str, torch.Tensor]:
        """The text tower's tensors (everything but the image encoder and LoRA adapters), as an exported
        classifier embeds them when its head runs the text tower (CoCoOp).
        """
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith("visual.") and ".lora." not in k}

    def load_text_encoder_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Loads tensors of :meth:`text_encoder_state`.

        Raises:
            KeyError: some of the text tower's tensors are missing.
        """
        missing = set(self.text_encoder_state()) - set(tensors)
        if missing:
            raise KeyError(f"the text tower's {', '.join(sorted(missing)[:3])}")
        self.model.load_state_dict(tensors, strict=False)

    @property
    def image_encoder_tuned(self) -> bool:
        """True when a method trains part of the image encoder itself (not its LoRA adapters, which a
        classifier file records apart): visual prompts, LayerNorms.
        """
        return any(p.requires_grad and ".lora." not in name for name, p in self.model.visual.named_parameters())

    # -- deep prompts (MaPLe) ----------------------------------------------------------------------------

    def add_deep_prompts(
        self, depth: int, image_tokens: Provider | None = None, text_tokens: Provider | None = None
    ) -> None:
        """Runs the towers with deep prompts in their first ``depth`` blocks (:mod:`promptlab.backbone.deep_prompts`).

        Args:
            depth: J, the blocks that take prompt tokens.
            image_tokens: () -> (J, n, image_width) tokens of the image tower (row 0 appended after the patches).
            text_tokens: () -> (J, n, text_width) tokens of the text tower (rows 1 to J - 1; row 0 is the
                prompt's own context, which the caller puts in the prompt embeddings).

        Raises:
            BackboneError: a ResNet image tower, or a depth beyond a tower's blocks.
        """
        if image_tokens is not None:
            install_image_deep_prompts(self.model.visual, depth, image_tokens)
        if text_tokens is not None:
            tower = self._text.tower
            install_deep_prompts(tower, list(tower.transformer.resblocks), depth, "start", text_tokens)

    def image_deep_prompt_tokens(self) -> torch.Tensor | None:
        """The (J, n, image_width) deep prompt tokens of the image tower, or None without them."""
        provider = getattr(self.model.visual, "deep_prompt_provider", None)
        return None if provider is None else provider().detach()

    def fix_image_deep_prompts(self, tokens: torch.Tensor) -> None:
        """Runs the image tower with fixed deep prompt tokens (J, n, image_width): an exported classifier."""
        visual = self.model.visual
        visual.register_buffer("deep_prompts", tokens, persistent=False)  # moves with the tower
        install_image_deep_prompts(visual, tokens.shape[0], lambda: visual.deep_prompts)

    # -- low-rank adapters (CLIP-LoRA) ----------------------------------------------------------------

    def add_lora(self, spec: LoRASpec) -> list[nn.Parameter]:
        """Installs trainable LoRA adapters (B = 0: the model is still CLIP) and returns their parameters;
        a backbone that has the same adapters already (a method rebuilt for other classes) keeps them.

        Raises:
            BackboneError: a tower without transformer blocks, a block outside the tower, or other
                adapters installed already.
        """
        if self.lora_spec is not None:
            if self.lora_spec != spec:
                raise BackboneError(
                    f"This backbone has other LoRA adapters already ({self.lora_spec}); build a new one."
                )
            return [p for name, p in self.named_parameters() if ".lora." in name]
        parameters = install_lora(self.model, spec)
        self.lora_spec = spec
        return parameters

    @property
    def image_lora(self) -> LoRASpec | None:
        """The adapters of the image tower, if a method installed some."""
        spec = self.lora_spec
        return spec if spec is not None and "image" in spec.towers else None

    def image_lora_deltas(self) -> dict[str, torch.Tensor]:
        """The image tower's adapters as ``{block}.{projection}.A`` / ``.B`` tensors ({} without adapters)."""
        spec = self.image_lora
        return {} if spec is None else lora_deltas(self.model, spec, "image")

    def merge_image_lora(self, spec: LoRASpec, tensors: dict[str, torch.Tensor]) -> None:
        """Adds recorded image-tower deltas into the frozen attention weights (an exported classifier)."""
        merge_lora_deltas(self.model, spec, "image", tensors)

    def load_image_encoder_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Loads tensors of :meth:`image_encoder_state`, installing visual prompts where they hold some."""
        if "visual_prompts" in tensors:
            prompts = nn.Parameter(torch.empty_like(tensors["visual_prompts"]), requires_grad=False)
            self.add_visual_prompts(prompts)
        self.model.visual.load_state_dict(tensors)

    # -- text -------------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> SimpleTokenizer:
        """The BPE tokenizer prompt learning needs (refused, with the reason, for other text towers)."""
        return self._text.require_prompt_learning()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (N, context_length) token ids, exactly as open_clip tokenises them."""
        return self._text.tokenizer(texts).to(self.model.logit_scale.device)

    def word_ids(self, text: str) -> list[int]:
        """BPE ids of ``text`` without start/end tokens (for building prompts piece by piece)."""
        return self.tokenizer.encode(text)

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(..., L) ids -> (..., L, width) frozen token embeddings."""
        return self._text.token_embedding(token_ids.to(self.model.logit_scale.device))

    def prompt_length(self, token_ids: torch.Tensor) -> int:
        """Shortest sequence length that gives exact features for these prompts.

        The text transformer is causal, so rows after the pooled (EOT) position never influence it:
        truncating to max(EOT index) + 1 is exact and much cheaper than the full 77 tokens.
        """
        if not self._text.causal_eot_pooling:
            return token_ids.shape[-1]
        return int(self._text.pool_index(token_ids).max()) + 1

    def pool_index(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(N, L) ids -> (N,) position whose output row becomes the text feature."""
        return self._text.pool_index(token_ids)

    def encode_prompts(
        self,
        embeddings: torch.Tensor,
        pool_index: torch.Tensor,
        normalize: bool = True,
        truncate: bool = True,
        chunk_size: int = 256,
        shared_prefix: int = 0,
    ) -> torch.Tensor:
        """Encodes prompts given as token embeddings.

        Prompts are sorted by EOT position and encoded in chunks, each truncated to its own longest
        prompt (exact for a causal text transformer), so one long class name does not make every
        prompt pay for its length. When the first ``shared_prefix`` embeddings are the same in every
        prompt, they are encoded once (:mod:`promptlab.backbone.shared_prefix`), also exact.

        Args:
            embeddings: (N, L, width) token embeddings, L <= context_length.
            pool_index: (N,) position of each prompt's EOT token.
            normalize: L2-normalise the output.
            truncate: drop the rows after each chunk's last EOT (ignored when it would not be exact).
            chunk_size: prompts per text-transformer call (bounds activation memory).
            shared_prefix: how many leading positions hold the same embeddings in every prompt (the
                caller guarantees it; only ``embeddings[0]``'s are read); 0 to encode every token.

        Returns:
            (N, D) text features, equal to open_clip ``encode_text`` of the same tokens.
        """
        truncate = truncate and self._text.causal_eot_pooling
        if not (truncate and 0 < shared_prefix <= int(pool_index.min()) and self._text.supports_shared_prefix):
            shared_prefix = 0
        order = pool_index.argsort() if truncate else torch.arange(len(pool_index), device=pool_index.device)
        chunks = []
        for index in order.split(chunk_size):
            chunk_index = pool_index[index]
            length = int(chunk_index.max()) + 1 if truncate else embeddings.shape[1]
            chunks.append(self._text.encode(embeddings[index, :length], chunk_index, shared_prefix))
        features = torch.cat(chunks)[order.argsort()]  # back to the input order
        return F.normalize(features, dim=-1) if normalize else features

    def encode_prefixed_prompts(
        self, prefixes: torch.Tensor, suffixes: torch.Tensor, pool_index: torch.Tensor, normalize: bool = True
    ) -> torch.Tensor:
        """Encodes every prompt made of one of G prefixes and one of C suffixes (CoCoOp: a context per
        image before each class's tokens), each prefix once (exact for a causal text transformer).

        Args:
            prefixes: (G, P, width) embeddings of the first tokens of each group of prompts.
            suffixes: (C, S, width) embeddings of the remaining tokens of each prompt, truncated after the
                last EOT (:meth:`prompt_length`).
            pool_index: (C,) EOT position of each suffix's prompt, counted from the start of the prompt.
            normalize: L2-normalise the output.

        Returns:
            (G, C, D) text features, equal to encoding each whole prompt.
        """
        features = self._text.encode_prefixed(prefixes, suffixes, pool_index)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_token_ids(self, token_ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(N, context_length) ids -> (N, D) features, truncated to the last EOT when exact."""
        if not self._text.supports_embeddings:
            features = self.model.encode_text(token_ids)
            return F.normalize(features, dim=-1) if normalize else features
        token_ids = token_ids[:, : self.prompt_length(token_ids)]  # embed only what is encoded
        return self.encode_prompts(self.embed_tokens(token_ids), self.pool_index(token_ids), normalize)

    def encode_text(self, texts: list[str], normalize: bool = True, batch_size: int = 256) -> torch.Tensor:
        """Texts -> (N, D) features, in batches (1000 classes x 80 templates would not fit at once)."""
        chunks = [
            self.encode_token_ids(self.tokenize(texts[i : i + batch_size]), normalize)
            for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(chunks)


class _DropRandomWeightsWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def _without_random_weights_warning() -> Iterator[None]:
    """Hides open_clip's root-logger warning that a model it built has random weights."""
    drop = _DropRandomWeightsWarning()
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


def create_trainable_clip(model_name: str) -> tuple[Any, TextTower, Callable[[list[str]], torch.Tensor]]:
    """A CLIP of a registered architecture with random weights, in training mode, with its text tower
    and tokenizer: what pretraining promptlab's own toy models starts from.
    """
    model = open_clip.create_model(model_name)
    return model.train(), TextTower(model, model_name), open_clip.get_tokenizer(model_name)
