"""Configuration of PVC-InternVL: InternViT (+ PVC temporal modules) -> pixel shuffle -> mlp1 -> native LLM.

Three config objects:

* :class:`PVCInternVisionConfig` -- the InternViT encoder (300M style: LayerNorm + qkv bias; 6B style:
  RMSNorm + qk-normalisation) plus the PVC temporal fields. The temporal fields describe choices the
  published PVC code does not settle (see the design notes); each one is explicit and documented.
* :class:`PruneVidConfig` -- the optional, training-free PruneVid token pruning (off by default).
* :class:`PVCInternVLConfig` -- the composite: vision config, the language model config (any native
  transformers causal LM config: llama, qwen2, phi3, ...) and the official InternVL2 / PVC top-level keys.

Every setting is checked by one validator (:class:`Setting` tables ``CONFIG_SETTINGS``, ``VISION_SETTINGS``,
``PRUNEVID_SETTINGS`` and :func:`check_settings`), whether it comes from a config.json, keyword arguments,
the converter's ``--set`` or per-call PruneVid overrides: types are never coerced (``"false"`` is not a bool,
2.9 is not an int), ranges are checked and unknown keys are refused (besides the standard attributes
transformers writes, :func:`transformers_config_keys`), each with a ``ValueError`` naming setting, value and rule.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import numbers
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.activations import ACT2FN
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging


logger = logging.get_logger(__name__)


class DataFlag(IntEnum):
    """What one sample is (the official ``data_flag``): how its tiles become clips and prompt slots."""

    IMAGE = 1  # one image: its tiles (+ thumbnail) behind one <image>
    MULTI_IMAGE = 2  # several images: one <image> each
    VIDEO = 3  # a video: one tile per frame, one "Frame{i}: <image>" per frame


VISION_NORM_TYPES = ("layer_norm", "rms_norm")
PIXEL_SHUFFLE_VERSIONS = ("v1", "v2")
TILE_REPEAT_WAYS = ("tile_major", "frame_major")
TIME_INPUTS = ("index", "normalized")
TIME_EMBED_ORDERS = ("cos_sin", "sin_cos")
TEMPLATES = ("internlm2-chat", "Hermes-2", "phi3-chat")


# ------------------------------------------------------------------------------------- setting checks
# One validator for every setting of the three config classes, whichever way it arrives: a config.json,
# keyword arguments, per-call PruneVid overrides or the converter's --set. Values are never coerced:
# "false" is not a bool and 2.9 is not an int.

_KIND_NAMES = {
    bool: "a bool (True/False)", int: "an int", float: "a finite number", str: "a str", list: "a list of ints",
}
_INVALID = object()

# Keys transformers itself writes into a config.json or passes to ``__init__`` while loading, on top of
# those of ``PretrainedConfig().to_dict()`` (which differ between transformers 4 and 5).
_TRANSFORMERS_WRITTEN_KEYS = frozenset(
    {"auto_map", "architectures", "transformers_version", "model_type", "dtype", "torch_dtype", "_name_or_path",
     "name_or_path", "_commit_hash", "attn_implementation", "_attn_implementation", "_attn_implementation_autoset",
     "experts_implementation", "output_attentions", "num_labels", "tie_word_embeddings"}
)


@functools.cache
def transformers_config_keys() -> frozenset[str]:
    """Attribute names every config of the installed transformers may carry besides its own fields."""
    return frozenset(PretrainedConfig().to_dict()) | _TRANSFORMERS_WRITTEN_KEYS


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


@dataclass(frozen=True)
class Setting:
    """Type and allowed values of one setting.

    Args:
        kind: ``bool``, ``int``, ``float`` (an int or float, stored as float), ``str`` or ``list`` (of ints).
        low, high: inclusive bounds (``low`` exclusive when ``low_open``); None = unbounded.
        choices: the only allowed values, if not empty.
        optional: None is allowed.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple = ()
    optional: bool = False

    def describe(self) -> str:
        """What the setting must be, e.g. ``"an int >= 1"`` or ``"a finite number in (0, 1]"``."""
        text = _KIND_NAMES[self.kind]
        if self.choices:
            text += f", one of {', '.join(map(repr, self.choices))}"
        if self.low is not None and self.high is not None:
            text += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            text += f" {'>' if self.low_open else '>='} {self.low:g}"
        return f"None or {text}" if self.optional else text

    def allows(self, value: Any) -> bool:
        """Whether a value already of the right kind is among the choices and inside the bounds."""
        if self.choices and value not in self.choices:
            return False
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or value <= self.high

    def check(self, section: str, name: str, value: Any) -> Any:
        """The value (ints as ``int``, numbers as ``float``); ``ValueError`` naming setting, value, type and rule."""
        if value is None and self.optional:
            return None
        checked = _as_kind(self.kind, value)
        if checked is _INVALID or not self.allows(checked):
            raise ValueError(
                f"{section} setting {name!r} must be {self.describe()}, got {_shown(value)} ({type(value).__name__})"
            )
        return checked


def reject_unknown(section: str, keys: Iterable[Any], known: Collection[str], generic: Collection[str] = ()) -> None:
    """``ValueError`` listing every key that is neither in ``known`` nor in ``generic`` (with a close match)."""
    unknown = [key for key in keys if key not in known and key not in generic]
    if not unknown:
        return
    names = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1)
        names.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    extra = " and the standard transformers config attributes" if generic else ""
    raise ValueError(f"unknown {section} setting {', '.join(names)}; the settings are: {', '.join(known)}{extra}")


def warn_unknown(section: str, keys: Iterable[Any], known: Collection[str], generic: Collection[str] = ()) -> None:
    """Log a warning for each key of a config file or ``__init__`` that looks like a typo of a known setting.
    Like every transformers config, the config keeps unknown keys as attributes and writes them back."""
    for key in keys:
        if key in known or key in generic:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        if close:
            logger.warning(
                f"{section} has an unknown setting {key!r} (did you mean {close[0]!r}?); it is kept as an extra "
                f"attribute and changes nothing"
            )


def check_settings(section: str, values: Mapping[str, Any], specs: Mapping[str, Setting]) -> dict[str, Any]:
    """Checked copy of ``values`` (every key must be in ``specs``; ints as int, numbers as float)."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{section} settings must be a dict, got {_shown(values)} ({type(values).__name__})")
    reject_unknown(section, values, tuple(specs))
    return {name: specs[name].check(section, name, value) for name, value in values.items()}


def _pop_model_type(section: str, kwargs: dict[str, Any], expected: str) -> None:
    """Drop a ``model_type`` key from ``kwargs``; refuse one that names another model."""
    model_type = kwargs.pop("model_type", expected)
    if model_type != expected:
        raise ValueError(
            f"{section} model_type must be {expected!r}, got {_shown(model_type)}; official InternVL2 / PVC "
            "checkpoints are converted with conversion/convert_checkpoint.py first"
        )


def _check_dtype(kwargs: Mapping[str, Any]) -> None:
    """``dtype`` / ``torch_dtype`` of a config.json must name a torch floating-point dtype."""
    import torch

    for key in ("dtype", "torch_dtype"):
        value = kwargs.get(key)
        if value is None or isinstance(value, torch.dtype) or value == "auto":
            continue
        name = value.removeprefix("torch.") if isinstance(value, str) else None
        if name is None or not isinstance(getattr(torch, name, None), torch.dtype):
            raise ValueError(
                f"config {key} {_shown(value)} is not a torch dtype; use 'bfloat16', 'float16' or 'float32'"
            )


def _normalise_layers(layers: list[int] | None, num_layers: int, name: str) -> list[int]:
    """Turn a list of (possibly negative) layer indices into a sorted list of non-negative ones.

    ``None`` means every layer.
    """
    if layers is None:
        return list(range(num_layers))
    out = set()
    for index in layers:
        if not -num_layers <= index < num_layers:
            raise ValueError(f"{name} contains layer {index}, but the vision model has {num_layers} layers")
        out.add(index % num_layers)
    return sorted(out)


VISION_SETTINGS = {
    "num_channels": Setting(int, low=1),
    "patch_size": Setting(int, low=1),
    "image_size": Setting(int, low=1),
    "qkv_bias": Setting(bool),
    "hidden_size": Setting(int, low=1),
    "num_attention_heads": Setting(int, low=1),
    "intermediate_size": Setting(int, low=1),
    "qk_normalization": Setting(bool),
    "num_hidden_layers": Setting(int, low=1),
    "use_flash_attn": Setting(bool),
    "hidden_act": Setting(str, choices=tuple(sorted(ACT2FN))),
    "norm_type": Setting(str, choices=VISION_NORM_TYPES),
    "layer_norm_eps": Setting(float, low=0, low_open=True),
    "dropout": Setting(float, low=0, high=1),
    "drop_path_rate": Setting(float, low=0, high=1),
    "attention_dropout": Setting(float, low=0, high=1),
    "initializer_range": Setting(float, low=0),
    "initializer_factor": Setting(float, low=0),
    "use_temporal_modules": Setting(bool),
    "temporal_attn_layers": Setting(list, optional=True),
    "adaln_layers": Setting(list, optional=True),
    "temporal_causal": Setting(bool),
    "temporal_include_cls": Setting(bool),
    "temporal_attn_norm": Setting(bool),
    "time_embed_dim": Setting(int, low=2),
    "time_embed_max_period": Setting(float, low=0, low_open=True),
    "time_embed_order": Setting(str, choices=TIME_EMBED_ORDERS),
    "time_input": Setting(str, choices=TIME_INPUTS),
    "adaln_num_modulations": Setting(int, choices=(4, 6)),
}


class PVCInternVisionConfig(PretrainedConfig):
    r"""InternViT configuration with the PVC temporal extension.

    Args:
        num_channels (`int`): input channels (3).
        patch_size (`int`): patch size of the convolutional stem (14).
        image_size (`int`): tile size the position embedding was trained for (448).
        qkv_bias (`bool`): bias in the fused qkv projection (True for InternViT-300M).
        hidden_size (`int`): transformer width.
        num_attention_heads (`int`): attention heads.
        intermediate_size (`int`): MLP width.
        qk_normalization (`bool`): RMSNorm over all heads' q and k (InternViT-6B style).
        num_hidden_layers (`int`): transformer blocks.
        use_flash_attn (`bool`): kept for compatibility with official configs; ignored (attention goes
            through ``attn_implementation``).
        hidden_act (`str`): MLP activation.
        norm_type (`str`): ``"layer_norm"`` or ``"rms_norm"``.
        layer_norm_eps (`float`): norm epsilon.
        dropout, drop_path_rate, attention_dropout (`float`): training-only regularisation.
        initializer_range (`float`): std of the truncated-normal init of linear layers.
        initializer_factor (`float`): initial value of the layer-scale vectors ``ls1`` / ``ls2``.
        use_temporal_modules (`bool`): build the PVC temporal modules (set from the top-level
            ``use_temporal``; the encoder is plain InternViT when False).
        temporal_attn_layers (`list[int]`, *optional*): layers with causal temporal attention (T-MHA).
            ``None`` = every layer. Negative indices count from the end (``[-4, -3, -2, -1]`` = last 4).
        adaln_layers (`list[int]`, *optional*): layers whose two norms are time-conditioned (AdaLN).
            ``None`` = every layer.
        temporal_causal (`bool`): frame t attends only to frames <= t.
        temporal_include_cls (`bool`): the CLS position takes part in temporal attention.
        temporal_attn_norm (`bool`): temporal attention has its own pre-norm (``temporal_norm``).
        time_embed_dim (`int`): width of the sinusoidal timestamp encoding (256 in the paper).
        time_embed_max_period (`float`): longest sinusoid period.
        time_embed_order (`str`): ``"cos_sin"`` (DiT convention) or ``"sin_cos"``.
        time_input (`str`): ``"index"`` (t = 0..T-1) or ``"normalized"`` (t / T).
        adaln_num_modulations (`int`): 4 (scale/shift of both norms) or 6 (plus gates on both branches;
            a gate multiplies as ``1 + gate``).
    """

    model_type = "pvc_intern_vit"
    base_config_key = "vision_config"  # its section in the composite config.json

    def __init__(
        self,
        num_channels: int = 3,
        patch_size: int = 14,
        image_size: int = 448,
        qkv_bias: bool = True,
        hidden_size: int = 1024,
        num_attention_heads: int = 16,
        intermediate_size: int = 4096,
        qk_normalization: bool = False,
        num_hidden_layers: int = 24,
        use_flash_attn: bool = False,
        hidden_act: str = "gelu",
        norm_type: str = "layer_norm",
        layer_norm_eps: float = 1e-6,
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        initializer_factor: float = 0.1,
        use_temporal_modules: bool = False,
        temporal_attn_layers: list[int] | None = None,
        adaln_layers: list[int] | None = None,
        temporal_causal: bool = True,
        temporal_include_cls: bool = True,
        temporal_attn_norm: bool = False,
        time_embed_dim: int = 256,
        time_embed_max_period: float = 10000.0,
        time_embed_order: str = "cos_sin",
        time_input: str = "index",
        adaln_num_modulations: int = 4,
        **kwargs,
    ):
        arguments = locals()  # the named arguments, one per entry of VISION_SETTINGS
        given = {name: arguments[name] for name in VISION_SETTINGS}
        for name, value in check_settings("vision_config", given, VISION_SETTINGS).items():
            setattr(self, name, value)
        _pop_model_type("vision_config", kwargs, self.model_type)
        warn_unknown("vision_config", kwargs, tuple(VISION_SETTINGS), transformers_config_keys())
        super().__init__(**kwargs)
        self._validate_vision()

    def _validate_vision(self) -> None:
        """Checks that involve several fields (each field alone is checked by ``VISION_SETTINGS``)."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"vision hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"vision image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.time_embed_dim % 2 != 0:
            raise ValueError(f"vision time_embed_dim must be even (cos and sin halves), got {self.time_embed_dim}")
        # Raises on out-of-range indices.
        self.temporal_layer_ids()
        self.adaln_layer_ids()

    def temporal_layer_ids(self) -> list[int]:
        """Non-negative indices of the layers with temporal attention (empty without temporal modules)."""
        if not self.use_temporal_modules:
            return []
        return _normalise_layers(self.temporal_attn_layers, self.num_hidden_layers, "temporal_attn_layers")

    def adaln_layer_ids(self) -> list[int]:
        """Non-negative indices of the layers with AdaLN (empty without temporal modules)."""
        if not self.use_temporal_modules:
            return []
        return _normalise_layers(self.adaln_layers, self.num_hidden_layers, "adaln_layers")


PRUNEVID_SETTINGS = {
    "enabled": Setting(bool),
    "tau": Setting(float, low=-1, high=1),
    "temporal_segment_ratio": Setting(float, low=0, high=1, low_open=True),
    "cluster_ratio": Setting(float, low=0, high=1, low_open=True),
    "k": Setting(int, low=1),
    "min_tokens_to_cluster": Setting(int, low=0),
    "selected_layer": Setting(int, low=0),
    "alpha": Setting(float, low=0, high=1, low_open=True),
    "enable_stage1": Setting(bool),
    "enable_stage2": Setting(bool),
}


class PruneVidConfig(PretrainedConfig):
    r"""PruneVid settings (training-free token pruning for video samples). Off by default.

    Every setting is checked by ``PRUNEVID_SETTINGS`` (no coercion: ``"false"`` is not a bool).

    Args:
        enabled (`bool`): the on/off switch. Off means the model is bit-identical to one without PruneVid.
        tau (`float`): a spatial location is static in a segment iff its mean cosine similarity > tau.
        temporal_segment_ratio (`float`): temporal DPC-kNN clusters = int(num_frames * ratio).
        cluster_ratio (`float`): spatial DPC-kNN clusters = int(n * ratio).
        k (`int`): DPC-kNN neighbours (self included); stage 1 needs at least ``k`` frames.
        min_tokens_to_cluster (`int`): a token group is merged only if it holds more tokens than this.
        selected_layer (`int`): 0-based LLM decoder layer after which stage 2 prunes.
        alpha (`float`): fraction of every token group kept by stage 2.
        enable_stage1 (`bool`): run stage 1 (spatio-temporal merging before the LLM).
        enable_stage2 (`bool`): run stage 2 (attention-guided selection inside the LLM).
    """

    model_type = "pvc_prunevid"
    base_config_key = "prunevid"  # its section in the composite config.json
    SETTING_NAMES = tuple(PRUNEVID_SETTINGS)

    def __init__(
        self,
        enabled: bool = False,
        tau: float = 0.8,
        temporal_segment_ratio: float = 0.25,
        cluster_ratio: float = 0.5,
        k: int = 7,
        min_tokens_to_cluster: int = 14,
        selected_layer: int = 10,
        alpha: float = 0.4,
        enable_stage1: bool = True,
        enable_stage2: bool = True,
        **kwargs,
    ):
        arguments = locals()  # the named arguments, one per entry of PRUNEVID_SETTINGS
        given = {name: arguments[name] for name in PRUNEVID_SETTINGS}
        for name, value in check_settings("prunevid", given, PRUNEVID_SETTINGS).items():
            setattr(self, name, value)
        _pop_model_type("prunevid", kwargs, self.model_type)
        warn_unknown("prunevid", kwargs, self.SETTING_NAMES, transformers_config_keys())
        super().__init__(**kwargs)

    def validate_settings(self, num_llm_layers: int | None = None) -> None:
        """Check the current values (they may have been assigned after construction) and, when
        ``num_llm_layers`` is given, that ``selected_layer`` is a layer of the language model."""
        check_settings("prunevid", self.settings(), PRUNEVID_SETTINGS)
        if num_llm_layers is not None and self.selected_layer >= num_llm_layers:
            raise ValueError(
                f"prunevid selected_layer {self.selected_layer} is beyond the language model, which has "
                f"{num_llm_layers} layers (valid: 0..{num_llm_layers - 1})"
            )

    def settings(self) -> dict[str, Any]:
        """The PruneVid settings as a plain dict."""
        return {name: getattr(self, name) for name in self.SETTING_NAMES}

    def to_dict(self) -> dict[str, Any]:
        """The ``prunevid`` section of config.json: the settings plus any extra keys it was given (none of the
        generic model attributes: PruneVid configures a procedure, not a model)."""
        generic = transformers_config_keys()
        extra = {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in generic}
        stamp = {k: v for k, v in super().to_dict().items() if k in ("model_type", "transformers_version")}
        return {**extra, **self.settings(), **stamp}

    def merged(self, overrides: Mapping[str, Any] | None, num_llm_layers: int | None = None) -> PruneVidConfig:
        """A validated copy with per-call ``overrides`` applied (unknown keys and bad values raise
        ``ValueError``); ``selected_layer`` is checked against ``num_llm_layers`` when the result is enabled."""
        if overrides is not None and not isinstance(overrides, Mapping):
            raise ValueError(
                f"prunevid overrides must be a dict of settings such as {{'enabled': True}}, got "
                f"{_shown(overrides)} ({type(overrides).__name__})"
            )
        out = PruneVidConfig(**{**self.settings(), **check_settings("prunevid", overrides or {}, PRUNEVID_SETTINGS)})
        out.validate_settings(num_llm_layers if out.enabled else None)
        return out


_LLM_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Phi3ForCausalLM": "phi3"}


def _llm_model_type(llm_config: Mapping[str, Any]) -> str:
    """The transformers ``model_type`` of an LLM config dict (its ``model_type``, else its architecture)."""
    model_type = llm_config.get("model_type")
    if model_type is None:
        architectures = llm_config.get("architectures")
        if not isinstance(architectures, (list, tuple)) or not architectures:
            raise ValueError(
                f"llm_config has no model_type and no architectures list (got architectures={_shown(architectures)}); "
                f"set model_type to a transformers model type such as 'llama', 'qwen2' or 'phi3'"
            )
        model_type = _LLM_ARCHITECTURES.get(architectures[0])
        if model_type is None:
            raise ValueError(f"llm_config has no model_type and an unknown architecture {architectures[0]!r}")
    if model_type == "internlm2":
        raise ValueError(
            "llm_config is an InternLM2 config; this package runs InternLM2 weights as a native "
            "LlamaForCausalLM. Convert the checkpoint with conversion/convert_checkpoint.py first."
        )
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise ValueError(f"llm_config model_type {_shown(model_type)} is not a transformers model type")
    return model_type


def _build_llm_config(llm_config: Mapping[str, Any] | PretrainedConfig | None) -> PretrainedConfig:
    """Build a native transformers config (llama, qwen2, phi3, ...) from a dict or config (None = Llama)."""
    if isinstance(llm_config, PretrainedConfig):
        return llm_config
    if llm_config is None:
        llm_config = {"model_type": "llama"}
    if not isinstance(llm_config, Mapping):
        raise ValueError(
            f"config setting 'llm_config' must be a dict or a transformers PretrainedConfig, got "
            f"{_shown(llm_config)} ({type(llm_config).__name__})"
        )
    model_type = _llm_model_type(llm_config)
    llm_config = {key: value for key, value in llm_config.items() if key != "model_type"}
    config_class = CONFIG_MAPPING[model_type]
    if "rope_parameters" in llm_config and not _supports_rope_parameters(config_class):
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
            raise ValueError(f"llm_config {key} must be a JSON object or null, got {_shown(rope)} ({type(rope).__name__})")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default" and rope_type not in ROPE_INIT_FUNCTIONS:
            raise ValueError(
                f"llm_config {key} names the rotary embedding type {_shown(rope_type)}, which transformers does not "
                f"implement; known: default, {', '.join(sorted(ROPE_INIT_FUNCTIONS))}"
            )


def _supports_rope_parameters(config_class: type) -> bool:
    """transformers >= 5 folds ``rope_theta`` / ``rope_scaling`` into ``rope_parameters``."""
    return hasattr(config_class(), "rope_parameters")


def _legacy_rope(rope_parameters: dict | None) -> dict[str, Any]:
    """``rope_parameters`` (transformers 5) as the ``rope_theta`` / ``rope_scaling`` pair of transformers 4."""
    rope = dict(rope_parameters or {})
    out: dict[str, Any] = {}
    if "rope_theta" in rope:
        out["rope_theta"] = rope.pop("rope_theta")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    out["rope_scaling"] = None if rope_type == "default" else {**rope, "rope_type": rope_type, "type": rope_type}
    return out


CONFIG_SETTINGS = {
    "use_backbone_lora": Setting(int, low=0),
    "use_llm_lora": Setting(int, low=0),
    "use_temporal": Setting(bool),
    "pad2square": Setting(bool),
    "select_layer": Setting(int),
    "force_image_size": Setting(int, low=1, optional=True),
    "downsample_ratio": Setting(float, low=0, high=1, low_open=True),
    "template": Setting(str, choices=TEMPLATES),
    "dynamic_image_size": Setting(bool),
    "use_thumbnail": Setting(bool),
    "ps_version": Setting(str, choices=PIXEL_SHUFFLE_VERSIONS),
    "min_dynamic_patch": Setting(int, low=1),
    "max_dynamic_patch": Setting(int, low=1),
    "image_repeat_time": Setting(int, low=1),
    "video_repeat_time": Setting(int, low=1),
    "tile_repeat_way": Setting(str, choices=TILE_REPEAT_WAYS, optional=True),
    "mlp_add_ops": Setting(str, optional=True),
    "max_clip_frames": Setting(int, low=1, optional=True),
    "vision_chunk_frames": Setting(int, low=1, optional=True),
    "img_context_token_id": Setting(int, low=0, optional=True),
    "system_message": Setting(str, optional=True),
}
SUB_CONFIG_NAMES = ("vision_config", "llm_config", "prunevid")


def _build_vision_config(vision_config: Mapping[str, Any] | PVCInternVisionConfig | None,
                         use_temporal: bool) -> PVCInternVisionConfig:
    """The vision config, its temporal modules switched by the top-level ``use_temporal``."""
    if isinstance(vision_config, PVCInternVisionConfig):
        vision_config = vision_config.to_dict()
    if vision_config is None:
        vision_config = {}
    if not isinstance(vision_config, Mapping):
        raise ValueError(
            f"config setting 'vision_config' must be a dict or a PVCInternVisionConfig, got "
            f"{_shown(vision_config)} ({type(vision_config).__name__})"
        )
    return PVCInternVisionConfig(**{**vision_config, "use_temporal_modules": use_temporal})


def _build_prunevid(prunevid: Mapping[str, Any] | PruneVidConfig | None) -> PruneVidConfig:
    """The ``prunevid`` section (a dict of settings, plus any extra keys it carries)."""
    if isinstance(prunevid, PruneVidConfig):
        prunevid = prunevid.to_dict()
    if prunevid is not None and not isinstance(prunevid, Mapping):
        raise ValueError(f"prunevid settings must be a dict, got {_shown(prunevid)} ({type(prunevid).__name__})")
    return PruneVidConfig(**(prunevid or {}))


def _require_sections(config_dict: Any) -> None:
    """A config.json must hold both sub-configs as JSON objects (``PVCInternVLConfig()`` alone may not)."""
    if not isinstance(config_dict, Mapping):
        raise ValueError(f"a PVC-InternVL config must be a dict (a JSON object), got {type(config_dict).__name__}")
    for key, what in (("vision_config", "the InternViT encoder"), ("llm_config", "the language model")):
        if key not in config_dict:
            raise ValueError(
                f"config.json has no {key!r} section ({what}); a PVC-InternVL config.json needs both "
                "'vision_config' and 'llm_config' (official checkpoints: run conversion/convert_checkpoint.py)"
            )
        if not isinstance(config_dict[key], Mapping):
            raise ValueError(
                f"config.json {key!r} must be a JSON object (dict), got {_shown(config_dict[key])} "
                f"({type(config_dict[key]).__name__})"
            )


class PVCInternVLConfig(PretrainedConfig):
    r"""Composite configuration of a PVC-InternVL (or plain InternVL2) chat model.

    With ``use_temporal=False``, ``image_repeat_time=1``, ``video_repeat_time=1`` and
    ``downsample_ratio=0.5`` the model is exactly InternVL2.

    ``PVCInternVLConfig()`` builds the defaults (transformers calls it internally), but a config.json read
    with ``from_dict`` / ``from_pretrained`` must hold both ``vision_config`` and ``llm_config``.

    Args:
        vision_config (`dict` or `PVCInternVisionConfig`): the InternViT encoder.
        llm_config (`dict` or `PretrainedConfig`): any native causal-LM config (``model_type`` llama,
            qwen2, phi3, ...). InternLM2 checkpoints are converted to llama first.
        use_backbone_lora, use_llm_lora (`int`): LoRA ranks of the official training code; must be 0.
        use_temporal (`bool`): PVC progressive encoding (temporal attention + AdaLN) on; it sets
            ``vision_config.use_temporal_modules`` (the vision dict's own value is replaced).
        pad2square (`bool`): legacy preprocessing flag, kept for compatibility.
        select_layer (`int`): vision layer feeding the projector (-1 = last; other values index the
            hidden-states tuple ``(embeddings, block 1, ..., block N)``).
        force_image_size (`int`, *optional*): tile size; defaults to ``vision_config.image_size``.
        downsample_ratio (`float`): pixel-shuffle ratio r; tokens per frame = (S/patch)^2 * r^2.
        template (`str`): conversation template (``internlm2-chat``, ``Hermes-2``, ``phi3-chat``; not None).
        dynamic_image_size, use_thumbnail, min_dynamic_patch, max_dynamic_patch: tiling settings.
        ps_version (`str`): pixel-shuffle variant, ``"v1"`` or ``"v2"``.
        image_repeat_time (`int`): frames of the static clip each image tile becomes (PVC: 4).
        video_repeat_time (`int`): how many times each video frame is repeated (PVC: 1).
        tile_repeat_way (`str`, *optional*): order of a repeated tile's frame tokens in the LLM sequence:
            ``"tile_major"`` (``[tile1 f1..fR][tile2 f1..fR]...``, the default when None) or
            ``"frame_major"`` (``[all tiles f1][all tiles f2]...``).
        mlp_add_ops (`str`, *optional*): extra projector operations; only None is supported.
        max_clip_frames (`int`, *optional*): cut a video into independent temporal clips of at most
            this many frames (None = the whole video is one clip).
        vision_chunk_frames (`int`, *optional*): run the vision blocks one after the other, each on this
            many frames of a clip at a time, the temporal layers reading the earlier frames' keys/values
            from a store (exact; about 3 hidden states per frame instead of about 11). None = all frames
            at once.
        img_context_token_id (`int`, *optional*): token id of ``<IMG_CONTEXT>``.
        system_message (`str`, *optional*): overrides the template's system message.
        prunevid (`dict` or `PruneVidConfig`): PruneVid settings (off by default).
    """

    model_type = "pvc_internvl"
    sub_configs = {"vision_config": PVCInternVisionConfig, "llm_config": AutoConfig, "prunevid": PruneVidConfig}

    def __init__(
        self,
        vision_config: dict | PVCInternVisionConfig | None = None,
        llm_config: dict | PretrainedConfig | None = None,
        use_backbone_lora: int = 0,
        use_llm_lora: int = 0,
        use_temporal: bool = False,
        pad2square: bool = False,
        select_layer: int = -1,
        force_image_size: int | None = None,
        downsample_ratio: float = 0.5,
        template: str = "internlm2-chat",
        dynamic_image_size: bool = False,
        use_thumbnail: bool = False,
        ps_version: str = "v1",
        min_dynamic_patch: int = 1,
        max_dynamic_patch: int = 6,
        image_repeat_time: int = 1,
        video_repeat_time: int = 1,
        tile_repeat_way: str | None = None,
        mlp_add_ops: str | None = None,
        max_clip_frames: int | None = None,
        vision_chunk_frames: int | None = None,
        img_context_token_id: int | None = None,
        system_message: str | None = None,
        prunevid: dict | PruneVidConfig | None = None,
        **kwargs,
    ):
        arguments = locals()  # the named arguments, one per entry of CONFIG_SETTINGS
        given = {name: arguments[name] for name in CONFIG_SETTINGS}
        for name, value in check_settings("config", given, CONFIG_SETTINGS).items():
            setattr(self, name, value)
        _pop_model_type("config", kwargs, self.model_type)
        _check_dtype(kwargs)
        warn_unknown("config", kwargs, (*CONFIG_SETTINGS, *SUB_CONFIG_NAMES), transformers_config_keys())
        self.vision_config = _build_vision_config(vision_config, self.use_temporal)
        self.llm_config = _build_llm_config(copy.deepcopy(llm_config))
        self.prunevid = _build_prunevid(prunevid)
        kwargs.setdefault("tie_word_embeddings", getattr(self.llm_config, "tie_word_embeddings", False))
        super().__init__(**kwargs)
        self._validate()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> PVCInternVLConfig:
        """Like ``PretrainedConfig.from_dict`` (used by ``from_pretrained``), but a config.json must hold
        ``vision_config`` and ``llm_config``."""
        _require_sections(config_dict)
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> PVCInternVLConfig:
        """Like ``PretrainedConfig.from_json_file``, but the file must hold ``vision_config`` and ``llm_config``."""
        config_dict = cls._dict_from_json_file(json_file)
        _require_sections(config_dict)
        return cls(**config_dict)

    # ----------------------------------------------------------------------------------------- checks
    def _validate(self) -> None:
        """Checks that involve several fields (each field alone is checked by ``CONFIG_SETTINGS``)."""
        if self.use_backbone_lora or self.use_llm_lora:
            raise ValueError(
                f"LoRA ranks use_backbone_lora={self.use_backbone_lora}, use_llm_lora={self.use_llm_lora} are "
                "training-time settings of the official code; merge the LoRA weights before converting"
            )
        if self.mlp_add_ops is not None:
            raise ValueError(f"mlp_add_ops={self.mlp_add_ops!r} is not supported (only None)")
        if self.min_dynamic_patch > self.max_dynamic_patch:
            raise ValueError(
                f"min_dynamic_patch {self.min_dynamic_patch} is larger than max_dynamic_patch {self.max_dynamic_patch}"
            )
        self._validate_image_geometry()
        vocab_size = getattr(self.llm_config, "vocab_size", None)
        if self.img_context_token_id is not None and vocab_size is not None and self.img_context_token_id >= vocab_size:
            raise ValueError(
                f"img_context_token_id {self.img_context_token_id} is outside the language model's vocabulary "
                f"(vocab_size {vocab_size})"
            )
        llm_layers = getattr(self.llm_config, "num_hidden_layers", None)
        self.prunevid.validate_settings(llm_layers if self.prunevid.enabled else None)

    def _validate_image_geometry(self) -> None:
        """Tile size, pixel-shuffle ratio and ``select_layer`` against the vision config."""
        patch = self.vision_config.patch_size
        if self.image_size % patch != 0:
            raise ValueError(f"image size {self.image_size} is not a multiple of the patch size {patch}")
        grid = self.image_size // patch
        scale = 1.0 / self.downsample_ratio
        if abs(scale - round(scale)) > 1e-6 or grid % round(scale) != 0:
            raise ValueError(
                f"downsample_ratio {self.downsample_ratio} must be 1/k for an integer k dividing the patch grid "
                f"side {grid} (image size {self.image_size} / patch size {patch})"
            )
        layers = self.vision_config.num_hidden_layers
        if not -(layers + 1) <= self.select_layer < layers + 1:
            raise ValueError(
                f"select_layer {self.select_layer} is out of range for a vision model with "
                f"{layers} layers (hidden states 0..{layers})"
            )

    @property
    def text_config(self) -> PretrainedConfig:
        """The language model's config under the name transformers gives it (``get_text_config()``, generation,
        the cache classes); the official InternVL2 name, and the one config.json holds, is ``llm_config``."""
        return self.llm_config

    @text_config.setter
    def text_config(self, value: PretrainedConfig) -> None:
        self.llm_config = value

    # ------------------------------------------------------------------------------------ derived values
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
        """LLM tokens one tile (flag 1/2) or one video frame (flag 3) costs."""
        repeat = self.video_repeat_time if int(data_flag) == DataFlag.VIDEO else self.image_repeat_time
        return self.num_image_token * int(repeat)

    @property
    def max_context_length(self) -> int:
        """Longest prompt the language model accepts: max_position_embeddings, times the rope scaling
        factor for dynamic / linear / yarn / longrope scaling."""
        max_positions = int(getattr(self.llm_config, "max_position_embeddings", 0) or 0)
        rope = getattr(self.llm_config, "rope_parameters", None) or getattr(self.llm_config, "rope_scaling", None) or {}
        rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
        if rope_type in ("dynamic", "linear", "yarn", "longrope") and rope.get("factor"):
            return int(max_positions * float(rope["factor"]))
        return max_positions

    def to_json_string(self, use_diff: bool = True) -> str:
        """``PretrainedConfig.to_json_string``, plus the transformers-4 ``rope_theta`` / ``rope_scaling`` keys beside
        ``rope_parameters`` in ``llm_config``, so a config.json written on transformers 5 reads the same on 4.57
        (transformers 5 folds them back into ``rope_parameters`` on load)."""
        data = json.loads(super().to_json_string(use_diff=use_diff))
        llm = data.get("llm_config") or {}
        if llm.get("rope_parameters") is not None:
            for key, value in _legacy_rope(llm["rope_parameters"]).items():
                llm.setdefault(key, value)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["vision_config"] = self.vision_config.to_dict()
        output["llm_config"] = self.llm_config.to_dict()
        output["prunevid"] = self.prunevid.to_dict()
        output["model_type"] = self.model_type
        return output
