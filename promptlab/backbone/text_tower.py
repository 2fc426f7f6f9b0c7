"""The text tower of an open_clip model as prompt learning drives it: token embeddings in, features out."""

from __future__ import annotations

from typing import Any

import open_clip
import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from promptlab.backbone.deep_prompts import begin_deep_prompts
from promptlab.backbone.shared_prefix import encode_with_shared_prefix, supports_shared_prefix
from promptlab.backbone.source import BackboneError


class TextTower:
    """The parts of an open_clip text tower that prompt learning drives (CLIP or CustomTextCLIP).

    Attributes are read from the tower at each call: ``module.to(device)`` replaces buffers such as
    ``attn_mask``, so holding on to them would leave stale copies on the old device.
    """

    def __init__(self, model: nn.Module, model_name: str) -> None:
        # open_clip's CLIP keeps the text parts on the model; CustomTextCLIP in `model.text`.
        self.tower: Any = getattr(model, "text", model)  # open_clip modules, read by attribute
        self.unsupported_reason: str | None = None
        if self.tower is not model and not isinstance(self.tower, open_clip.transformer.TextTransformer):
            self.unsupported_reason = f"its text tower is a {type(self.tower).__name__} (a Hugging Face text model)"
        elif getattr(self.tower, "cls_emb", None) is not None:
            self.unsupported_reason = "its text tower appends a CLS token (CoCa-style)"
        self.context_length = getattr(self.tower, "context_length", 77)
        self.tokenizer = open_clip.get_tokenizer(model_name, context_length=self.context_length)
        self.pool_type = getattr(self.tower, "text_pool_type", None) or getattr(self.tower, "pool_type", "argmax")
        self.eos_id: Any = getattr(self.tower, "text_eos_id", None) or getattr(self.tower, "eos_id", None)

    @property
    def width(self) -> int:
        """Width of the token embeddings."""
        return self.tower.token_embedding.embedding_dim

    def token_embedding(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids -> (N, L, width) embeddings."""
        self.require_prompt_learning()
        return self.tower.token_embedding(token_ids)

    @property
    def supports_embeddings(self) -> bool:
        """True when prompts can be driven by embeddings (open_clip's own text tower and BPE)."""
        return self.unsupported_reason is None and isinstance(self.tokenizer, SimpleTokenizer)

    def require_prompt_learning(self) -> SimpleTokenizer:
        """The tokenizer, or one sentence on why this text tower cannot learn prompts."""
        if self.unsupported_reason:
            raise BackboneError(
                f"Prompt learning is not supported for this backbone: {self.unsupported_reason}. "
                "Use a CLIP model with open_clip's own text transformer (e.g. ViT-B-16, RN50)."
            )
        if not isinstance(self.tokenizer, SimpleTokenizer):
            raise BackboneError(
                "Prompt learning needs open_clip's CLIP BPE tokenizer, this backbone uses "
                f"{type(self.tokenizer).__name__}; use a CLIP model such as ViT-B-16 or RN50."
            )
        return self.tokenizer

    @property
    def causal_eot_pooling(self) -> bool:
        """True when the feature is one token's output under a causal mask: later tokens never matter."""
        return self.is_causal and self.pool_type in ("argmax", "eos", "first")

    @property
    def supports_shared_prefix(self) -> bool:
        """True when the shared first tokens of many prompts can be encoded once, exactly."""
        return self.pool_type in ("argmax", "eos") and supports_shared_prefix(self.tower.transformer)

    @property
    def is_causal(self) -> bool:
        """True when the attention mask is exactly the causal (upper-triangular -inf) mask."""
        mask = getattr(self.tower, "attn_mask", None)
        if mask is None or mask.dim() != 2:
            return False
        expected = torch.full_like(mask, float("-inf")).triu(1)
        return bool(torch.equal(mask, expected))

    def pool_index(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids -> (N,) position of the token whose state is the text feature."""
        if self.pool_type == "argmax":  # EOT has the highest id in OpenAI's BPE
            return token_ids.argmax(dim=-1)
        if self.pool_type == "eos":
            return (token_ids == self.eos_id).int().argmax(dim=-1)
        if self.pool_type == "first":
            return torch.zeros(token_ids.shape[0], dtype=torch.long, device=token_ids.device)
        return torch.full((token_ids.shape[0],), token_ids.shape[-1] - 1, device=token_ids.device)

    def encode(self, embeddings: torch.Tensor, pool_index: torch.Tensor, shared_prefix: int = 0) -> torch.Tensor:
        """(N, L, width) embeddings -> (N, D) features; the first ``shared_prefix`` positions encoded once."""
        self.require_prompt_learning()
        tower = self.tower
        tokens = begin_deep_prompts(tower)
        if tokens is not None and shared_prefix < 1 + tokens.shape[1]:
            shared_prefix = 0  # the deep prompts' positions must lie in the shared prefix
        length = embeddings.shape[1]
        positional = tower.positional_embedding
        x = embeddings.to(positional.dtype) + positional[:length]  # (N, L, width)
        if shared_prefix:
            x = encode_with_shared_prefix(
                tower.transformer, x[:1, :shared_prefix], x[:, shared_prefix:], tower.transformer.grad_checkpointing
            )  # (N, L - P, width)
            pool_index = pool_index - shared_prefix
        else:
            x = self._transformer(x)
        return self._pool_and_project(x, pool_index)

    def encode_prefixed(self, prefixes: torch.Tensor, suffixes: torch.Tensor, pool_index: torch.Tensor) -> torch.Tensor:
        """Every prompt ``cat(prefixes[g], suffixes[c])``: (G, P, width) and (C, S, width) embeddings and the
        (C,) pool positions in the whole prompt -> (G, C, D) features; each prefix is encoded once.
        """
        self.require_prompt_learning()
        tower = self.tower
        (groups, p), n = prefixes.shape[:2], suffixes.shape[0]
        positional = tower.positional_embedding
        prefix = prefixes.to(positional.dtype) + positional[:p]  # (G, P, width)
        suffix = suffixes.to(positional.dtype) + positional[p : p + suffixes.shape[1]]  # (C, S, width)
        suffix = suffix.unsqueeze(0).expand(groups, -1, -1, -1).flatten(0, 1)  # (G * C, S, width)
        if self.supports_shared_prefix:
            x = encode_with_shared_prefix(tower.transformer, prefix, suffix, tower.transformer.grad_checkpointing)
        else:
            whole = prefix.unsqueeze(1).expand(-1, n, -1, -1).flatten(0, 1)  # (G * C, P, width)
            x = self._transformer(torch.cat([whole, suffix], dim=1))[:, p:]
        features = self._pool_and_project(x, (pool_index - p).repeat(groups))  # (G * C, D)
        return features.unflatten(0, (groups, n))

    def _transformer(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, width) input states -> output states, under the tower's attention mask."""
        tower, length = self.tower, x.shape[1]
        mask = tower.attn_mask[:length, :length] if tower.attn_mask is not None else None
        return tower.transformer(x, attn_mask=mask)

    def _pool_and_project(self, x: torch.Tensor, pool_index: torch.Tensor) -> torch.Tensor:
        """(N, L, width) output states -> (N, D) features: the pooled token's state, normalised and projected."""
        tower = self.tower
        x = tower.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), pool_index]  # (N, width)
        if isinstance(tower.text_projection, nn.Linear):
            return tower.text_projection(x)
        if tower.text_projection is not None:
            return x @ tower.text_projection
        return x
