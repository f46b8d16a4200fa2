"""Configuration of PVC-InternVL: InternViT (+ PVC temporal modules) -> pixel shuffle -> mlp1 -> native LLM.

Three config objects:

* :class:`PVCInternVisionConfig` -- the InternViT encoder (300M style: LayerNorm + qkv bias; 6B style:
  RMSNorm + qk-normalisation) plus the PVC temporal fields. The temporal fields describe choices the
  published PVC code does not settle (see the design notes); each one is explicit and documented.
* :class:`PruneVidConfig` -- the optional, training-free PruneVid token pruning (off by default).
* :class:`PVCInternVLConfig` -- the composite: vision config, the language model config (any native
  transformers causal LM config: llama, qwen2, phi3, ...) and the official InternVL2 / PVC top-level keys.
"""

from __future__ import annotations

import copy
from enum import IntEnum
from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING



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


def _normalise_layers(layers: list[int] | None, num_layers: int, name: str) -> list[int]:
    """Turn a list of (possibly negative) layer indices into a sorted list of non-negative ones.

    ``None`` means every layer.
    """
    if layers is None:
        return list(range(num_layers))
    out = set()
    for index in layers:
        index = int(index)
        if not -num_layers <= index < num_layers:
            raise ValueError(f"{name} contains layer {index}, but the vision model has {num_layers} layers")
        out.add(index % num_layers)
    return sorted(out)


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
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.image_size = image_size
        self.qkv_bias = qkv_bias
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.qk_normalization = qk_normalization
        self.num_hidden_layers = num_hidden_layers
        self.use_flash_attn = use_flash_attn
        self.hidden_act = hidden_act
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer_factor = initializer_factor
        self.use_temporal_modules = use_temporal_modules
        self.temporal_attn_layers = None if temporal_attn_layers is None else list(temporal_attn_layers)
        self.adaln_layers = None if adaln_layers is None else list(adaln_layers)
        self.temporal_causal = temporal_causal
        self.temporal_include_cls = temporal_include_cls
        self.temporal_attn_norm = temporal_attn_norm
        self.time_embed_dim = time_embed_dim
        self.time_embed_max_period = time_embed_max_period
        self.time_embed_order = time_embed_order
        self.time_input = time_input
        self.adaln_num_modulations = adaln_num_modulations
        super().__init__(**kwargs)
        self._validate_vision()

    def _validate_vision(self) -> None:
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"vision hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"vision image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.norm_type not in VISION_NORM_TYPES:
            raise ValueError(f"vision norm_type must be one of {VISION_NORM_TYPES}, got {self.norm_type!r}")
        if self.time_embed_order not in TIME_EMBED_ORDERS:
            raise ValueError(f"time_embed_order must be one of {TIME_EMBED_ORDERS}, got {self.time_embed_order!r}")
        if self.time_input not in TIME_INPUTS:
            raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {self.time_input!r}")
        if self.time_embed_dim <= 0 or self.time_embed_dim % 2 != 0:
            raise ValueError(f"time_embed_dim must be a positive even number, got {self.time_embed_dim}")
        if self.adaln_num_modulations not in (4, 6):
            raise ValueError(f"adaln_num_modulations must be 4 or 6, got {self.adaln_num_modulations}")
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


class PruneVidConfig(PretrainedConfig):
    r"""PruneVid settings (training-free token pruning for video samples). Off by default.

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
        self.enabled = bool(enabled)
        self.tau = float(tau)
        self.temporal_segment_ratio = float(temporal_segment_ratio)
        self.cluster_ratio = float(cluster_ratio)
        self.k = int(k)
        self.min_tokens_to_cluster = int(min_tokens_to_cluster)
        self.selected_layer = int(selected_layer)
        self.alpha = float(alpha)
        self.enable_stage1 = bool(enable_stage1)
        self.enable_stage2 = bool(enable_stage2)
        super().__init__(**kwargs)
        self.validate_settings()

    SETTING_NAMES = (
        "enabled",
        "tau",
        "temporal_segment_ratio",
        "cluster_ratio",
        "k",
        "min_tokens_to_cluster",
        "selected_layer",
        "alpha",
        "enable_stage1",
        "enable_stage2",
    )

    def validate_settings(self, num_llm_layers: int | None = None) -> None:
        """Raise ``ValueError`` naming the first impossible setting."""
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"prunevid alpha must be in (0, 1], got {self.alpha}")
        for name in ("temporal_segment_ratio", "cluster_ratio"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"prunevid {name} must be in (0, 1], got {value}")
        if not -1.0 <= self.tau <= 1.0:
            raise ValueError(f"prunevid tau is a cosine-similarity threshold in [-1, 1], got {self.tau}")
        if self.k < 1:
            raise ValueError(f"prunevid k (DPC-kNN neighbours) must be >= 1, got {self.k}")
        if self.min_tokens_to_cluster < 0:
            raise ValueError(f"prunevid min_tokens_to_cluster must be >= 0, got {self.min_tokens_to_cluster}")
        if self.selected_layer < 0:
            raise ValueError(f"prunevid selected_layer must be >= 0, got {self.selected_layer}")
        if num_llm_layers is not None and self.selected_layer >= num_llm_layers:
            raise ValueError(
                f"prunevid selected_layer {self.selected_layer} is beyond the language model, which has "
                f"{num_llm_layers} layers (valid: 0..{num_llm_layers - 1})"
            )

    def settings(self) -> dict[str, Any]:
        """The PruneVid settings as a plain dict."""
        return {name: getattr(self, name) for name in self.SETTING_NAMES}

    def merged(self, overrides: dict[str, Any] | None, num_llm_layers: int | None = None) -> PruneVidConfig:
        """A validated copy with per-call ``overrides`` applied (unknown keys raise ``ValueError``)."""
        values = self.settings()
        for key, value in (overrides or {}).items():
            if key not in values:
                raise ValueError(f"unknown prunevid setting {key!r}; known: {', '.join(self.SETTING_NAMES)}")
            values[key] = value
        out = PruneVidConfig(**values)
        out.validate_settings(num_llm_layers if out.enabled else None)
        return out


def _build_llm_config(llm_config: dict | PretrainedConfig | None) -> PretrainedConfig:
    """Build a native transformers config (llama, qwen2, phi3, ...) from a dict or config."""
    if isinstance(llm_config, PretrainedConfig):
        return llm_config
    llm_config = dict(llm_config or {"model_type": "llama"})
    model_type = llm_config.get("model_type")
    if model_type is None:
        architectures = llm_config.get("architectures") or ["LlamaForCausalLM"]
        guesses = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Phi3ForCausalLM": "phi3"}
        model_type = guesses.get(architectures[0])
        if model_type is None:
            raise ValueError(f"llm_config has no model_type and an unknown architecture {architectures[0]!r}")
    if model_type == "internlm2":
        raise ValueError(
            "llm_config is an InternLM2 config; this package runs InternLM2 weights as a native "
            "LlamaForCausalLM. Convert the checkpoint with conversion/convert_checkpoint.py first."
        )
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"llm_config model_type {model_type!r} is not a transformers model type")
    llm_config = {key: value for key, value in llm_config.items() if key != "model_type"}
    config_class = CONFIG_MAPPING[model_type]
    if "rope_parameters" in llm_config and not _supports_rope_parameters(config_class):
        llm_config.update(_legacy_rope(llm_config.pop("rope_parameters")))
    return config_class(**llm_config)


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


class PVCInternVLConfig(PretrainedConfig):
    r"""Composite configuration of a PVC-InternVL (or plain InternVL2) chat model.

    With ``use_temporal=False``, ``image_repeat_time=1``, ``video_repeat_time=1`` and
    ``downsample_ratio=0.5`` the model is exactly InternVL2.

    Args:
        vision_config (`dict` or `PVCInternVisionConfig`): the InternViT encoder.
        llm_config (`dict` or `PretrainedConfig`): any native causal-LM config (``model_type`` llama,
            qwen2, phi3, ...). InternLM2 checkpoints are converted to llama first.
        use_backbone_lora, use_llm_lora (`int`): LoRA ranks of the official training code; must be 0.
        use_temporal (`bool`): PVC progressive encoding (temporal attention + AdaLN) on.
        pad2square (`bool`): legacy preprocessing flag, kept for compatibility.
        select_layer (`int`): vision layer feeding the projector (-1 = last; other values index the
            hidden-states tuple ``(embeddings, block 1, ..., block N)``).
        force_image_size (`int`, *optional*): tile size; defaults to ``vision_config.image_size``.
        downsample_ratio (`float`): pixel-shuffle ratio r; tokens per frame = (S/patch)^2 * r^2.
        template (`str`): conversation template (``internlm2-chat``, ``Hermes-2``, ``phi3-chat``).
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
    sub_configs = {"vision_config": PVCInternVisionConfig, "llm_config": AutoConfig}

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
        template: str | None = "internlm2-chat",
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
        if isinstance(vision_config, PVCInternVisionConfig):
            vision_config = vision_config.to_dict()
        vision_config = dict(vision_config or {})
        vision_config.pop("model_type", None)
        vision_config.pop("transformers_version", None)
        vision_config["use_temporal_modules"] = bool(use_temporal)
        self.vision_config = PVCInternVisionConfig(**vision_config)
        self.llm_config = _build_llm_config(copy.deepcopy(llm_config))
        if isinstance(prunevid, PruneVidConfig):
            prunevid = prunevid.settings()
        self.prunevid = PruneVidConfig(**{k: v for k, v in (prunevid or {}).items() if k in PruneVidConfig.SETTING_NAMES})

        self.use_backbone_lora = use_backbone_lora
        self.use_llm_lora = use_llm_lora
        self.use_temporal = bool(use_temporal)
        self.pad2square = pad2square
        self.select_layer = select_layer
        self.force_image_size = force_image_size
        self.downsample_ratio = downsample_ratio
        self.template = template
        self.dynamic_image_size = dynamic_image_size
        self.use_thumbnail = use_thumbnail
        self.ps_version = ps_version
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        self.image_repeat_time = image_repeat_time
        self.video_repeat_time = video_repeat_time
        self.tile_repeat_way = tile_repeat_way
        self.mlp_add_ops = mlp_add_ops
        self.max_clip_frames = max_clip_frames
        self.vision_chunk_frames = vision_chunk_frames
        self.img_context_token_id = img_context_token_id
        self.system_message = system_message
        kwargs.setdefault("tie_word_embeddings", getattr(self.llm_config, "tie_word_embeddings", False))
        super().__init__(**kwargs)
        self._validate()

    # ----------------------------------------------------------------------------------------- checks
    def _validate(self) -> None:
        if self.use_backbone_lora or self.use_llm_lora:
            raise ValueError(
                f"LoRA ranks use_backbone_lora={self.use_backbone_lora}, use_llm_lora={self.use_llm_lora} are "
                "training-time settings of the official code; merge the LoRA weights before converting"
            )
        if self.ps_version not in PIXEL_SHUFFLE_VERSIONS:
            raise ValueError(f"ps_version must be one of {PIXEL_SHUFFLE_VERSIONS}, got {self.ps_version!r}")
        if self.tile_repeat_way is not None and self.tile_repeat_way not in TILE_REPEAT_WAYS:
            raise ValueError(f"tile_repeat_way must be None or one of {TILE_REPEAT_WAYS}, got {self.tile_repeat_way!r}")
        if self.mlp_add_ops is not None:
            raise ValueError(f"mlp_add_ops={self.mlp_add_ops!r} is not supported (only None)")
        if self.template is not None and self.template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {self.template!r}")
        for name in ("image_repeat_time", "video_repeat_time", "min_dynamic_patch", "max_dynamic_patch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_dynamic_patch > self.max_dynamic_patch:
            raise ValueError(
                f"min_dynamic_patch {self.min_dynamic_patch} is larger than max_dynamic_patch {self.max_dynamic_patch}"
            )
        for name in ("max_clip_frames", "vision_chunk_frames"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be None or >= 1, got {value}")
        grid = self.image_size // self.vision_config.patch_size
        if self.image_size % self.vision_config.patch_size != 0:
            raise ValueError(
                f"image size {self.image_size} is not a multiple of the patch size {self.vision_config.patch_size}"
            )
        scale = 1.0 / self.downsample_ratio if self.downsample_ratio > 0 else 0.0
        if self.downsample_ratio <= 0 or abs(scale - round(scale)) > 1e-6 or grid % round(scale) != 0:
            raise ValueError(
                f"downsample_ratio {self.downsample_ratio} must be 1/k for an integer k dividing the patch grid "
                f"side {grid} (image size {self.image_size} / patch size {self.vision_config.patch_size})"
            )
        if not -(self.vision_config.num_hidden_layers + 1) <= self.select_layer < self.vision_config.num_hidden_layers + 1:
            raise ValueError(
                f"select_layer {self.select_layer} is out of range for a vision model with "
                f"{self.vision_config.num_hidden_layers} layers (hidden states 0..{self.vision_config.num_hidden_layers})"
            )
        self.prunevid.validate_settings(getattr(self.llm_config, "num_hidden_layers", None) if self.prunevid.enabled else None)

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

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["vision_config"] = self.vision_config.to_dict()
        output["llm_config"] = self.llm_config.to_dict()
        if output["llm_config"].get("rope_parameters") is not None:
            # Also write the transformers-4 keys, so the saved config reads the same on both major versions.
            for key, value in _legacy_rope(output["llm_config"]["rope_parameters"]).items():
                output["llm_config"].setdefault(key, value)
        output["prunevid"] = self.prunevid.settings()
        output["model_type"] = self.model_type
        return output
