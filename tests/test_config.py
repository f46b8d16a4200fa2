"""Strict configuration validation: every bad setting is refused with a message naming the setting, the value
and what is allowed, whichever way it arrives (config.json / ``from_dict``, keyword arguments as the converter's
``--set`` passes them, per-call PruneVid overrides, the vision config); valid configs still load and round-trip."""

from __future__ import annotations

import copy
import inspect
import json
import math
import re

import numpy as np
import pytest

from pvc_internvl.configuration_pvc_internvl import (
    LLM_ARCHITECTURES,
    DataFlag,
    PVCInternVisionConfig,
    PVCInternVLConfig,
    PruneVidConfig,
    Setting,
    tokens_per_tile,
    transformers_config_keys,
)
from pvc_internvl.conversation import DEFAULT_TEMPLATE, TEMPLATES
from pvc_internvl.media import MAX_TILES
from tests.conftest import ROOT
from tests.tiny import tiny_config, tiny_llm, tiny_vision
from tests.tokenizer_utils import VOCAB_SIZE

DROP = object()  # marks a key to remove from the base dict


def config_dict(**changes) -> dict:
    """The tiny PVC config as a config.json dict, with ``changes`` applied (``"vision_config.x"`` for nested keys)."""
    out = copy.deepcopy(tiny_config().to_dict())
    for key, value in changes.items():
        section, _, name = key.partition(".")
        target, name = (out[section], name) if name else (out, key)
        if value is DROP:
            del target[name]
        else:
            target[name] = value
    return out


# (changes to the tiny config.json, phrase of the error message)
BAD_CONFIG_DICTS = [
    ({"use_temporal": "false"}, "config setting 'use_temporal' must be a bool (True/False), got 'false' (str)"),
    ({"use_temporal": 1}, "'use_temporal' must be a bool (True/False), got 1 (int)"),
    ({"dynamic_image_size": "true"}, "'dynamic_image_size' must be a bool (True/False), got 'true' (str)"),
    ({"image_repeat_time": 2.9}, "'image_repeat_time' must be an int >= 1, got 2.9 (float)"),
    ({"image_repeat_time": 0}, "'image_repeat_time' must be an int >= 1, got 0 (int)"),
    ({"image_repeat_time": True}, "'image_repeat_time' must be an int >= 1, got True (bool)"),
    ({"video_repeat_time": "1"}, "'video_repeat_time' must be an int >= 1, got '1' (str)"),
    ({"downsample_ratio": "0.25"}, "'downsample_ratio' must be a finite number in (0, 1], got '0.25' (str)"),
    ({"downsample_ratio": True}, "'downsample_ratio' must be a finite number in (0, 1], got True (bool)"),
    ({"downsample_ratio": 0}, "'downsample_ratio' must be a finite number in (0, 1], got 0 (int)"),
    ({"downsample_ratio": math.nan}, "'downsample_ratio' must be a finite number in (0, 1], got nan (float)"),
    ({"downsample_ratio": 0.3}, "downsample_ratio 0.3 must be 1/k for an integer k dividing the patch grid side 8"),
    ({"template": "llama3"}, f"'template' must be a str, one of {', '.join(map(repr, TEMPLATES))}, got 'llama3'"),
    ({"template": None}, f"'template' must be a str, one of {', '.join(map(repr, TEMPLATES))}, got None"),
    ({"ps_version": "v3"}, "'ps_version' must be a str, one of 'v1', 'v2', got 'v3' (str)"),
    ({"select_layer": "-1"}, "'select_layer' must be an int, got '-1' (str)"),
    ({"select_layer": 7}, "select_layer 7 is out of range for a vision model with 2 layers"),
    ({"force_image_size": 0}, "'force_image_size' must be None or an int >= 1, got 0 (int)"),
    ({"force_image_size": 100}, "image size 100 is not a multiple of the patch size 14"),
    ({"max_dynamic_patch": 6.5}, f"'max_dynamic_patch' must be an int in [1, {MAX_TILES}], got 6.5 (float)"),
    ({"max_dynamic_patch": MAX_TILES + 1}, f"'max_dynamic_patch' must be an int in [1, {MAX_TILES}], got {MAX_TILES + 1}"),
    ({"min_dynamic_patch": 8}, "min_dynamic_patch 8 is larger than max_dynamic_patch 6"),
    ({"tile_repeat_way": "frames"}, "must be None or a str, one of 'tile_major', 'frame_major', got 'frames'"),
    ({"max_clip_frames": 0}, "'max_clip_frames' must be None or an int >= 1, got 0 (int)"),
    ({"vision_chunk_frames": 2.0}, "'vision_chunk_frames' must be None or an int >= 1, got 2.0 (float)"),
    ({"img_context_token_id": -1}, "'img_context_token_id' must be None or an int >= 0, got -1 (int)"),
    ({"img_context_token_id": VOCAB_SIZE}, f"img_context_token_id {VOCAB_SIZE} is outside the language model's vocabulary"),
    ({"system_message": 5}, "'system_message' must be None or a str, got 5 (int)"),
    ({"use_backbone_lora": 8}, "LoRA ranks use_backbone_lora=8, use_llm_lora=0 are training-time settings"),
    ({"use_llm_lora": False}, "'use_llm_lora' must be an int >= 0, got False (bool)"),
    ({"mlp_add_ops": "ln"}, "mlp_add_ops='ln' is not supported (only None)"),
    ({"model_type": "internvl_chat"}, "config model_type must be 'pvc_internvl', got 'internvl_chat'"),
    ({"llm_config": DROP}, "config.json has no 'llm_config' section (the language model)"),
    ({"vision_config": DROP}, "config.json has no 'vision_config' section (the InternViT encoder)"),
    ({"llm_config": "llama"}, "config.json 'llm_config' must be a JSON object (dict), got 'llama' (str)"),
    ({"vision_config": None}, "config.json 'vision_config' must be a JSON object (dict), got None (NoneType)"),
    ({"llm_config.model_type": "internlm2"}, "llm_config is an InternLM2 config"),
    ({"llm_config.model_type": DROP}, "llm_config has no model_type and no architectures list"),
    ({"llm_config.model_type": "not_a_model"}, "llm_config model_type 'not_a_model' is not a transformers model type"),
    ({"prunevid.enabled": "false"}, "prunevid setting 'enabled' must be a bool (True/False), got 'false' (str)"),
    ({"prunevid.k": 2.9}, "prunevid setting 'k' must be an int >= 1, got 2.9 (float)"),
    ({"prunevid": ["enabled"]}, "prunevid settings must be a dict, got ['enabled'] (list)"),
    ({"prunevid.enabled": True}, "prunevid selected_layer 10 is beyond the language model, which has 2 layers"),
    ({"vision_config.hidden_size": 32.0}, "vision_config setting 'hidden_size' must be an int >= 1, got 32.0 (float)"),
]


@pytest.mark.parametrize("changes, phrase", BAD_CONFIG_DICTS, ids=[str(c) for c, _ in BAD_CONFIG_DICTS])
def test_bad_config_dict_is_refused(changes, phrase):
    with pytest.raises(ValueError, match=re.escape(phrase)):
        PVCInternVLConfig.from_dict(config_dict(**changes))


# (vision settings changed from tests.tiny.tiny_vision, phrase)
BAD_VISION = [
    ({"hidden_size": 2.5}, "vision_config setting 'hidden_size' must be an int >= 1, got 2.5 (float)"),
    ({"hidden_size": "32"}, "vision_config setting 'hidden_size' must be an int >= 1, got '32' (str)"),
    ({"num_hidden_layers": 0}, "'num_hidden_layers' must be an int >= 1, got 0 (int)"),
    ({"qkv_bias": "true"}, "'qkv_bias' must be a bool (True/False), got 'true' (str)"),
    ({"qk_normalization": 0}, "'qk_normalization' must be a bool (True/False), got 0 (int)"),
    ({"use_temporal_modules": "yes"}, "'use_temporal_modules' must be a bool (True/False), got 'yes' (str)"),
    ({"norm_type": "batch_norm"}, "'norm_type' must be a str, one of 'layer_norm', 'rms_norm', got 'batch_norm'"),
    ({"layer_norm_eps": 0}, "'layer_norm_eps' must be a finite number > 0, got 0 (int)"),
    ({"layer_norm_eps": math.inf}, "'layer_norm_eps' must be a finite number > 0, got inf (float)"),
    ({"drop_path_rate": 1.5}, "'drop_path_rate' must be a finite number in [0, 1], got 1.5 (float)"),
    ({"temporal_attn_layers": [0.5]}, "'temporal_attn_layers' must be None or a list of ints, got [0.5] (list)"),
    ({"adaln_layers": "0,1"}, "'adaln_layers' must be None or a list of ints, got '0,1' (str)"),
    ({"use_temporal_modules": True, "temporal_attn_layers": [5]},
     "temporal_attn_layers contains layer 5, but the vision model has 2 layers"),
    ({"time_embed_dim": 15}, "vision time_embed_dim must be even (cos and sin halves), got 15"),
    ({"time_embed_order": "sin"}, "'time_embed_order' must be a str, one of 'cos_sin', 'sin_cos', got 'sin'"),
    ({"time_input": "seconds"}, "'time_input' must be a str, one of 'index', 'normalized', got 'seconds'"),
    ({"adaln_num_modulations": 5}, "'adaln_num_modulations' must be an int, one of 4, 6, got 5 (int)"),
    ({"hidden_act": "gelux"}, "'hidden_act' must be a str, one of"),
    ({"model_type": "intern_vit_6b"}, "vision_config model_type must be 'pvc_intern_vit', got 'intern_vit_6b'"),
    ({"hidden_size": 30}, "vision hidden_size 30 is not divisible by num_attention_heads 4"),
    ({"image_size": 100}, "vision image_size 100 is not a multiple of patch_size 14"),
]


@pytest.mark.parametrize("changes, phrase", BAD_VISION, ids=[str(c) for c, _ in BAD_VISION])
def test_bad_vision_config_is_refused(changes, phrase):
    with pytest.raises(ValueError, match=re.escape(phrase)):
        PVCInternVisionConfig(**tiny_vision(**changes))


# Per-call overrides as chat()/generate() pass them (prunevid={...}); the tiny LLM has 2 layers.
BAD_OVERRIDES = [
    ({"enabled": "false"}, "prunevid setting 'enabled' must be a bool (True/False), got 'false' (str)"),
    ({"enabled": 1}, "prunevid setting 'enabled' must be a bool (True/False), got 1 (int)"),
    ({"enable_stage1": None}, "prunevid setting 'enable_stage1' must be a bool (True/False), got None (NoneType)"),
    ({"k": 2.9}, "prunevid setting 'k' must be an int >= 1, got 2.9 (float)"),
    ({"k": 0}, "prunevid setting 'k' must be an int >= 1, got 0 (int)"),
    ({"k": "7"}, "prunevid setting 'k' must be an int >= 1, got '7' (str)"),
    ({"alpha": 0}, "prunevid setting 'alpha' must be a finite number in (0, 1], got 0 (int)"),
    ({"alpha": 1.5}, "prunevid setting 'alpha' must be a finite number in (0, 1], got 1.5 (float)"),
    ({"alpha": True}, "prunevid setting 'alpha' must be a finite number in (0, 1], got True (bool)"),
    ({"tau": 1.5}, "prunevid setting 'tau' must be a finite number in [-1, 1], got 1.5 (float)"),
    ({"tau": math.nan}, "prunevid setting 'tau' must be a finite number in [-1, 1], got nan (float)"),
    ({"temporal_segment_ratio": 0}, "'temporal_segment_ratio' must be a finite number in (0, 1], got 0 (int)"),
    ({"cluster_ratio": "0.5"}, "'cluster_ratio' must be a finite number in (0, 1], got '0.5' (str)"),
    ({"min_tokens_to_cluster": -1}, "'min_tokens_to_cluster' must be an int >= 0, got -1 (int)"),
    ({"selected_layer": -1}, "'selected_layer' must be an int >= 0, got -1 (int)"),
    ({"enabled": True, "selected_layer": 2},
     "prunevid selected_layer 2 is beyond the language model, which has 2 layers (valid: 0..1)"),
    ({"aplha": 0.5}, "unknown prunevid setting 'aplha' (did you mean 'alpha'?)"),
    (True, "prunevid overrides must be a dict of settings such as {'enabled': True}, got True (bool)"),
    ([("k", 3)], "prunevid overrides must be a dict of settings such as {'enabled': True}, got [('k', 3)] (list)"),
]


@pytest.mark.parametrize("overrides, phrase", BAD_OVERRIDES, ids=[str(o) for o, _ in BAD_OVERRIDES])
def test_bad_prunevid_override_is_refused(overrides, phrase):
    with pytest.raises(ValueError, match=re.escape(phrase)):
        PruneVidConfig().merged(overrides, num_llm_layers=2)


# Keyword arguments, as the converter's ``--set KEY=JSON`` hands them to ``PVCInternVLConfig(**fields)``.
BAD_KEYWORDS = [
    ({"prunevid": {"enabled": "false"}}, "prunevid setting 'enabled' must be a bool (True/False), got 'false' (str)"),
    ({"vision_config": "InternViT-300M"}, "config setting 'vision_config' must be a dict or a PVCInternVisionConfig"),
    ({"llm_config": 7}, "config setting 'llm_config' must be a dict or a transformers PretrainedConfig, got 7 (int)"),
    ({"vision_config": tiny_vision(use_flash_attn="true")}, "vision_config setting 'use_flash_attn' must be a bool"),
]


@pytest.mark.parametrize("keywords, phrase", BAD_KEYWORDS, ids=[str(k) for k, _ in BAD_KEYWORDS])
def test_bad_keyword_is_refused(keywords, phrase):
    with pytest.raises(ValueError, match=re.escape(phrase)):
        tiny_config(**keywords)


def test_prunevid_config_refuses_coercion():
    with pytest.raises(ValueError, match=re.escape("prunevid setting 'enabled' must be a bool (True/False), got 'false'")):
        PruneVidConfig(enabled="false")


# (changes to the config dict, the section whose warning names a known setting or None, the known setting)
EXTRA_KEYS = [
    ({"not_a_field": 1}, None, None),
    ({"use_temporl": True}, "config", "use_temporal"),
    ({"max_dynamic_pach": 12}, "config", "max_dynamic_patch"),
    ({"prunevid.enabeld": True}, "prunevid", "enabled"),
    ({"vision_config.hiden_size": 32}, "vision_config", "hidden_size"),
]


@pytest.mark.parametrize("changes, section, known", EXTRA_KEYS, ids=[str(c) for c, _, _ in EXTRA_KEYS])
def test_extra_keys_are_kept_and_typos_named(tmp_path, caplog, changes, section, known):
    """Like every transformers config: an unknown key is kept as an attribute and written back; one that looks
    like a typo of a known setting logs a warning naming that setting; known settings stay strictly checked."""
    with caplog.at_level("WARNING"):
        config = PVCInternVLConfig.from_dict(config_dict(**changes))
    (path, value), = changes.items()
    *parents, name = path.split(".")
    holder = getattr(config, parents[0]) if parents else config
    assert getattr(holder, name) == value
    warnings = [r.getMessage() for r in caplog.records if "did you mean" in r.getMessage()]
    if known is None:
        assert not warnings
    else:
        assert len(warnings) == 1 and f"{section} has an unknown setting {name!r} (did you mean {known!r}?)" in warnings[0]
    config.save_pretrained(tmp_path)
    reloaded = PVCInternVLConfig.from_pretrained(tmp_path)
    assert getattr(getattr(reloaded, parents[0]) if parents else reloaded, name) == value
    assert reloaded.to_dict() == config.to_dict()


def test_value_assigned_after_construction_is_checked_by_merged():
    config = tiny_config()
    config.prunevid.k = 2.9
    with pytest.raises(ValueError, match=re.escape("prunevid setting 'k' must be an int >= 1, got 2.9 (float)")):
        config.prunevid.merged(None, 2)


# ------------------------------------------------------------------------------------------ valid inputs
def test_valid_overrides_are_applied_without_touching_the_config():
    base = PruneVidConfig()
    merged = base.merged({"enabled": True, "k": np.int64(3), "alpha": 1, "selected_layer": 1}, num_llm_layers=2)
    assert merged.settings() == {**base.settings(), "enabled": True, "k": 3, "alpha": 1.0, "selected_layer": 1}
    assert type(merged.k) is int and type(merged.alpha) is float
    assert base.enabled is False and base.k == 7
    assert base.merged(None).settings() == base.settings()


def test_numbers_are_normalised_not_coerced():
    config = tiny_config(downsample_ratio=1, image_repeat_time=np.int64(4), force_image_size=np.int32(112))
    assert type(config.downsample_ratio) is float and config.downsample_ratio == 1.0
    assert type(config.image_repeat_time) is int and config.image_repeat_time == 4
    assert config.num_image_token == 64  # 8 x 8 patches, no merging


@pytest.mark.parametrize("template", list(TEMPLATES))
@pytest.mark.parametrize("tile_repeat_way", [None, "tile_major", "frame_major"])
def test_valid_settings_are_accepted(template, tile_repeat_way):
    config = tiny_config(template=template, tile_repeat_way=tile_repeat_way, ps_version="v1", max_clip_frames=None,
                         vision_chunk_frames=2, system_message="Be brief.",
                         prunevid={"enabled": True, "selected_layer": 1, "k": 3})
    assert (config.template, config.tile_repeat_way, config.vision_chunk_frames) == (template, tile_repeat_way, 2)
    assert config.prunevid.enabled is True and config.prunevid.k == 3


def test_config_without_arguments_still_builds():
    """transformers calls ``cls()`` internally (e.g. ``to_diff_dict`` on version 4)."""
    config = PVCInternVLConfig()
    assert config.llm_config.model_type == "llama" and config.num_image_token == 256
    assert config.template == DEFAULT_TEMPLATE and config.vision_config.hidden_size == 1024
    assert "prunevid" in config.to_diff_dict()


@pytest.mark.parametrize("cls", [PVCInternVisionConfig, PruneVidConfig, PVCInternVLConfig])
def test_signature_docstring_and_defaults_come_from_the_settings_table(cls):
    """Each setting is declared once, in ``cls.SETTINGS``: the signature, the docstring and the defaults follow."""
    params = inspect.signature(cls).parameters
    assert list(params) == [*cls.SETTINGS, "kwargs"] and params["kwargs"].kind is inspect.Parameter.VAR_KEYWORD
    config = cls()
    for name, spec in cls.SETTINGS.items():
        assert params[name].default == spec.default, name
        assert f"\n    {name} (`{spec.annotation}`, default {spec.default!r}): {spec.doc}" in cls.__doc__, name
        if spec.kind is not dict:
            assert getattr(config, name) == spec.default, name
    assert cls.__doc__.count("\n    ") == len(cls.SETTINGS)  # one Args line each


def test_positional_arguments_bind_in_table_order():
    config = PruneVidConfig(True, 0.5)
    assert (config.enabled, config.tau, config.k) == (True, 0.5, 7)
    with pytest.raises(TypeError):
        PruneVidConfig(*range(len(PruneVidConfig.SETTINGS) + 1))


def test_llm_config_without_model_type_is_resolved_by_its_architecture():
    for architecture, model_type in LLM_ARCHITECTURES.items():
        llm = {key: value for key, value in tiny_llm(architectures=[architecture]).items() if key != "model_type"}
        assert tiny_config(llm_config=llm).llm_config.model_type == model_type
    llm = {key: value for key, value in tiny_llm(architectures=["GPT2LMHeadModel"]).items() if key != "model_type"}
    with pytest.raises(ValueError, match="no architectures list naming a known language model"):
        tiny_config(llm_config=llm)


def test_tokens_per_tile_function_and_method_agree():
    config = tiny_config(image_repeat_time=4, video_repeat_time=2)
    assert config.num_image_token == 4
    assert tokens_per_tile(DataFlag.IMAGE, 4, 4, 2) == config.tokens_per_tile(DataFlag.IMAGE) == 16
    assert tokens_per_tile(DataFlag.MULTI_IMAGE, 4, 4, 2) == config.tokens_per_tile(DataFlag.MULTI_IMAGE) == 16
    assert tokens_per_tile(DataFlag.VIDEO, 4, 4, 2) == config.tokens_per_tile(DataFlag.VIDEO) == 8


def test_generic_keys_come_from_transformers():
    keys = transformers_config_keys()
    assert {"architectures", "auto_map", "transformers_version", "dtype", "torch_dtype", "_name_or_path"} <= keys
    assert "use_temporal" not in keys and "not_a_field" not in keys


def test_setting_describes_its_rule():
    assert Setting(float, 0.5, low=0, high=1, low_open=True).describe() == "a finite number in (0, 1]"
    assert Setting(int, None, low=1).describe() == "None or an int >= 1"  # a default of None allows None
    assert Setting(str, "v1", choices=("v1", "v2")).describe() == "a str, one of 'v1', 'v2'"


def test_repository_config_json_loads_unchanged():
    raw = json.loads((ROOT / "config.json").read_text())
    config = PVCInternVLConfig.from_dict(copy.deepcopy(raw))
    assert (config.num_image_token, config.image_repeat_time, config.use_temporal) == (64, 4, True)
    assert config.vision_config.use_temporal_modules is True and config.vision_config.num_hidden_layers == 24
    assert type(config.llm_config).__name__ == "LlamaConfig" and config.llm_config.vocab_size == 92553
    assert config.max_context_length == 2 * 32768  # dynamic rope, factor 2
    assert config.prunevid.settings() == raw["prunevid"]
    again = PVCInternVLConfig.from_dict(config.to_dict())
    assert again.to_dict()["vision_config"] == config.to_dict()["vision_config"]


def round_trip(config: PVCInternVLConfig, path) -> PVCInternVLConfig:
    config.auto_map = {"AutoConfig": "configuration_pvc_internvl.PVCInternVLConfig"}
    config.architectures = ["PVCInternVLChatModel"]
    config.save_pretrained(path)
    return PVCInternVLConfig.from_pretrained(path, attn_implementation="sdpa")


@pytest.mark.parametrize("pvc", [True, False])
def test_save_pretrained_round_trip(tmp_path, pvc):
    prunevid = {"enabled": True, "k": 3, "alpha": 0.5, "selected_layer": 1, "enable_stage2": False}
    config = tiny_config(pvc=pvc, prunevid=prunevid, vision=dict(temporal_attn_layers=[-1]), max_clip_frames=4)
    again = round_trip(config, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["prunevid"]["k"] == 3 and saved["use_temporal"] is pvc
    for key in ("vision_config", "prunevid", "use_temporal", "downsample_ratio", "image_repeat_time", "max_clip_frames"):
        assert again.to_dict()[key] == config.to_dict()[key], key
    assert again.num_image_token == config.num_image_token == (4 if pvc else 16)
    assert again.vision_config.temporal_layer_ids() == ([1] if pvc else [])


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 50000.0}},  # transformers 5
        {"rope_theta": 50000.0, "rope_scaling": {"type": "dynamic", "factor": 2.0}},  # transformers 4
    ],
    ids=["rope_parameters", "rope_theta+rope_scaling"],
)
def test_both_rope_formats_round_trip(tmp_path, rope):
    config = tiny_config(llm=rope)
    again = round_trip(config, tmp_path)
    assert config.max_context_length == again.max_context_length == 2 * 4096
    assert type(again.llm_config).__name__ == "LlamaConfig"


def test_native_qwen2_llm_round_trips(tmp_path):
    llm = tiny_llm(model_type="qwen2", tie_word_embeddings=True)
    again = round_trip(tiny_config(llm_config=llm, template="Hermes-2"), tmp_path)
    assert type(again.llm_config).__name__ == "Qwen2Config" and again.tie_word_embeddings is True
    assert again.template == "Hermes-2"
