"""Source ``config.json`` (official InternVL2 ``internvl_chat`` / PVC ``pvc_internvl``) -> the keyword
arguments of :class:`PVCInternVLConfig`.

* Shape first: ``check_source_config`` (run when the source is opened, by ``--inspect`` too) refuses a
  config.json that is not an object, or whose fields the converter reads (``SOURCE_FIELDS``) are missing or of
  the wrong JSON type, with one line naming the file, the field, the value and what to do.
* Vision: the official InternViT keys (and this package's own vision fields) are kept; the generic
  ``PretrainedConfig`` keys are dropped; **any other key makes the converter refuse**, listing them, unless
  ``--config-map`` maps it (to a field name, or to ``null`` to ignore it). The official PVC temporal
  vision keys are unknown (pvc.md section 3), so they go through that path.
* Top level: the InternVL2 / PVC keys are kept (``use_temporal``, ``image_repeat_time``, ...), generic and
  remote-code-only keys are dropped, unknown keys refuse in the same way.
* LLM: InternLM2 becomes a ``LlamaConfig`` dict (pvc.md section 4); Llama / Qwen2 / Phi-3 pass through
  as native configs minus remote-code-only keys.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from conversion.common import ConversionError, check_json_object, json_shown, logger
from conversion.package import remote_module

SOURCE_KINDS = ("internvl_chat", "pvc_internvl")

# Attributes every transformers-v4 PretrainedConfig serialises; they carry no model information here.
GENERIC_CONFIG_KEYS = frozenset(
    """
    _name_or_path _commit_hash _attn_implementation_autoset _attn_implementation add_cross_attention
    architectures attn_implementation auto_map bad_words_ids begin_suppress_tokens bos_token_id
    chunk_size_feed_forward cross_attention_hidden_size decoder_start_token_id diversity_penalty do_sample
    dtype early_stopping encoder_no_repeat_ngram_size eos_token_id exponential_decay_length_penalty
    finetuning_task forced_bos_token_id forced_eos_token_id gradient_checkpointing id2label is_decoder
    is_encoder_decoder label2id length_penalty max_length min_length model_type no_repeat_ngram_size
    num_beam_groups num_beams num_labels num_return_sequences output_attentions output_hidden_states
    output_scores pad_token_id prefix problem_type pruned_heads remove_invalid_values repetition_penalty
    return_dict return_dict_in_generate sep_token_id suppress_tokens task_specific_params temperature
    tf_legacy_loss tie_encoder_decoder tie_word_embeddings tokenizer_class top_k top_p torch_dtype
    torchscript transformers_version typical_p use_bfloat16 use_return_dict
    """.split()
)
# Top-level keys of official configs that the package derives itself or does not need.
IGNORED_TOP_LEVEL_KEYS = frozenset({"hidden_size", "use_flash_attn"})
# LLM-config keys that only make sense for remote code.
REMOTE_ONLY_LLM_KEYS = frozenset(
    {"auto_map", "attn_implementation", "_attn_implementation", "_attn_implementation_autoset", "_name_or_path",
     "_commit_hash", "transformers_version", "torch_dtype", "dtype", "use_flash_attn"}
)
# Generic keys a native LLM config still needs.
KEPT_GENERIC_LLM_KEYS = frozenset({"bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings", "architectures",
                                   "model_type"})
LLM_ARCHITECTURES = remote_module("configuration_pvc_internvl").LLM_ARCHITECTURES  # native LLMs: architecture -> type
INTERNLM2_ARCHITECTURES = ("InternLM2ForCausalLM",)
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ConfigPlan:
    """The converted config before the tensor-derived facts are applied."""

    kind: str
    llm_kind: str
    kwargs: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def vision_hidden(self) -> int:
        return int(self.kwargs["vision_config"].get("hidden_size", 1024))

    @property
    def llm(self) -> dict[str, Any]:
        return self.kwargs["llm_config"]


def detect_kind(config: dict) -> str:
    kind = config.get("model_type")
    if kind not in SOURCE_KINDS:
        raise ConversionError(
            f"unsupported source model_type {kind!r} in config.json; the converter reads official InternVL2 "
            f"('internvl_chat') and PVC ('pvc_internvl') checkpoints"
        )
    return kind


def llm_kind(llm: dict) -> str:
    """``internlm2``, or the model type of a native language model (``LLM_ARCHITECTURES``)."""
    architectures = llm.get("architectures") or []
    model_type = llm.get("model_type")
    if model_type == "internlm2" or any(a in INTERNLM2_ARCHITECTURES for a in architectures):
        return "internlm2"
    if model_type in LLM_ARCHITECTURES.values():
        return model_type
    for architecture in architectures:
        if architecture in LLM_ARCHITECTURES:
            return LLM_ARCHITECTURES[architecture]
    raise ConversionError(
        f"unsupported language model (model_type {model_type!r}, architectures {architectures}); supported: "
        f"InternLM2, {', '.join(LLM_ARCHITECTURES)}"
    )


# --------------------------------------------------------------------------------- source config shape
@dataclass(frozen=True)
class JsonKind:
    """A JSON type a field must have, as a reader of config.json would name it."""

    what: str
    accepts: Callable[[Any], bool]


INTEGER = JsonKind("an integer", lambda v: type(v) is int)  # JSON true / false are not integers
NUMBER = JsonKind("a number", lambda v: type(v) in (int, float))
BOOLEAN = JsonKind("true or false", lambda v: type(v) is bool)
STRING = JsonKind("a string", lambda v: type(v) is str)
OBJECT = JsonKind("a JSON object", lambda v: isinstance(v, dict))
INTEGERS = JsonKind("a list of integers", lambda v: isinstance(v, list) and all(type(i) is int for i in v))
STRINGS = JsonKind("a list of strings", lambda v: isinstance(v, list) and all(type(i) is str for i in v))


@dataclass(frozen=True)
class SourceField:
    name: str  # dotted path inside config.json
    kind: JsonKind
    required: bool = False
    nullable: bool = False
    about: str = ""  # what the field holds, for the message


def _about(spec: SourceField) -> str:
    return f" ({spec.about})" if spec.about else ""


_LLM_SIZES = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size")
# The fields of the source config.json the converter itself reads (sizes it computes with, values it compares),
# checked once when the source is opened, parents before children. The package config checks every other field.
SOURCE_FIELDS = (
    SourceField("vision_config", OBJECT, required=True, about="the vision model's settings"),
    SourceField("llm_config", OBJECT, required=True, about="the language model's settings"),
    SourceField("downsample_ratio", NUMBER),
    SourceField("use_temporal", BOOLEAN),
    SourceField("img_context_token_id", INTEGER, nullable=True),
    *(SourceField(f"llm_config.{name}", INTEGER, required=True) for name in _LLM_SIZES),
    SourceField("llm_config.num_key_value_heads", INTEGER, nullable=True),
    SourceField("llm_config.head_dim", INTEGER, nullable=True),
    SourceField("llm_config.max_position_embeddings", INTEGER),
    *(SourceField(f"llm_config.{name}", NUMBER) for name in ("rope_theta", "rms_norm_eps", "initializer_range")),
    SourceField("llm_config.rope_scaling", OBJECT, nullable=True),
    SourceField("llm_config.rope_scaling.factor", NUMBER),
    SourceField("llm_config.model_type", STRING, nullable=True),
    SourceField("llm_config.architectures", STRINGS, nullable=True),
    SourceField("llm_config.bias", BOOLEAN),
    SourceField("llm_config.tie_word_embeddings", BOOLEAN),
    SourceField("vision_config.hidden_size", INTEGER),
    SourceField("vision_config.num_hidden_layers", INTEGER),
    SourceField("vision_config.temporal_attn_layers", INTEGERS, nullable=True),
    SourceField("vision_config.adaln_layers", INTEGERS, nullable=True),
)


def _meant(kind: JsonKind, value: Any) -> str | None:
    """The JSON text of the number a string ``value`` probably meant (``"4096"`` -> ``4096``), else None."""
    try:
        number = float(value) if isinstance(value, str) and kind in (INTEGER, NUMBER) else None
    except ValueError:
        return None
    if number is None or not math.isfinite(number) or (kind is INTEGER and not number.is_integer()):
        return None
    return json.dumps(int(number) if kind is INTEGER else number)


def _wrong_type(spec: SourceField, value: Any) -> str | None:
    """``'"4096" (a string), not an integer'`` when ``value`` does not fit ``spec``, None when it does."""
    if spec.kind.accepts(value) or (value is None and spec.nullable):
        return None
    return f"{json_shown(value)}, not {spec.kind.what}" + (" or null" if spec.nullable else "")


def check_source_config(config: Any, path: Path) -> dict:
    """The source ``config.json`` when it is an InternVL2 / PVC config whose fields the converter reads (see
    ``SOURCE_FIELDS``) are present and of the right JSON type; otherwise a one-line ``ConversionError`` naming
    the file, the field, its value and what to do. Runs before anything else reads the config."""
    check_json_object(config, path, "--src must be an InternVL2 / PVC checkpoint, whose config.json is an object "
                                   "with model_type, vision_config and llm_config")
    detect_kind(config)
    for spec in SOURCE_FIELDS:
        *parents, leaf = spec.name.split(".")
        section: Any = config
        for part in parents:
            section = section.get(part) if isinstance(section, dict) else None
        if not isinstance(section, dict):  # an optional parent that is absent or null
            continue
        if leaf not in section:
            if spec.required:
                where = f"{path}: {'.'.join(parents)} has no {leaf}" if parents else f"{path} has no {leaf} section"
                raise ConversionError(f"{where}; add it as {spec.kind.what}{_about(spec)}, as in the original "
                                      "checkpoint's config.json (the converter reads it to build the converted config)")
            continue
        wrong = _wrong_type(spec, section[leaf])
        if wrong:
            meant = _meant(spec.kind, section[leaf])
            example = f' (e.g. "{leaf}": {meant})' if meant else ""
            raise ConversionError(f"{path}: {spec.name} is {wrong}; write it as {spec.kind.what}{_about(spec)} in "
                                  f"config.json{example}")
    return config


def check_override_values(overrides: dict[str, Any]) -> None:
    """A ``--set`` value of a field in ``SOURCE_FIELDS`` must have that field's JSON type."""
    fields = {spec.name: spec for spec in SOURCE_FIELDS}
    for key, value in overrides.items():
        wrong = _wrong_type(fields[key], value) if key in fields else None
        if wrong:
            meant = _meant(fields[key].kind, value)
            example = f" (e.g. --set {key}={meant})" if meant else ""
            raise ConversionError(f"--set {key}: the value is {wrong}; pass {fields[key].kind.what} as JSON{example}")


# ------------------------------------------------------------------------------------------------ LLM
def rope_parameters(llm: dict) -> dict[str, Any]:
    """InternLM2 ``rope_theta`` + ``rope_scaling`` -> transformers-v5 ``rope_parameters``."""
    theta = float(llm.get("rope_theta", 10000.0))
    scaling = llm.get("rope_scaling")
    if not scaling:
        return {"rope_type": "default", "rope_theta": theta}
    rope_type = scaling.get("type", scaling.get("rope_type"))
    if rope_type not in ("dynamic", "linear") or "factor" not in scaling:
        raise ConversionError(
            f"unsupported InternLM2 rope_scaling {scaling}; supported: {{'type': 'dynamic'|'linear', 'factor': f}}"
        )
    return {"rope_type": rope_type, "factor": float(scaling["factor"]), "rope_theta": theta}


def internlm2_to_llama(llm: dict) -> dict[str, Any]:
    """An InternLM2 config dict -> the equivalent ``LlamaConfig`` dict (weights split by the key plan)."""
    if llm.get("bias"):
        raise ConversionError("the InternLM2 config has bias: true; only bias-free InternLM2 models are supported")
    hidden, heads = int(llm["hidden_size"]), int(llm["num_attention_heads"])
    kv_heads = int(llm.get("num_key_value_heads") or heads)
    if hidden % heads or heads % kv_heads:
        raise ConversionError(
            f"InternLM2 hidden_size {hidden}, num_attention_heads {heads} and num_key_value_heads {kv_heads} "
            "do not divide evenly"
        )
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": int(llm["vocab_size"]),
        "hidden_size": hidden,
        "intermediate_size": int(llm["intermediate_size"]),
        "num_hidden_layers": int(llm["num_hidden_layers"]),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "max_position_embeddings": int(llm.get("max_position_embeddings", 2048)),
        "rms_norm_eps": float(llm.get("rms_norm_eps", 1e-6)),
        "hidden_act": llm.get("hidden_act", "silu"),
        "initializer_range": float(llm.get("initializer_range", 0.02)),
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": bool(llm.get("tie_word_embeddings", False)),
        "bos_token_id": llm.get("bos_token_id", 1),
        "eos_token_id": llm.get("eos_token_id", 2),
        "pad_token_id": llm.get("pad_token_id", 2),
        "use_cache": True,
        "rope_parameters": rope_parameters(llm),
    }


def native_llm_config(llm: dict, kind: str) -> dict[str, Any]:
    """A Llama / Qwen2 / Phi-3 config dict without the remote-code-only and generic keys."""
    out = {
        key: copy.deepcopy(value)
        for key, value in llm.items()
        if key not in REMOTE_ONLY_LLM_KEYS and (key not in GENERIC_CONFIG_KEYS or key in KEPT_GENERIC_LLM_KEYS)
    }
    out["model_type"] = kind
    scaling = out.get("rope_scaling")
    if isinstance(scaling, dict) and scaling.get("type") == "su":  # Phi-3 128k: "su" was renamed "longrope"
        out["rope_scaling"] = {**scaling, "type": "longrope"}
    return out


# ------------------------------------------------------------------------------------- vision / top
def _apply_config_map(section: dict, known: set[str], ignored: frozenset, mapping: dict[str, Any], prefix: str,
                      problems: list[str]) -> dict[str, Any]:
    """Keep known keys, drop ignored ones, rename / drop keys named in ``mapping``; report the rest."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        mapped_key = f"{prefix}{key}"
        if mapped_key in mapping:
            target = mapping[mapped_key]
            if target is None:
                logger.info("config key %s ignored (--config-map)", mapped_key)
                continue
            if target not in known:
                problems.append(f"--config-map maps {mapped_key} to {target!r}, which is not a field of the package config")
                continue
            out[target] = value
        elif key in known:
            out.setdefault(key, value)
        elif key not in ignored:
            problems.append(f"{mapped_key} = {json.dumps(value)[:80]}")
    return out


def convert_vision_config(vision: dict, mapping: dict[str, Any], vision_class: type, problems: list[str]) -> dict:
    known = set(vision_class.SETTINGS) - {"use_temporal_modules"}
    ignored = GENERIC_CONFIG_KEYS | {"use_temporal_modules", "auto_map"}
    return _apply_config_map(vision, known, ignored, mapping, "vision_config.", problems)


def convert_top_level(config: dict, mapping: dict[str, Any], config_class: type, problems: list[str]) -> dict:
    known = set(config_class.SETTINGS) - {"vision_config", "llm_config"}
    body = {key: value for key, value in config.items() if key not in ("vision_config", "llm_config")}
    return _apply_config_map(body, known, GENERIC_CONFIG_KEYS | IGNORED_TOP_LEVEL_KEYS, mapping, "", problems)


def _llm_fields(llm: dict) -> set[str]:
    """Fields a native LLM config of this ``model_type`` has (its defaults), plus those the source sets."""
    from transformers import AutoConfig

    try:
        defaults = AutoConfig.for_model(llm["model_type"]).to_dict()
    except (KeyError, ValueError):
        defaults = {}
    return set(defaults) | set(llm)


def check_override_keys(kwargs: dict, overrides: dict[str, Any], config_class: type, vision_class: type) -> None:
    """Every ``--set`` key must name a field of the package config (``vision_config.X``: of the vision config,
    ``llm_config.X``: of the native LLM config); ``ConversionError`` listing the unknown ones otherwise."""
    known = {
        "": set(config_class.SETTINGS) - {"vision_config", "llm_config"} | {"dtype"},
        "vision_config": set(vision_class.SETTINGS) - {"use_temporal_modules"},
        "llm_config": _llm_fields(kwargs["llm_config"]),
    }
    unknown = []
    for key in overrides:
        section, _, name = key.partition(".")
        section, name = (section, name) if name and section in known else ("", key)
        if name not in known[section]:
            close = difflib.get_close_matches(name, sorted(known[section]), n=1)
            where = f"a field of {section}" if section else "a top-level field of the package config"
            unknown.append(f"--set {key}: {name!r} is not {where}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if unknown:
        raise ConversionError("unknown --set field(s); nothing was written:", unknown)


def apply_overrides(kwargs: dict, overrides: dict[str, Any]) -> None:
    """``--set KEY=VALUE``: ``vision_config.X`` / ``llm_config.X`` or a top-level field."""
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name and section in ("vision_config", "llm_config"):
            kwargs[section][name] = value
        else:
            kwargs[key] = value


# PVC choices the paper leaves open (pvc.md section 0 / 3): a PVC source should state them.
UNSETTLED_PVC_FIELDS = ("tile_repeat_way", "vision_config.time_input", "vision_config.time_embed_order",
                        "vision_config.temporal_causal", "vision_config.temporal_include_cls")


def unsettled_fields(source: dict, kwargs: dict) -> list[str]:
    """PVC fields with unknown upstream meaning that neither the source config nor ``--set`` settles."""
    if not kwargs.get("use_temporal"):
        return []
    out = []
    for name in UNSETTLED_PVC_FIELDS:
        section, _, key = name.rpartition(".")
        given = (kwargs.get(section) or {}) if section else kwargs
        stated = (source.get(section) or {}) if section else source
        if key not in given and key not in stated:
            out.append(f"{name} is not in config.json; the package default is used (settle it with --set {name}=...)")
    return out


def source_dtype(config: dict) -> str | None:
    for key in ("torch_dtype", "dtype"):
        value = config.get(key) or (config.get("llm_config") or {}).get(key)
        if isinstance(value, str) and value in DTYPES:
            return value
    return None


def build_config_plan(
    config: dict,
    *,
    config_class: type,
    vision_class: type,
    mapping: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    dtype: str = "auto",
    strict: bool = True,
) -> ConfigPlan:
    """Everything of the target config that the source ``config.json`` (passed by ``check_source_config``)
    decides. With ``strict=False`` unknown keys are left out and listed in ``problems`` instead of raising."""
    kind = detect_kind(config)
    mapping = dict(mapping or {})
    problems: list[str] = []
    llm = config["llm_config"]
    which = llm_kind(llm)
    notes = []
    if which == "internlm2":
        llm_out = internlm2_to_llama(llm)
        notes.append(f"InternLM2 LLM -> native LlamaForCausalLM (rope {llm_out['rope_parameters']})")
    else:
        llm_out = native_llm_config(llm, which)
        notes.append(f"{which} LLM kept as a native {which} config")
    vision = convert_vision_config(config["vision_config"], mapping, vision_class, problems)
    top = convert_top_level(config, mapping, config_class, problems)
    if problems and strict:
        raise ConversionError(
            "config.json has keys the converter does not know (an unknown key could change the model's "
            "behaviour, so nothing is guessed). Map them with --config-map FILE, a JSON object such as "
            '{"vision_config.some_key": "package_field"} or {"vision_config.some_key": null} to ignore a key:',
            problems,
        )
    problems = [f"unknown config key {problem}" for problem in problems]
    kwargs = {**top, "vision_config": vision, "llm_config": llm_out}
    chosen = source_dtype(config) if dtype == "auto" else dtype
    if chosen:
        kwargs["dtype"] = chosen
    check_override_keys(kwargs, dict(overrides or {}), config_class, vision_class)
    check_override_values(dict(overrides or {}))
    apply_overrides(kwargs, dict(overrides or {}))
    return ConfigPlan(kind, which, kwargs, notes, problems)
