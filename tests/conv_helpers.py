"""Test helpers of the converter tests: tiny official-layout checkpoints and subprocess runners.

The checkpoints are written with the **official** InternVL2 / InternLM2 / Qwen2 key names (pvc.md
section 8.1), listed here by hand rather than derived from the package's model, so the converter's
mapping is checked against an independent statement of the source layout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
CONVERTER = ROOT / "conversion" / "convert_checkpoint.py"
LOADER = Path(__file__).resolve().parent / "conv_loader.py"

GENERIC_V4_KEYS = {  # a few of the generic keys official v4 configs carry (the converter must drop them)
    "_name_or_path": "", "add_cross_attention": False, "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
    "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "do_sample": False, "max_length": 20, "torch_dtype": None,
    "transformers_version": "4.44.2", "use_bfloat16": False, "return_dict": True,
}


@dataclass
class Spec:
    """A tiny official-layout InternVL2 / PVC checkpoint."""

    llm: str = "internlm2"  # internlm2 | qwen2 | llama | phi3
    vision: str = "300m"  # 300m (LayerNorm, qkv bias) | 6b (RMSNorm, qk-norm, no qkv bias)
    vit_hidden: int = 32
    vit_layers: int = 2
    vit_heads: int = 4
    image_size: int = 56
    patch: int = 14
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 96
    vocab: int = 160
    max_pos: int = 256
    rope_theta: float = 1e6
    rope_scaling: dict | None = field(default_factory=lambda: {"type": "dynamic", "factor": 2.0})
    tie: bool = False
    downsample_ratio: float = 0.5
    ps_version: str = "v2"
    select_layer: int = -1
    template: str = "internlm2-chat"
    model_type: str = "internvl_chat"
    pvc: dict | None = None  # extra top-level PVC keys (use_temporal, image_repeat_time, ...)
    vision_extra: dict | None = None  # extra vision-config keys
    dtype: torch.dtype = torch.float32
    seed: int = 0


def _rand(generator: torch.Generator, *shape: int, scale: float | None = None) -> torch.Tensor:
    fan_in = shape[-1] if len(shape) > 1 else 1
    std = scale if scale is not None else fan_in**-0.5
    return torch.randn(*shape, generator=generator) * std


def vision_tensors(spec: Spec, g: torch.Generator) -> dict[str, torch.Tensor]:
    c, p = spec.vit_hidden, spec.patch
    grid = spec.image_size // p
    out = {
        "vision_model.embeddings.class_embedding": _rand(g, 1, 1, c, scale=0.5),
        "vision_model.embeddings.patch_embedding.weight": _rand(g, c, 3, p, p, scale=0.05),
        "vision_model.embeddings.patch_embedding.bias": _rand(g, c, scale=0.1),
        "vision_model.embeddings.position_embedding": _rand(g, 1, grid * grid + 1, c, scale=0.5),
    }
    for i in range(spec.vit_layers):
        pre = f"vision_model.encoder.layers.{i}."
        out[pre + "attn.qkv.weight"] = _rand(g, 3 * c, c)
        if spec.vision == "300m":
            out[pre + "attn.qkv.bias"] = _rand(g, 3 * c, scale=0.1)
        else:
            out[pre + "attn.q_norm.weight"] = 1 + _rand(g, c, scale=0.1)
            out[pre + "attn.k_norm.weight"] = 1 + _rand(g, c, scale=0.1)
        out[pre + "attn.proj.weight"] = _rand(g, c, c)
        out[pre + "attn.proj.bias"] = _rand(g, c, scale=0.1)
        out[pre + "mlp.fc1.weight"] = _rand(g, 2 * c, c)
        out[pre + "mlp.fc1.bias"] = _rand(g, 2 * c, scale=0.1)
        out[pre + "mlp.fc2.weight"] = _rand(g, c, 2 * c)
        out[pre + "mlp.fc2.bias"] = _rand(g, c, scale=0.1)
        for norm in ("norm1", "norm2"):
            out[pre + f"{norm}.weight"] = 1 + _rand(g, c, scale=0.1)
            if spec.vision == "300m":
                out[pre + f"{norm}.bias"] = _rand(g, c, scale=0.1)
        out[pre + "ls1"] = _rand(g, c, scale=0.5)
        out[pre + "ls2"] = _rand(g, c, scale=0.5)
    k2 = round(1 / spec.downsample_ratio) ** 2
    out["mlp1.0.weight"] = 1 + _rand(g, c * k2, scale=0.1)
    out["mlp1.0.bias"] = _rand(g, c * k2, scale=0.1)
    out["mlp1.1.weight"] = _rand(g, spec.hidden, c * k2)
    out["mlp1.1.bias"] = _rand(g, spec.hidden, scale=0.1)
    out["mlp1.3.weight"] = _rand(g, spec.hidden, spec.hidden)
    out["mlp1.3.bias"] = _rand(g, spec.hidden, scale=0.1)
    return out


def llm_tensors(spec: Spec, g: torch.Generator) -> dict[str, torch.Tensor]:
    d, head_dim = spec.hidden, spec.hidden // spec.heads
    out: dict[str, torch.Tensor] = {}
    if spec.llm == "internlm2":
        out["language_model.model.tok_embeddings.weight"] = _rand(g, spec.vocab, d, scale=1.0)
        for i in range(spec.layers):
            pre = f"language_model.model.layers.{i}."
            rows = (spec.heads + 2 * spec.kv_heads) * head_dim
            out[pre + "attention.wqkv.weight"] = _rand(g, rows, d)
            out[pre + "attention.wo.weight"] = _rand(g, d, d)
            out[pre + "feed_forward.w1.weight"] = _rand(g, spec.intermediate, d)
            out[pre + "feed_forward.w3.weight"] = _rand(g, spec.intermediate, d)
            out[pre + "feed_forward.w2.weight"] = _rand(g, d, spec.intermediate)
            out[pre + "attention_norm.weight"] = 1 + _rand(g, d, scale=0.1)
            out[pre + "ffn_norm.weight"] = 1 + _rand(g, d, scale=0.1)
        out["language_model.model.norm.weight"] = 1 + _rand(g, d, scale=0.1)
        out["language_model.output.weight"] = _rand(g, spec.vocab, d)
        return out
    out["language_model.model.embed_tokens.weight"] = _rand(g, spec.vocab, d, scale=1.0)
    for i in range(spec.layers):
        pre = f"language_model.model.layers.{i}."
        if spec.llm == "phi3":  # fused qkv_proj and gate_up_proj (native Phi-3 and Microsoft's remote code)
            out[pre + "self_attn.qkv_proj.weight"] = _rand(g, (spec.heads + 2 * spec.kv_heads) * head_dim, d)
            out[pre + "self_attn.o_proj.weight"] = _rand(g, d, spec.heads * head_dim)
            out[pre + "mlp.gate_up_proj.weight"] = _rand(g, 2 * spec.intermediate, d)
            out[pre + "mlp.down_proj.weight"] = _rand(g, d, spec.intermediate)
            out[pre + "input_layernorm.weight"] = 1 + _rand(g, d, scale=0.1)
            out[pre + "post_attention_layernorm.weight"] = 1 + _rand(g, d, scale=0.1)
            continue
        for name, rows in (("q_proj", spec.heads * head_dim), ("k_proj", spec.kv_heads * head_dim),
                           ("v_proj", spec.kv_heads * head_dim)):
            out[pre + f"self_attn.{name}.weight"] = _rand(g, rows, d)
            if spec.llm == "qwen2":
                out[pre + f"self_attn.{name}.bias"] = _rand(g, rows, scale=0.1)
        out[pre + "self_attn.o_proj.weight"] = _rand(g, d, spec.heads * head_dim)
        out[pre + "mlp.gate_proj.weight"] = _rand(g, spec.intermediate, d)
        out[pre + "mlp.up_proj.weight"] = _rand(g, spec.intermediate, d)
        out[pre + "mlp.down_proj.weight"] = _rand(g, d, spec.intermediate)
        out[pre + "input_layernorm.weight"] = 1 + _rand(g, d, scale=0.1)
        out[pre + "post_attention_layernorm.weight"] = 1 + _rand(g, d, scale=0.1)
    out["language_model.model.norm.weight"] = 1 + _rand(g, d, scale=0.1)
    if not spec.tie:
        out["language_model.lm_head.weight"] = _rand(g, spec.vocab, d)
    return out


def llm_config(spec: Spec) -> dict:
    common = {
        "hidden_size": spec.hidden, "intermediate_size": spec.intermediate, "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads, "num_key_value_heads": spec.kv_heads, "vocab_size": spec.vocab,
        "max_position_embeddings": spec.max_pos, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "rope_theta": spec.rope_theta, "tie_word_embeddings": spec.tie, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 2, **GENERIC_V4_KEYS,
    }
    if spec.llm == "internlm2":
        return {**common, "architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "bias": False,
                "rope_scaling": spec.rope_scaling, "attn_implementation": "eager",
                "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config",
                             "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"}}
    arch = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "phi3": "Phi3ForCausalLM"}[spec.llm]
    extra = {}
    if spec.llm == "phi3":  # keys of the InternVL2-4B Phi-3 config (remote code in the original)
        extra = {"auto_map": {"AutoConfig": "configuration_phi3.Phi3Config",
                              "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
                 "embd_pdrop": 0.0, "resid_pdrop": 0.0, "attention_dropout": 0.0, "sliding_window": 2047,
                 "original_max_position_embeddings": spec.max_pos, "rope_scaling": None}
    return {**common, "architectures": [arch], "model_type": spec.llm, "attn_implementation": "eager", **extra}


def vision_config(spec: Spec) -> dict:
    return {
        "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": spec.vit_hidden,
        "num_hidden_layers": spec.vit_layers, "num_attention_heads": spec.vit_heads, "intermediate_size": 2 * spec.vit_hidden,
        "image_size": spec.image_size, "patch_size": spec.patch, "num_channels": 3, "hidden_act": "gelu",
        "norm_type": "layer_norm" if spec.vision == "300m" else "rms_norm", "layer_norm_eps": 1e-6,
        "qkv_bias": spec.vision == "300m", "qk_normalization": spec.vision == "6b", "use_flash_attn": False,
        "drop_path_rate": 0.0, "dropout": 0.0, "attention_dropout": 0.0, "initializer_range": 0.02,
        "initializer_factor": 1.0, **GENERIC_V4_KEYS, **(spec.vision_extra or {}),
    }


def source_config(spec: Spec) -> dict:
    return {
        "architectures": ["InternVLChatModel"], "model_type": spec.model_type,
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                     "AutoModel": "modeling_internvl_chat.InternVLChatModel"},
        "downsample_ratio": spec.downsample_ratio, "dynamic_image_size": True, "force_image_size": spec.image_size,
        "hidden_size": spec.hidden, "max_dynamic_patch": 6, "min_dynamic_patch": 1, "pad2square": False,
        "ps_version": spec.ps_version, "select_layer": spec.select_layer, "template": spec.template,
        "tie_word_embeddings": spec.tie, "torch_dtype": str(spec.dtype).split(".")[-1], "transformers_version": "4.44.2",
        "use_backbone_lora": 0, "use_llm_lora": 0, "use_thumbnail": True,
        "vision_config": vision_config(spec), "llm_config": llm_config(spec), **(spec.pvc or {}),
    }


def write_checkpoint(folder: Path, spec: Spec, tensors: dict[str, torch.Tensor] | None = None,
                     shards: int = 1, config: dict | None = None) -> dict[str, torch.Tensor]:
    """Write config.json + safetensors (``shards`` > 1: ``model-0000i-of-0000n`` + index); return the tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    if tensors is None:
        g = torch.Generator().manual_seed(spec.seed)
        tensors = {**vision_tensors(spec, g), **llm_tensors(spec, g)}
    tensors = {k: v.to(spec.dtype).contiguous() for k, v in tensors.items()}
    (folder / "config.json").write_text(json.dumps(config or source_config(spec), indent=2))
    names = list(tensors)
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return tensors
    weight_map = {}
    for index in range(shards):
        part = names[index::shards]
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: tensors[k] for k in part}, str(folder / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return tensors


def split_wqkv_reference(wqkv: torch.Tensor, heads: int, kv_heads: int) -> tuple[torch.Tensor, ...]:
    """Row-by-row statement of the InternLM2 layout: for KV group j, rows are [g query heads, k, v]."""
    head_dim = wqkv.shape[0] // (heads + 2 * kv_heads)
    g = heads // kv_heads
    blocks = wqkv.split(head_dim, dim=0)  # heads + 2 * kv_heads blocks of head_dim rows
    q, k, v = [], [], []
    for j in range(kv_heads):
        group = blocks[j * (g + 2):(j + 1) * (g + 2)]
        q += group[:g]
        k.append(group[g])
        v.append(group[g + 1])
    return torch.cat(q), torch.cat(k), torch.cat(v)


def expected_converted(tensors: dict[str, torch.Tensor], spec: Spec) -> dict[str, torch.Tensor]:
    """The tensors the converted checkpoint must hold (InternLM2 renamed and split; others unchanged)."""
    if spec.llm != "internlm2":
        return dict(tensors)
    renames = [("tok_embeddings", "embed_tokens"), ("attention.wo", "self_attn.o_proj"),
               ("feed_forward.w1", "mlp.gate_proj"), ("feed_forward.w3", "mlp.up_proj"),
               ("feed_forward.w2", "mlp.down_proj"), ("attention_norm", "input_layernorm"),
               ("ffn_norm", "post_attention_layernorm"), ("language_model.output.", "language_model.lm_head.")]
    out = {}
    for name, tensor in tensors.items():
        if name.endswith("attention.wqkv.weight"):
            base = name.replace("attention.wqkv.weight", "self_attn.")
            q, k, v = split_wqkv_reference(tensor, spec.heads, spec.kv_heads)
            out.update({base + "q_proj.weight": q, base + "k_proj.weight": k, base + "v_proj.weight": v})
            continue
        for old, new in renames:
            name = name.replace(old, new)
        out[name] = tensor
    return out


# --------------------------------------------------------------------------------------- subprocesses
def isolated_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
               TOKENIZERS_PARALLELISM="false")
    return env


def run_cli(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python conversion/convert_checkpoint.py ARGS`` from the repository root."""
    return subprocess.run([sys.executable, str(CONVERTER), *map(str, args)], cwd=ROOT, env=isolated_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def run_loader(dst: Path, job: dict, tmp_path: Path, timeout: int = 300) -> dict:
    """Load ``dst`` in a fresh interpreter (AutoModel, trust_remote_code) and run ``job`` (see conv_loader.py)."""
    job_file = tmp_path / f"job-{dst.name}.pt"
    out_file = tmp_path / f"out-{dst.name}.pt"
    torch.save(job, job_file)
    run = subprocess.run([sys.executable, str(LOADER), str(dst), str(job_file), str(out_file)], cwd=tmp_path,
                         env=isolated_env(tmp_path), capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-4000:]
    return torch.load(out_file)
