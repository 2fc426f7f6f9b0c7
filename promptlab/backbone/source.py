"""Where a backbone's architecture, preprocessing and weights come from.

Every request is resolved to one :class:`BackboneSource` before a model is built:

- a name that open_clip or promptlab ships (``ViT-B-16``, ``toy-clip``), with a pretrained tag
  and/or a local weights file;
- ``local-dir:/path``: a folder holding ``open_clip_config.json`` (``model_cfg`` and
  ``preprocess_cfg``) and a weights file, open_clip's own convention;
- ``hf-hub:org/repo``: the same folder on the Hugging Face Hub, downloaded once into its cache;
- an architecture config given outright (exported classifiers record their own, so they load on
  machines where the folder or repository is absent).

Configs that open_clip does not ship are registered with it under ``promptlab-custom-<hash>``, so
that open_clip's factory and tokenizer lookup build them like any built-in architecture.
"""

from __future__ import annotations

import atexit
import copy
import difflib
import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import open_clip
from open_clip.pretrained import download_pretrained_from_hf

from promptlab.errors import UserError

log = logging.getLogger(__name__)

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
CUSTOM_PREFIX = "promptlab-custom-"
CONFIG_FILE = "open_clip_config.json"
# Weights files of a local-dir or hf-hub folder, in the order open_clip prefers them.
WEIGHTS_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
)
PREPROCESS_KEYS = ("size", "mean", "std", "interpolation", "resize_mode")

SHIPPED_TAG = "promptlab"
SHIPPED_WEIGHTS: dict[tuple[str, str | None], Path] = {
    ("toy-clip", SHIPPED_TAG): Path(__file__).resolve().parents[1] / "weights" / "toy-clip.safetensors"
}


class BackboneError(UserError):
    """A backbone cannot be built or used as asked; the message says what to do."""


@dataclass(frozen=True)
class BackboneSource:
    """A resolved backbone request.

    Attributes:
        name: the backbone as the user wrote it (recorded in exported classifiers).
        architecture: a name open_clip's factory knows (built-in, or registered from ``model_cfg``).
        model_cfg: the architecture config (open_clip's ``model_cfg`` layout).
        preprocess_cfg: preprocessing that overrides open_clip's defaults (keys of ``PREPROCESS_KEYS``).
        preprocess_origin: where the preprocessing comes from, for the log.
        weights_file: the weights to load, or None for random weights.
    """

    name: str
    architecture: str
    model_cfg: dict
    preprocess_cfg: dict
    preprocess_origin: str
    weights_file: str | None


def is_custom_architecture(name: str) -> bool:
    """True for an architecture registered from a ``local-dir:`` or ``hf-hub:`` config."""
    return name.startswith(CUSTOM_PREFIX)


def resolve_backbone(
    name: str,
    pretrained: str | None,
    weights_path: str | None,
    model_cfg: dict | None = None,
    preprocess: dict | None = None,
    load_weights: bool = True,
) -> BackboneSource:
    """Finds the architecture, preprocessing and weights file of a backbone request.

    Args:
        name: an open_clip name, ``local-dir:/path`` or ``hf-hub:org/repo``.
        pretrained: open_clip pretrained tag (names without a schema only), or None.
        weights_path: a local weights file; takes precedence over the tag's or folder's weights.
        model_cfg: the architecture config, when known already (from an exported classifier).
        preprocess: overrides of size, mean, std, interpolation (for weights files without a config).
        load_weights: False to build the architecture only (the caller fills the weights).

    Raises:
        BackboneError: unknown name, missing folder or config, offline download, bad override.
    """
    if weights_path and not Path(weights_path).is_file():
        raise BackboneError(f"Weights file {weights_path!r} does not exist; check the path.")
    if name.startswith((LOCAL_DIR, HF_HUB)) and model_cfg is not None and (weights_path or not load_weights):
        # An exported classifier's own architecture: the folder or repository need not exist here.
        cfg, preprocess_cfg, origin, weights = copy.deepcopy(model_cfg), {}, "open_clip's defaults", weights_path
    elif name.startswith((LOCAL_DIR, HF_HUB)):
        config, folder_weights = _read_config_folder(name, need_weights=load_weights and not weights_path)
        cfg = copy.deepcopy(model_cfg) if model_cfg is not None else config["model_cfg"]
        preprocess_cfg = _preprocess_subset(config.get("preprocess_cfg", {}))
        origin = f"{CONFIG_FILE} of {name}"
        weights = weights_path or folder_weights
    else:
        cfg = copy.deepcopy(model_cfg) if model_cfg is not None else _builtin_config(name)
        weights, preprocess_cfg, origin = _builtin_weights(name, pretrained, weights_path, load_weights)
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}
        if model_cfg is None and tag_cfg.get("quick_gelu") and not cfg.get("quick_gelu"):
            # OpenAI's weights were trained with QuickGELU; open_clip 3 only warns when the config says
            # GELU, and features then drift from the weights' own.
            cfg["quick_gelu"] = True
    if preprocess:
        preprocess_cfg = {**preprocess_cfg, **_checked_override(preprocess, cfg, name)}
        origin = "the preprocess option"
    return BackboneSource(
        name=name,
        architecture=_architecture_name(name, cfg),
        model_cfg=cfg,
        preprocess_cfg=preprocess_cfg,
        preprocess_origin=origin,
        weights_file=weights if load_weights else None,
    )


# -- built-in names ---------------------------------------------------------------------------------


def _builtin_config(name: str) -> dict:
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        known = [m for m in open_clip.list_models() if not is_custom_architecture(m)]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise BackboneError(
            f"Unknown backbone {name!r}.{hint} Run `promptlab backbones` to list all names, or use "
            "local-dir:/path or hf-hub:org/repo for a model with its own open_clip_config.json."
        )
    return cfg


def _builtin_weights(
    name: str, pretrained: str | None, weights_path: str | None, load_weights: bool
) -> tuple[str | None, dict, str]:
    """(weights file or None, preprocessing overrides, where they come from) of a built-in name."""
    shipped = SHIPPED_WEIGHTS.get((name, pretrained))
    if shipped is not None and not weights_path:
        if not shipped.is_file():
            raise BackboneError(f"Shipped weights {str(shipped)!r} are missing; reinstall promptlab.")
        return str(shipped), {}, "open_clip's defaults"
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}
    if pretrained and not tag_cfg and not weights_path:
        tags = open_clip.list_pretrained_tags_by_model(name) + [t for m, t in SHIPPED_WEIGHTS if m == name]
        raise BackboneError(
            f"Backbone {name!r} has no pretrained tag {pretrained!r}; known tags: {tags or 'none'}. "
            "Pass one of them, or weights_path for a local file."
        )
    preprocess = _preprocess_subset(tag_cfg)
    origin = f"pretrained tag {pretrained!r}" if tag_cfg else "open_clip's defaults"
    if weights_path or not pretrained or not load_weights:
        return weights_path, preprocess, origin
    try:
        return open_clip.download_pretrained(tag_cfg), preprocess, origin
    except Exception as error:  # hub and URL downloads raise many types
        source = tag_cfg.get("hf_hub") or tag_cfg.get("url") or "?"
        raise BackboneError(
            f"Cannot download weights for {name!r} pretrained={pretrained!r} from {source} "
            f"({type(error).__name__}). "
            'On a machine with network access run `python -c "import open_clip; '
            f"open_clip.create_model('{name}', pretrained='{pretrained}')\"` and copy the downloaded file, "
            "then pass it as weights_path (e.g. --model.init_args.weights_path /path/to/open_clip_model.safetensors)."
        ) from error


# -- local-dir: and hf-hub: -------------------------------------------------------------------------


def _read_config_folder(name: str, need_weights: bool) -> tuple[dict, str | None]:
    """(open_clip_config.json's content, weights file or None) of a local-dir: or hf-hub: backbone."""
    if name.startswith(LOCAL_DIR):
        folder = Path(name.removeprefix(LOCAL_DIR)).expanduser()
        if not folder.is_dir():
            raise BackboneError(f"Backbone folder {str(folder)!r} ({name}) does not exist; check the path.")
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise BackboneError(
                f"Backbone folder {str(folder)!r} has no {CONFIG_FILE}; add one with model_cfg and preprocess_cfg, "
                "or use a built-in backbone name with weights_path."
            )
        config = _parse_config(config_path, name)
        weights = next((str(folder / f) for f in WEIGHTS_FILES if (folder / f).is_file()), None)
        if need_weights and weights is None:
            raise BackboneError(
                f"Backbone folder {str(folder)!r} has no weights file; add one named {WEIGHTS_FILES[0]} "
                "(or pass weights_path)."
            )
    else:
        repo = name.removeprefix(HF_HUB)
        config = _parse_config(Path(_download_from_hub(repo, CONFIG_FILE)), name)
        weights = _download_from_hub(repo, None) if need_weights else None
    return config, weights


def _download_from_hub(repo: str, filename: str | None) -> str:
    try:
        return download_pretrained_from_hf(repo, filename=filename)  # None: open_clip's default weights name
    except Exception as error:  # huggingface_hub raises many types, offline or not
        what = filename or "the weights"
        raise BackboneError(
            f"Cannot download {what} of hf-hub:{repo} ({type(error).__name__}); on a machine with network access run "
            f"`huggingface-cli download {repo} --local-dir DIR`, copy DIR here and use backbone: local-dir:DIR."
        ) from error


def _parse_config(path: Path, name: str) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        cfg = config["model_cfg"]
        if not all(key in cfg for key in ("embed_dim", "vision_cfg", "text_cfg")):
            raise KeyError("embed_dim, vision_cfg and text_cfg")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BackboneError(
            f"{str(path)!r} ({name}) is not an open_clip config: it needs a model_cfg with embed_dim, vision_cfg "
            f"and text_cfg ({type(error).__name__}: {error}); fix the file."
        ) from error
    return config


# -- preprocessing ----------------------------------------------------------------------------------


def _preprocess_subset(cfg: dict) -> dict:
    return {key: cfg[key] for key in PREPROCESS_KEYS if key in cfg}


def _checked_override(preprocess: dict, cfg: dict, name: str) -> dict:
    unknown = sorted(set(preprocess) - set(PREPROCESS_KEYS))
    if unknown:
        raise BackboneError(
            f"Unknown preprocess option {unknown[0]!r} for backbone {name!r}; use {', '.join(PREPROCESS_KEYS)}."
        )
    for key in ("mean", "std"):
        if key in preprocess and (len(preprocess[key]) != 3 or (key == "std" and min(preprocess[key]) <= 0)):
            raise BackboneError(
                f"preprocess.{key} must be three numbers (one per RGB channel, std > 0); got {preprocess[key]}."
            )
    image_size = cfg["vision_cfg"].get("image_size")
    if "size" in preprocess and image_size is not None and preprocess["size"] != image_size:
        raise BackboneError(
            f"preprocess.size {preprocess['size']} differs from the input size {image_size} of backbone {name!r}; "
            "leave size out or set it to the input size."
        )
    return dict(preprocess)


# -- registering custom architectures ---------------------------------------------------------------

_custom_dir: Path | None = None


def _architecture_name(name: str, cfg: dict) -> str:
    """A name open_clip's factory builds ``cfg`` from (given ``force_quick_gelu=cfg.get("quick_gelu")``):
    the built-in name, or a registered custom one.
    """
    if not name.startswith((LOCAL_DIR, HF_HUB)):  # open_clip would read or download those configs
        builtin = open_clip.get_model_config(name)
        if builtin is not None and cfg in (builtin, {**builtin, "quick_gelu": True}):
            return name
    global _custom_dir
    text = json.dumps(cfg, sort_keys=True)
    architecture = CUSTOM_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:16]
    if architecture not in open_clip.list_models():
        if _custom_dir is None:
            _custom_dir = Path(tempfile.mkdtemp(prefix="promptlab-architectures-"))
            atexit.register(shutil.rmtree, _custom_dir, True)
        (_custom_dir / f"{architecture}.json").write_text(text)
        open_clip.add_model_config(_custom_dir / f"{architecture}.json")
    return architecture
