"""Configuration of PVC-InternVL: InternViT (+ PVC temporal modules) -> pixel shuffle -> mlp1 -> native LLM.

Each setting is declared once, a :class:`Setting` in its class's table; the ``__init__`` signature, the ``Args`` of
the docstring and the checks follow. Values are never coerced (``"false"`` is not a bool, 2.9 is not an int).
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.activations import ACT2FN
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging

from .conversation import DEFAULT_TEMPLATE, TEMPLATES
from .media import MAX_TILES


logger = logging.get_logger(__name__)


class DataFlag(IntEnum):
    """What one sample is (the official ``data_flag``): how its tiles become clips and prompt slots."""

    IMAGE = 1  # one image: its tiles (+ thumbnail) behind one <image>
    MULTI_IMAGE = 2  # several images: one <image> each
    VIDEO = 3  # a video: one tile per frame, one numbered <image> line per frame (conversation.build_video_prompt)


# Native causal LMs of official InternVL2 checkpoints (InternLM2 is converted to llama); resolves a missing model_type.
LLM_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Phi3ForCausalLM": "phi3",
                     "MistralForCausalLM": "mistral"}
# Language-model types whose decoder layers PruneVid stage 2 runs layer by layer (prunevid.py).
PRUNEVID_STAGE2_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3")


def tokens_per_tile(flag: int, num_image_token: int, image_repeat_time: int, video_repeat_time: int) -> int:
    """LLM tokens one image tile (flags 1 and 2) or one video frame (flag 3) costs: tokens per frame x repeats."""
    repeat = video_repeat_time if int(flag) == DataFlag.VIDEO else image_repeat_time
    return num_image_token * int(repeat)


_KIND_NAMES = {bool: "a bool (True/False)", int: "an int", float: "a finite number", str: "a str",
               list: "a list of ints", dict: "a dict or config object"}
_INVALID = object()


@functools.cache
def transformers_config_keys() -> frozenset[str]:
    """Attribute names any config may carry besides its own: ``PretrainedConfig()``'s and those loading adds."""
    written = {"auto_map", "architectures", "transformers_version", "model_type", "dtype", "torch_dtype",
               "_name_or_path", "name_or_path", "_commit_hash", "attn_implementation", "_attn_implementation",
               "_attn_implementation_autoset", "experts_implementation", "output_attentions", "num_labels",
               "tie_word_embeddings"}
    return frozenset(PretrainedConfig().to_dict()) | written


def _as_kind(kind: type, value: Any) -> Any:
    """``value`` as ``kind`` (ints as int, numbers as float), or ``_INVALID`` if it is of another type."""
    if kind is bool or isinstance(value, bool):  # a bool is only ever a bool, never a number
        return value if kind is bool and isinstance(value, bool) else _INVALID
    if kind is int:
        return int(value) if isinstance(value, numbers.Integral) else _INVALID
    if kind is float:
        return float(value) if isinstance(value, numbers.Real) and math.isfinite(value) else _INVALID
    if kind is str:
        return value if isinstance(value, str) else _INVALID
    if isinstance(value, (list, tuple)) and all(_as_kind(int, item) is not _INVALID for item in value):
        return [int(item) for item in value]
    return _INVALID


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _did_you_mean(key: Any, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class Setting:
    """The one declaration of a config setting: ``kind`` (``bool``, ``int``, ``float``, ``str``, ``list`` of ints,
    or ``dict`` for a sub-config its own class checks), ``default`` (None also allows None), one line of ``doc``,
    inclusive bounds ``low`` / ``high`` (``low`` exclusive when ``low_open``) and ``choices``."""

    kind: type
    default: Any = None
    doc: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple = ()

    def describe(self, max_choices: int | None = None) -> str:
        """What the setting must be, e.g. ``"an int >= 1"`` or ``"a finite number in (0, 1]"``."""
        text = _KIND_NAMES[self.kind]
        if self.choices:
            shown = self.choices[:max_choices]
            more = ", ..." if len(shown) < len(self.choices) else ""
            text += f", one of {', '.join(map(repr, shown))}{more}"
        if self.low is not None and self.high is not None:
            text += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            text += f" {'>' if self.low_open else '>='} {self.low:g}"
        return f"None or {text}" if self.default is None else text

    @property
    def annotation(self) -> str:
        return ("list[int]" if self.kind is list else self.kind.__name__) + (" | None" if self.default is None else "")

    def check(self, section: str, name: str, value: Any) -> Any:
        """The value (ints as ``int``, numbers as ``float``); ``ValueError`` naming setting, value, type and rule."""
        if value is None and self.default is None:
            return None
        checked = _as_kind(self.kind, value)
        ok = checked is not _INVALID and (not self.choices or checked in self.choices)
        if ok and self.low is not None:
            ok = checked > self.low if self.low_open else checked >= self.low
        if not ok or (self.high is not None and checked > self.high):
            raise ValueError(f"{section} setting {name!r} must be {self.describe()}, got {_shown(value)} "
                             f"({type(value).__name__})")
        return checked


def check_settings(section: str, values: Mapping[str, Any], specs: Mapping[str, Setting]) -> dict[str, Any]:
    """Checked copy of ``values`` (every key must be in ``specs``; ints as int, numbers as float)."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{section} settings must be a dict, got {_shown(values)} ({type(values).__name__})")
    unknown = [f"{key!r}{_did_you_mean(key, specs)}" for key in values if key not in specs]
    if unknown:
        raise ValueError(f"unknown {section} setting {', '.join(unknown)}; the settings are: {', '.join(specs)}")
    return {name: specs[name].check(section, name, value) for name, value in values.items()}


def declared(settings: dict[str, Setting]):
    """Class decorator: ``cls.SETTINGS``, the ``__init__`` signature and the docstring's ``Args`` from ``settings``."""

    def apply(cls: type) -> type:
        cls.SETTINGS = settings
        param = functools.partial(inspect.Parameter, kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params = [param(name, default=spec.default, annotation=spec.annotation) for name, spec in settings.items()]
        varkw = inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)
        cls.__init__.__signature__ = inspect.Signature([param("self"), *params, varkw])
        lines = []
        for name, spec in settings.items():
            rule = f"; {spec.describe(6)}" if spec.choices or spec.low is not None else ""
            lines.append(f"    {name} (`{spec.annotation}`, default {spec.default!r}): {spec.doc}{rule}.")
        cls.__doc__ = inspect.cleandoc(cls.__doc__) + "\n\nArgs:\n" + "\n".join(lines) + "\n"
        return cls

    return apply


def _apply_settings(config: PretrainedConfig, section: str, args: tuple, kwargs: dict) -> tuple[dict, dict]:
    """Check and set the declared settings of an ``__init__`` call; returns the sub-configs (unchecked) and extras."""
    cls = type(config)
    bound = cls.__init__.__signature__.bind(config, *args, **kwargs)
    bound.apply_defaults()
    subs = {name: bound.arguments[name] for name, spec in cls.SETTINGS.items() if spec.kind is dict}
    values = {name: bound.arguments[name] for name, spec in cls.SETTINGS.items() if spec.kind is not dict}
    for name, value in check_settings(section, values, cls.SETTINGS).items():
        setattr(config, name, value)
    extra = dict(bound.arguments["kwargs"])
    model_type = extra.pop("model_type", cls.model_type)
    if model_type != cls.model_type:
        raise ValueError(f"{section} model_type must be {cls.model_type!r}, got {_shown(model_type)}; official "
                         "InternVL2 / PVC checkpoints are converted with conversion/convert_checkpoint.py first")
    for key in [key for key in extra if key not in transformers_config_keys()]:  # kept and written back
        if close := _did_you_mean(key, cls.SETTINGS):
            logger.warning(f"{section} has an unknown setting {key!r}{close}; it is kept as an extra attribute and "
                           "changes nothing")
    return subs, extra


def _check_dtype(kwargs: Mapping[str, Any]) -> None:
    """``dtype`` / ``torch_dtype`` of a config.json must name a torch floating-point dtype."""
    import torch

    for key in ("dtype", "torch_dtype"):
        value = kwargs.get(key)
        if value is None or isinstance(value, torch.dtype) or value == "auto":
            continue
        name = value.removeprefix("torch.") if isinstance(value, str) else None
        if name is None or not isinstance(getattr(torch, name, None), torch.dtype):
            raise ValueError(f"config {key} {_shown(value)} is not a torch dtype; use 'bfloat16', 'float16' or "
                             "'float32'")


_LAYER_LIST = "None = every layer; negative indices count from the end"
VISION_SETTINGS = {
    "num_channels": Setting(int, 3, "input channels", low=1),
    "patch_size": Setting(int, 14, "patch size of the convolutional stem", low=1),
    "image_size": Setting(int, 448, "tile size the position embedding was trained for", low=1),
    "qkv_bias": Setting(bool, True, "bias in the fused qkv projection (InternViT-300M style)"),
    "hidden_size": Setting(int, 1024, "transformer width", low=1),
    "num_attention_heads": Setting(int, 16, "attention heads", low=1),
    "intermediate_size": Setting(int, 4096, "MLP width", low=1),
    "qk_normalization": Setting(bool, False, "RMSNorm over all heads' q and k (InternViT-6B style)"),
    "num_hidden_layers": Setting(int, 24, "transformer blocks", low=1),
    "use_flash_attn": Setting(bool, False, "ignored (attention follows attn_implementation)"),
    "hidden_act": Setting(str, "gelu", "MLP activation", choices=tuple(sorted(ACT2FN))),
    "norm_type": Setting(str, "layer_norm", "norm of the blocks", choices=("layer_norm", "rms_norm")),
    "layer_norm_eps": Setting(float, 1e-6, "norm epsilon", low=0, low_open=True),
    "dropout": Setting(float, 0.0, "dropout after attention and MLP (training only)", low=0, high=1),
    "drop_path_rate": Setting(float, 0.0, "stochastic depth (training only)", low=0, high=1),
    "attention_dropout": Setting(float, 0.0, "attention dropout (training only)", low=0, high=1),
    "initializer_range": Setting(float, 0.02, "std of the truncated-normal init of linear layers", low=0),
    "initializer_factor": Setting(float, 0.1, "initial value of the layer-scale vectors ls1 / ls2", low=0),
    "use_temporal_modules": Setting(bool, False, "build the PVC temporal modules (set by the top-level use_temporal)"),
    "temporal_attn_layers": Setting(list, None, f"layers with causal temporal attention, T-MHA ({_LAYER_LIST})"),
    "adaln_layers": Setting(list, None, f"layers whose two norms are time-conditioned, AdaLN ({_LAYER_LIST})"),
    "temporal_causal": Setting(bool, True, "frame t attends only to frames <= t"),
    "temporal_include_cls": Setting(bool, True, "the CLS position takes part in temporal attention"),
    "temporal_attn_norm": Setting(bool, False, "temporal attention has its own pre-norm (temporal_norm)"),
    "time_embed_dim": Setting(int, 256, "width of the sinusoidal timestamp encoding (even)", low=2),
    "time_embed_max_period": Setting(float, 10000.0, "longest sinusoid period", low=0, low_open=True),
    "time_embed_order": Setting(str, "cos_sin", "cos_sin (DiT convention) or sin_cos", choices=("cos_sin", "sin_cos")),
    "time_input": Setting(str, "index", "timestamp t = 0..T-1 (index) or t / T", choices=("index", "normalized")),
    "adaln_num_modulations": Setting(int, 4, "scale/shift of both norms, plus gates 1 + g (6)", choices=(4, 6)),
}


@declared(VISION_SETTINGS)
class PVCInternVisionConfig(PretrainedConfig):
    """InternViT (300M: LayerNorm + qkv bias; 6B: RMSNorm + qk-norm) with PVC's temporal attention and AdaLN."""

    model_type = "pvc_intern_vit"
    base_config_key = "vision_config"  # its section in the composite config.json

    def __init__(self, *args, **kwargs):
        _, kwargs = _apply_settings(self, "vision_config", args, kwargs)
        super().__init__(**kwargs)
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"vision hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"vision image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.time_embed_dim % 2 != 0:
            raise ValueError(f"vision time_embed_dim must be even (cos and sin halves), got {self.time_embed_dim}")
        self.temporal_layer_ids()  # raise on layer indices outside the model
        self.adaln_layer_ids()

    def _layer_ids(self, name: str) -> list[int]:
        """Sorted non-negative indices of the layers setting ``name`` lists; empty without temporal modules."""
        layers, count = getattr(self, name), self.num_hidden_layers
        if not self.use_temporal_modules:
            return []
        for index in layers or ():
            if not -count <= index < count:
                raise ValueError(f"{name} contains layer {index}, but the vision model has {count} layers")
        return list(range(count)) if layers is None else sorted({index % count for index in layers})

    temporal_layer_ids = functools.partialmethod(_layer_ids, "temporal_attn_layers")  # layers with T-MHA
    adaln_layer_ids = functools.partialmethod(_layer_ids, "adaln_layers")  # layers with time-conditioned norms


PRUNEVID_SETTINGS = {
    "enabled": Setting(bool, False, "the switch; off, the model is bit-identical to one without PruneVid"),
    "tau": Setting(float, 0.8, "a location is static iff its mean cosine similarity > tau", low=-1, high=1),
    "temporal_segment_ratio": Setting(float, 0.25, "time clusters = int(frames * ratio)", low=0, high=1, low_open=True),
    "cluster_ratio": Setting(float, 0.5, "spatial DPC-kNN clusters = int(n * ratio)", low=0, high=1, low_open=True),
    "k": Setting(int, 7, "DPC-kNN neighbours (self included); stage 1 needs at least k frames", low=1),
    "min_tokens_to_cluster": Setting(int, 14, "a token group is merged only if larger than this", low=0),
    "selected_layer": Setting(int, 10, "0-based LLM decoder layer after which stage 2 prunes", low=0),
    "alpha": Setting(float, 0.4, "fraction of every token group kept by stage 2", low=0, high=1, low_open=True),
    "enable_stage1": Setting(bool, True, "run stage 1 (spatio-temporal merging before the LLM)"),
    "enable_stage2": Setting(bool, True, "run stage 2 (attention-guided selection inside the LLM)"),
}


@declared(PRUNEVID_SETTINGS)
class PruneVidConfig(PretrainedConfig):
    """PruneVid settings (training-free token pruning of video samples). Off by default."""

    model_type = "pvc_prunevid"
    base_config_key = "prunevid"  # its section in the composite config.json

    def __init__(self, *args, **kwargs):
        _, kwargs = _apply_settings(self, "prunevid", args, kwargs)
        super().__init__(**kwargs)

    def validate_settings(self, num_llm_layers: int | None = None) -> None:
        """When enabled, ``selected_layer`` must be a layer of a language model of ``num_llm_layers`` layers."""
        if self.enabled and num_llm_layers is not None and self.selected_layer >= num_llm_layers:
            raise ValueError(f"prunevid selected_layer {self.selected_layer} is beyond the language model, which has "
                             f"{num_llm_layers} layers (valid: 0..{num_llm_layers - 1})")

    def settings(self) -> dict[str, Any]:
        """The PruneVid settings as a plain dict."""
        return {name: getattr(self, name) for name in PRUNEVID_SETTINGS}

    def to_dict(self) -> dict[str, Any]:
        """The ``prunevid`` section of config.json: the settings and extra keys, no generic model attributes."""
        extra = {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in transformers_config_keys()}
        stamp = {k: v for k, v in super().to_dict().items() if k in ("model_type", "transformers_version")}
        return {**extra, **self.settings(), **stamp}

    def merged(self, overrides: Mapping[str, Any] | None, num_llm_layers: int | None = None) -> PruneVidConfig:
        """A checked copy with per-call ``overrides`` applied, its ``selected_layer`` checked when enabled."""
        if overrides is not None and not isinstance(overrides, Mapping):
            raise ValueError(f"prunevid overrides must be a dict of settings such as {{'enabled': True}}, got "
                             f"{_shown(overrides)} ({type(overrides).__name__})")
        out = PruneVidConfig(**{**self.settings(), **check_settings("prunevid", overrides or {}, PRUNEVID_SETTINGS)})
        out.validate_settings(num_llm_layers)
        return out


def _build_llm_config(llm_config: Mapping[str, Any] | PretrainedConfig | None) -> PretrainedConfig:
    """Build a native transformers config (llama, qwen2, phi3, ...) from a dict or config (None = Llama); a dict
    without ``model_type`` is resolved by its first architecture."""
    if isinstance(llm_config, PretrainedConfig):
        return llm_config
    llm_config = {"model_type": "llama"} if llm_config is None else llm_config
    if not isinstance(llm_config, Mapping):
        raise ValueError(f"config setting 'llm_config' must be a dict or a transformers PretrainedConfig, got "
                         f"{_shown(llm_config)} ({type(llm_config).__name__})")
    llm_config = dict(llm_config)
    model_type, architectures = llm_config.pop("model_type", None), llm_config.get("architectures")
    if model_type is None:
        known = isinstance(architectures, (list, tuple)) and architectures and architectures[0] in LLM_ARCHITECTURES
        if not known:
            raise ValueError(f"llm_config has no model_type and no architectures list naming a known language model "
                             f"(got architectures={_shown(architectures)}); set model_type (e.g. "
                             f"{', '.join(map(repr, LLM_ARCHITECTURES.values()))}) or architectures "
                             f"({', '.join(LLM_ARCHITECTURES)})")
        model_type = LLM_ARCHITECTURES[architectures[0]]
    if model_type == "internlm2":
        raise ValueError("llm_config is an InternLM2 config; this package runs InternLM2 weights as a native "
                         "LlamaForCausalLM. Convert the checkpoint with conversion/convert_checkpoint.py first.")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise ValueError(f"llm_config model_type {_shown(model_type)} is not a transformers model type")
    config_class = CONFIG_MAPPING[model_type]
    if "rope_parameters" in llm_config and not hasattr(config_class(), "rope_parameters"):  # transformers 4
        rope_parameters = llm_config.pop("rope_parameters")
        if rope_parameters is not None:
            llm_config.update(_legacy_rope(rope_parameters))
    _check_rope_type(llm_config)
    return config_class(**llm_config)


def _check_rope_type(llm_config: Mapping[str, Any]) -> None:
    """``rope_scaling`` / ``rope_parameters`` must name a rotary embedding transformers implements."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for key in ("rope_scaling", "rope_parameters"):
        rope = llm_config.get(key)
        if rope is None:
            continue
        if not isinstance(rope, Mapping):
            raise ValueError(f"llm_config {key} must be a JSON object or null, got {_shown(rope)} "
                             f"({type(rope).__name__})")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default" and rope_type not in ROPE_INIT_FUNCTIONS:
            known = ", ".join(sorted(ROPE_INIT_FUNCTIONS))
            raise ValueError(f"llm_config {key} names the rotary embedding type {_shown(rope_type)}, which "
                             f"transformers does not implement; known: default, {known}")


def _legacy_rope(rope_parameters: dict | None) -> dict[str, Any]:
    """``rope_parameters`` (transformers 5) as the ``rope_theta`` / ``rope_scaling`` pair of transformers 4."""
    rope = dict(rope_parameters or {})
    out = {"rope_theta": rope.pop("rope_theta")} if "rope_theta" in rope else {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    out["rope_scaling"] = None if rope_type == "default" else {**rope, "rope_type": rope_type, "type": rope_type}
    return out


CONFIG_SETTINGS = {
    "vision_config": Setting(dict, None, "the InternViT encoder (a dict or PVCInternVisionConfig)"),
    "llm_config": Setting(dict, None, f"a native causal-LM config ({', '.join(LLM_ARCHITECTURES.values())}, ...)"),
    "use_backbone_lora": Setting(int, 0, "LoRA rank of the official training code; must be 0", low=0),
    "use_llm_lora": Setting(int, 0, "LoRA rank of the official training code; must be 0", low=0),
    "use_temporal": Setting(bool, False, "PVC progressive encoding on; sets vision_config.use_temporal_modules"),
    "pad2square": Setting(bool, False, "legacy preprocessing flag, kept for compatibility"),
    "select_layer": Setting(int, -1, "vision hidden state feeding the projector (-1 = last; 0 = embeddings)"),
    "force_image_size": Setting(int, None, "tile size (None = vision_config.image_size)", low=1),
    "downsample_ratio": Setting(float, 0.5, "pixel shuffle r: (size / patch * r)^2 tokens per frame", low=0, high=1,
                                low_open=True),
    "template": Setting(str, DEFAULT_TEMPLATE, "conversation template", choices=tuple(TEMPLATES)),
    "dynamic_image_size": Setting(bool, False, "tile an image into a grid that fits its aspect ratio"),
    "use_thumbnail": Setting(bool, False, "add a whole-image thumbnail to an image of several tiles"),
    "ps_version": Setting(str, "v1", "pixel-shuffle variant", choices=("v1", "v2")),
    "min_dynamic_patch": Setting(int, 1, "fewest tiles per image", low=1, high=MAX_TILES),
    "max_dynamic_patch": Setting(int, 6, "most tiles per image, thumbnail excluded", low=1, high=MAX_TILES),
    "image_repeat_time": Setting(int, 1, "frames of the static clip each image tile becomes (PVC: 4)", low=1),
    "video_repeat_time": Setting(int, 1, "how many times each video frame is repeated (PVC: 1)", low=1),
    "tile_repeat_way": Setting(str, None, "order of repeated tiles: tile_major ([t1 f1..fR][t2 f1..fR]..., also "
                                          "None) or frame_major ([all f1]...)", choices=("tile_major", "frame_major")),
    "mlp_add_ops": Setting(str, None, "extra projector operations; only None is supported"),
    "max_clip_frames": Setting(int, None, "cut a video into clips of at most this many frames (None = one)", low=1),
    "vision_chunk_frames": Setting(int, None, "encode a clip this many frames at a time, temporal layers reading the "
                                              "earlier frames' keys/values (exact, less memory; None = all)", low=1),
    "img_context_token_id": Setting(int, None, "token id of the image-context token (conversation.IMG_CONTEXT_TOKEN)", low=0),
    "system_message": Setting(str, None, "replaces the template's system message"),
    "prunevid": Setting(dict, None, "PruneVid settings (a dict or PruneVidConfig; off by default)"),
}


def _sub_config(name: str, value: Any, config_class: type) -> dict[str, Any]:
    """The settings of a sub-config given as a dict, a ``config_class`` instance or None (the defaults)."""
    if isinstance(value, config_class):
        value = value.to_dict()
    if value is not None and not isinstance(value, Mapping):
        rule = "prunevid settings must be a dict" if name == "prunevid" else (
            f"config setting {name!r} must be a dict or a {config_class.__name__}")
        raise ValueError(f"{rule}, got {_shown(value)} ({type(value).__name__})")
    return dict(value or {})


@declared(CONFIG_SETTINGS)
class PVCInternVLConfig(PretrainedConfig):
    """Composite configuration of a PVC-InternVL chat model; InternVL2 exactly with ``use_temporal=False``, both
    repeat times 1 and ``downsample_ratio=0.5``. ``from_dict`` / ``from_pretrained`` need both sub-configs."""

    model_type = "pvc_internvl"
    sub_configs = {"vision_config": PVCInternVisionConfig, "llm_config": AutoConfig, "prunevid": PruneVidConfig}

    def __init__(self, *args, **kwargs):
        subs, kwargs = _apply_settings(self, "config", args, kwargs)
        _check_dtype(kwargs)
        vision = _sub_config("vision_config", subs["vision_config"], PVCInternVisionConfig)
        self.vision_config = PVCInternVisionConfig(**{**vision, "use_temporal_modules": self.use_temporal})
        self.llm_config = _build_llm_config(copy.deepcopy(subs["llm_config"]))
        self.prunevid = PruneVidConfig(**_sub_config("prunevid", subs["prunevid"], PruneVidConfig))
        kwargs.setdefault("tie_word_embeddings", getattr(self.llm_config, "tie_word_embeddings", False))
        super().__init__(**kwargs)
        self._validate()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> PVCInternVLConfig:
        """``PretrainedConfig.from_dict`` (used by ``from_pretrained``) of a dict holding both sub-configs."""
        if not isinstance(config_dict, Mapping):
            raise ValueError(f"a PVC-InternVL config must be a dict (a JSON object), got {type(config_dict).__name__}")
        for key, what in (("vision_config", "the InternViT encoder"), ("llm_config", "the language model")):
            if key not in config_dict:
                raise ValueError(f"config.json has no {key!r} section ({what}); a PVC-InternVL config.json needs "
                                 "both 'vision_config' and 'llm_config' (official checkpoints: run "
                                 "conversion/convert_checkpoint.py)")
            if not isinstance(config_dict[key], Mapping):
                raise ValueError(f"config.json {key!r} must be a JSON object (dict), got {_shown(config_dict[key])} "
                                 f"({type(config_dict[key]).__name__})")
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> PVCInternVLConfig:
        """Like ``PretrainedConfig.from_json_file``, but the file must hold ``vision_config`` and ``llm_config``."""
        return cls.from_dict(cls._dict_from_json_file(json_file))

    def _validate(self) -> None:
        """The rules that involve several fields (each field alone is checked by ``CONFIG_SETTINGS``)."""
        patch, layers = self.vision_config.patch_size, self.vision_config.num_hidden_layers
        grid, scale = self.image_size // patch, 1.0 / self.downsample_ratio
        context_id, vocab_size = self.img_context_token_id, getattr(self.llm_config, "vocab_size", None)
        rules = (
            (self.use_backbone_lora or self.use_llm_lora,
             f"LoRA ranks use_backbone_lora={self.use_backbone_lora}, use_llm_lora={self.use_llm_lora} are "
             "training-time settings of the official code; merge the LoRA weights before converting"),
            (self.mlp_add_ops is not None, f"mlp_add_ops={self.mlp_add_ops!r} is not supported (only None)"),
            (self.min_dynamic_patch > self.max_dynamic_patch,
             f"min_dynamic_patch {self.min_dynamic_patch} is larger than max_dynamic_patch {self.max_dynamic_patch}"),
            (self.image_size % patch != 0, f"image size {self.image_size} is not a multiple of the patch size {patch}"),
            (abs(scale - round(scale)) > 1e-6 or grid % round(scale) != 0,
             f"downsample_ratio {self.downsample_ratio} must be 1/k for an integer k dividing the patch grid side "
             f"{grid} (image size {self.image_size} / patch size {patch})"),
            (not -(layers + 1) <= self.select_layer <= layers, f"select_layer {self.select_layer} is out of range for "
             f"a vision model with {layers} layers (hidden states 0..{layers})"),
            (None not in (context_id, vocab_size) and context_id >= vocab_size,
             f"img_context_token_id {context_id} is outside the language model's vocabulary (vocab_size {vocab_size})"),
        )
        for failed, message in rules:
            if failed:
                raise ValueError(message)
        self.prunevid.validate_settings(getattr(self.llm_config, "num_hidden_layers", None))

    @property
    def text_config(self) -> PretrainedConfig:
        """``llm_config`` (the official name, in config.json) under the name transformers looks for."""
        return self.llm_config

    @text_config.setter
    def text_config(self, value: PretrainedConfig) -> None:
        self.llm_config = value

    @property
    def image_size(self) -> int:
        """Tile size in pixels (``force_image_size`` or the vision config's)."""
        return int(self.force_image_size or self.vision_config.image_size)

    @property
    def pixel_shuffle_scale(self) -> int:
        """k = 1 / downsample_ratio: each output token merges a k x k block of patches."""
        return int(round(1.0 / self.downsample_ratio))

    @property
    def num_image_token(self) -> int:
        """LLM tokens per encoded frame: (image_size / patch_size)^2 * downsample_ratio^2."""
        grid = self.image_size // self.vision_config.patch_size
        return (grid // self.pixel_shuffle_scale) ** 2

    def tokens_per_tile(self, data_flag: int) -> int:
        """LLM tokens one tile (flag 1/2) or one video frame (flag 3) costs (:func:`tokens_per_tile`)."""
        return tokens_per_tile(data_flag, self.num_image_token, self.image_repeat_time, self.video_repeat_time)

    @property
    def max_context_length(self) -> int:
        """Longest prompt the LLM accepts: max_position_embeddings x the factor of dynamic/linear/yarn/longrope rope."""
        max_positions = int(getattr(self.llm_config, "max_position_embeddings", 0) or 0)
        rope = getattr(self.llm_config, "rope_parameters", None) or getattr(self.llm_config, "rope_scaling", None) or {}
        rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
        if rope_type in ("dynamic", "linear", "yarn", "longrope") and rope.get("factor"):
            return int(max_positions * float(rope["factor"]))
        return max_positions

    def to_json_string(self, use_diff: bool = True) -> str:
        """With transformers-4 ``rope_theta`` / ``rope_scaling`` beside ``rope_parameters``, readable on 4.57 too."""
        data = json.loads(super().to_json_string(use_diff=use_diff))
        llm = data.get("llm_config") or {}
        if llm.get("rope_parameters") is not None:
            for key, value in _legacy_rope(llm["rope_parameters"]).items():
                llm.setdefault(key, value)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_dict(self) -> dict[str, Any]:
        subs = {name: getattr(self, name).to_dict() for name in ("vision_config", "llm_config", "prunevid")}
        return {**super().to_dict(), **subs}
