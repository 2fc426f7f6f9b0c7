"""CoOp against a transcription (in our own code) of the reference's prompt construction
(KaiyangZhou/CoOp, ``trainers/coop.py``, ``PromptLearner``): exact where promptlab agrees, and the
three places where it differs by decision, each pinned (docs/methods/coop.md,
"Three differences from the reference code").
"""

import pytest
import torch

from promptlab.backbone import FrozenCLIP
from promptlab.methods import CoOp

ORDINARY = ["dog", "golden_retriever", "st. bernard"]
MERGED = ["kite (bird of prey)", "C++"]  # their last token merges with the period: ")." and "+."


def reference_prompts(
    backbone: FrozenCLIP, class_names: list[str], ctx: torch.Tensor | None, n_ctx: int, position: str, ctx_init=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the reference builds: (C, 77, width) prompt embeddings, (C,) EOT positions and its
    learnable context.

    - ``ctx_init``: the context length is the phrase's number of *words*, the context is the first
      that many *token* embeddings of the phrase, shared by all classes (class-specific is ignored).
    - Prompts are ``prefix + " " + name + "."`` tokenised whole; the class part for the middle and
      front positions is cut from that by the token count of the name alone.
    """
    names = [name.replace("_", " ") for name in class_names]
    if ctx_init:
        phrase = ctx_init.replace("_", " ")
        n_ctx = len(phrase.split(" "))
        ctx = backbone.embed_tokens(backbone.tokenize([phrase]))[0, 1 : 1 + n_ctx]  # (n_ctx, width)
        prefix_text = phrase
    else:
        prefix_text = " ".join(["X"] * n_ctx)
    tokens = backbone.tokenize([f"{prefix_text} {name}." for name in names])  # (C, 77)
    embedding = backbone.embed_tokens(tokens)
    prefix, suffix = embedding[:, :1], embedding[:, 1 + n_ctx :]
    contexts = ctx.expand(len(names), -1, -1) if ctx.dim() == 2 else ctx  # (C, n_ctx, width)
    half = n_ctx // 2
    rows = []
    for i, name in enumerate(names):
        name_len = len(backbone.word_ids(name))
        class_i, rest_i = suffix[i, :name_len], suffix[i, name_len:]
        if position == "end":
            rows.append(torch.cat([prefix[i], contexts[i], suffix[i]]))
        elif position == "middle":
            rows.append(torch.cat([prefix[i], contexts[i, :half], class_i, contexts[i, half:], rest_i]))
        else:
            rows.append(torch.cat([prefix[i], class_i, contexts[i], rest_i]))
    return torch.stack(rows), tokens.argmax(dim=-1), ctx


def reference_features(backbone, *args, **kwargs) -> torch.Tensor:
    prompts, eot, _ = reference_prompts(backbone, *args, **kwargs)
    return backbone.encode_prompts(prompts, eot, truncate=False)  # the full 77 tokens, as the reference


def coop(class_names, **kwargs) -> CoOp:
    torch.manual_seed(0)
    model = CoOp(class_names=class_names, backbone="clip-tiny", pretrained=None, **kwargs)
    with torch.no_grad():
        model.ctx.normal_(std=0.5)  # far from any word, as after training
    return model


@pytest.mark.parametrize("class_specific", [False, True])
@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_ordinary_names_match_the_reference_at_every_position(position, class_specific):
    model = coop(ORDINARY, n_ctx=4, class_position=position, class_specific=class_specific)
    with torch.no_grad():
        ours = model.class_features()
        reference = reference_features(model.backbone, ORDINARY, model.ctx, 4, position)
    assert (ours - reference).abs().max() < 1e-5


def test_names_ending_in_punctuation_match_the_reference_at_the_end():
    model = coop(MERGED, n_ctx=4)
    with torch.no_grad():
        reference = reference_features(model.backbone, MERGED, model.ctx, 4, "end")
        assert (model.class_features() - reference).abs().max() < 1e-5


@pytest.mark.parametrize("position", ["middle", "front"])
def test_decision_1_the_period_stays_after_the_second_context_half(position):
    """Ours: [SOS] ctx [kite ( bird of prey )] ctx [.] [EOS]. The reference cuts the class part of
    "kite (bird of prey)." by the name's own token count, so its class part ends in the merged ")."
    token and nothing is left between the context and EOS (for "C++", "+." even splits the name)."""
    model = coop(MERGED + ORDINARY, n_ctx=4, class_position=position)
    backbone = model.backbone
    period = backbone.word_ids(".")[0]
    for i, name in enumerate(model.prompt_class_names):
        # the token before EOS is "." for every name, and the name's own tokens sit between the contexts
        layout_ids = _layout_ids(model, i)
        assert layout_ids[int(model.pool_index[i]) - 1] == period
        assert _contains(layout_ids, backbone.word_ids(name))
    with torch.no_grad():
        ours = model.class_features()
        reference = reference_features(backbone, MERGED + ORDINARY, model.ctx, 4, position)
    differences = (ours - reference).abs().amax(dim=-1)
    assert (differences[: len(MERGED)] > 1e-3).all()  # the decision: different prompts for these names
    assert (differences[len(MERGED) :] < 1e-5).all()  # and only for these


def test_decision_2_an_init_phrase_with_class_specific_contexts_gives_every_class_its_own():
    """The reference ignores class-specific contexts when given an init phrase (one shared context);
    ours copies the phrase to every class, as class-specific contexts without a phrase. Both start
    from the same prompts; only ours can then learn a different context per class."""
    model = CoOp(
        class_names=ORDINARY, backbone="clip-tiny", pretrained=None, ctx_init="a photo of a", class_specific=True
    )
    _, _, reference_ctx = reference_prompts(model.backbone, ORDINARY, None, 0, "end", ctx_init="a photo of a")
    assert reference_ctx.shape == (4, model.backbone.text_width)  # the reference: one shared context
    assert model.ctx.shape == (len(ORDINARY), 4, model.backbone.text_width)  # ours: one per class
    with torch.no_grad():
        reference = reference_features(model.backbone, ORDINARY, None, 0, "end", ctx_init="a photo of a")
        assert (model.class_features() - reference).abs().max() < 1e-5
    model.class_features()[0].sum().backward()  # a loss on class 0 alone
    assert model.ctx.grad[0].abs().sum() > 0 and model.ctx.grad[1:].abs().sum() == 0


def test_decision_3_every_token_of_a_multi_token_init_word_is_learned():
    """ "itap of a" is 3 words and 4 tokens (it, ap, of, a). The reference learns 3 vectors (it, ap,
    of) and keeps "a" fixed in the prompt; ours learns all 4. Same prompts before training."""
    model = CoOp(class_names=ORDINARY, backbone="clip-tiny", pretrained=None, ctx_init="itap of a")
    _, _, reference_ctx = reference_prompts(model.backbone, ORDINARY, None, 0, "end", ctx_init="itap of a")
    assert reference_ctx.shape[0] == 3 and model.n_ctx == 4
    with torch.no_grad():
        reference = reference_features(model.backbone, ORDINARY, None, 0, "end", ctx_init="itap of a")
        assert (model.class_features() - reference).abs().max() < 1e-5
    model.class_features().sum().backward()
    assert (model.ctx.grad.abs().sum(dim=-1) > 0).all()  # "a", the 4th, learns too


def test_the_shipped_init_phrase_is_where_reference_and_promptlab_agree():
    """configs/coop/rn50_ctx_init.yaml's "a photo of a": one token per word, so both learn the same
    4 vectors from the same prompts (with a shared context, as that config has)."""
    model = CoOp(class_names=ORDINARY, backbone="clip-tiny", pretrained=None, ctx_init="a photo of a")
    _, _, reference_ctx = reference_prompts(model.backbone, ORDINARY, None, 0, "end", ctx_init="a photo of a")
    assert model.n_ctx == reference_ctx.shape[0] == 4 and not model.hparams.class_specific
    assert torch.allclose(model.ctx, reference_ctx)
    with torch.no_grad():
        reference = reference_features(model.backbone, ORDINARY, None, 0, "end", ctx_init="a photo of a")
        assert (model.class_features() - reference).abs().max() < 1e-5


def _layout_ids(model: CoOp, row: int) -> list[int]:
    """The token ids of one of the model's prompts, context slots as -1."""
    ids = _token_ids(model)[row].tolist()
    for slot in model.context_slots[row].tolist():
        ids[slot] = -1
    return ids


def _token_ids(model: CoOp) -> torch.Tensor:
    from promptlab.methods._prompts import build_prompt_layout, coop_segments

    position = model.hparams.class_position
    return build_prompt_layout(model.backbone, model.prompt_class_names, coop_segments(model.n_ctx, position)).token_ids


def _contains(sequence: list[int], part: list[int]) -> bool:
    return any(sequence[i : i + len(part)] == part for i in range(len(sequence) - len(part) + 1))
