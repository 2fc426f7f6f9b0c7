"""Looking inside a learned classifier: CoOp's context vectors as words, per-image test predictions."""

from __future__ import annotations

import torch

from promptlab.backbone import FrozenCLIP


@torch.no_grad()
def nearest_words(context: torch.Tensor, backbone: FrozenCLIP, k: int = 3) -> list[list[tuple[str, float]]]:
    """The vocabulary words whose token embeddings lie nearest (Euclidean) to each context vector.

    This is how the CoOp paper reads its learned contexts; the words are rarely a readable phrase,
    since the vectors live between words.

    Args:
        context: (n_ctx, width) learned context vectors (one class's, or the shared ones).
        backbone: the frozen CLIP whose token embeddings the context was learned against.
        k: words per context vector.

    Returns:
        Per context vector, ``k`` (word, distance) pairs, nearest first.
    """
    tokenizer = backbone.tokenizer
    vocabulary = backbone.embed_tokens(torch.arange(len(tokenizer.encoder))).float()  # (V, width)
    distances = torch.cdist(context.float().to(vocabulary.device), vocabulary)  # (n_ctx, V)
    values, indices = distances.topk(k, dim=-1, largest=False)
    decode = lambda i: tokenizer.decoder[int(i)].replace("</w>", "")  # noqa: E731
    return [
        [(decode(i), float(d)) for d, i in zip(row_d, row_i, strict=True)]
        for row_d, row_i in zip(values, indices, strict=True)
    ]
