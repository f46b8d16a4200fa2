#!/usr/bin/env python
"""Write a synthetic, official-layout InternVL2-2B-shaped checkpoint (random weights) for the converter's
memory benchmark.

Shapes are those of InternVL2-2B: InternViT-300M-448px (24 layers, hidden 1024, 16 heads, MLP 4096,
LayerNorm + qkv bias), ``mlp1`` LN(4096) -> 4096x2048 -> 2048x2048 (pixel-shuffle ratio 0.5), and
InternLM2-1.8B (hidden 2048, 16 heads / 8 KV heads, head_dim 128, intermediate 8192, vocab 92553, fused
``wqkv``, dynamic RoPE). With all 24 LLM layers the checkpoint is about 4.4 GB in bf16; ``--size-gb``
picks the number of LLM layers so that the total is at least that size (the default 2.2 GB gives 7
layers), unless ``--llm-layers`` is given.

Memory-light: tensors are generated one at a time (``normal_`` directly in the target dtype) and each
shard is written as soon as it is full, so the peak is about one shard.

    python benchmarks/make_synthetic_checkpoint.py --out /tmp/synthetic-internvl2-2b [--size-gb 2.2]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conversion.package import remote_module  # noqa: E402

DEFAULT_TEMPLATE = remote_module("conversation").DEFAULT_TEMPLATE  # the official checkpoints' template

VIT = dict(hidden=1024, layers=24, heads=16, mlp=4096, image=448, patch=14)
LLM = dict(hidden=2048, heads=16, kv_heads=8, head_dim=128, intermediate=8192, vocab=92553, max_layers=24)
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def vision_shapes() -> Iterator[tuple[str, tuple[int, ...]]]:
    c, grid = VIT["hidden"], VIT["image"] // VIT["patch"]
    yield "vision_model.embeddings.class_embedding", (1, 1, c)
    yield "vision_model.embeddings.patch_embedding.weight", (c, 3, VIT["patch"], VIT["patch"])
    yield "vision_model.embeddings.patch_embedding.bias", (c,)
    yield "vision_model.embeddings.position_embedding", (1, grid * grid + 1, c)
    for i in range(VIT["layers"]):
        pre = f"vision_model.encoder.layers.{i}."
        yield pre + "attn.qkv.weight", (3 * c, c)
        yield pre + "attn.qkv.bias", (3 * c,)
        yield pre + "attn.proj.weight", (c, c)
        yield pre + "attn.proj.bias", (c,)
        yield pre + "mlp.fc1.weight", (VIT["mlp"], c)
        yield pre + "mlp.fc1.bias", (VIT["mlp"],)
        yield pre + "mlp.fc2.weight", (c, VIT["mlp"])
        yield pre + "mlp.fc2.bias", (c,)
        for name in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "ls1", "ls2"):
            yield pre + name, (c,)
    width, hidden = 4 * c, LLM["hidden"]
    yield "mlp1.0.weight", (width,)
    yield "mlp1.0.bias", (width,)
    yield "mlp1.1.weight", (hidden, width)
    yield "mlp1.1.bias", (hidden,)
    yield "mlp1.3.weight", (hidden, hidden)
    yield "mlp1.3.bias", (hidden,)


def llm_shapes(layers: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    d, inter, vocab = LLM["hidden"], LLM["intermediate"], LLM["vocab"]
    qkv_rows = (LLM["heads"] + 2 * LLM["kv_heads"]) * LLM["head_dim"]
    yield "language_model.model.tok_embeddings.weight", (vocab, d)
    for i in range(layers):
        pre = f"language_model.model.layers.{i}."
        yield pre + "attention.wqkv.weight", (qkv_rows, d)
        yield pre + "attention.wo.weight", (d, LLM["heads"] * LLM["head_dim"])
        yield pre + "feed_forward.w1.weight", (inter, d)
        yield pre + "feed_forward.w3.weight", (inter, d)
        yield pre + "feed_forward.w2.weight", (d, inter)
        yield pre + "attention_norm.weight", (d,)
        yield pre + "ffn_norm.weight", (d,)
    yield "language_model.model.norm.weight", (d,)
    yield "language_model.output.weight", (vocab, d)


def total_bytes(layers: int, element_size: int) -> int:
    shapes = list(vision_shapes()) + list(llm_shapes(layers))
    return sum(math.prod(shape) for _, shape in shapes) * element_size


def pick_llm_layers(size_gb: float, element_size: int) -> int:
    for layers in range(1, LLM["max_layers"] + 1):
        if total_bytes(layers, element_size) >= size_gb * 1e9:
            return layers
    return LLM["max_layers"]


def config_json(layers: int, dtype: str) -> dict:
    c = VIT["hidden"]
    return {
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                     "AutoModel": "modeling_internvl_chat.InternVLChatModel",
                     "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel"},
        "downsample_ratio": 0.5, "dynamic_image_size": True, "force_image_size": 448, "hidden_size": LLM["hidden"],
        "max_dynamic_patch": 12, "min_dynamic_patch": 1, "pad2square": False, "ps_version": "v2", "select_layer": -1,
        "template": DEFAULT_TEMPLATE, "tie_word_embeddings": False, "torch_dtype": dtype, "use_backbone_lora": 0,
        "use_llm_lora": 0, "use_thumbnail": True, "transformers_version": "4.37.2",
        "vision_config": {
            "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": c,
            "num_hidden_layers": VIT["layers"], "num_attention_heads": VIT["heads"], "intermediate_size": VIT["mlp"],
            "image_size": VIT["image"], "patch_size": VIT["patch"], "num_channels": 3, "hidden_act": "gelu",
            "norm_type": "layer_norm", "layer_norm_eps": 1e-6, "qkv_bias": True, "qk_normalization": False,
            "use_flash_attn": True, "drop_path_rate": 0.0, "dropout": 0.0, "attention_dropout": 0.0,
            "initializer_range": 0.02, "initializer_factor": 1.0, "torch_dtype": dtype,
        },
        "llm_config": {
            "architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "hidden_size": LLM["hidden"],
            "intermediate_size": LLM["intermediate"], "num_hidden_layers": layers, "num_attention_heads": LLM["heads"],
            "num_key_value_heads": LLM["kv_heads"], "vocab_size": LLM["vocab"], "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-5, "hidden_act": "silu", "rope_theta": 1000000,
            "rope_scaling": {"type": "dynamic", "factor": 2.0}, "bias": False, "tie_word_embeddings": False,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "attn_implementation": "flash_attention_2",
            "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config",
                         "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                         "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
            "torch_dtype": dtype,
        },
    }


def write_checkpoint(out: Path, layers: int, dtype: str, num_shards: int, seed: int) -> dict:
    """Write the tensors into ``num_shards`` shards of about equal size, one shard in memory at a time."""
    torch_dtype = DTYPES[dtype]
    element = torch.tensor([], dtype=torch_dtype).element_size()
    shapes = list(vision_shapes()) + list(llm_shapes(layers))
    total = sum(math.prod(s) for _, s in shapes) * element
    target = math.ceil(total / num_shards)
    generator = torch.Generator().manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[list[str]] = [[]]
    buffer: dict[str, torch.Tensor] = {}
    buffer_bytes = 0
    files = []

    def flush() -> None:
        nonlocal buffer, buffer_bytes
        name = f"model-{len(files) + 1:05d}-of-{num_shards:05d}.safetensors"
        save_file(buffer, str(out / name), metadata={"format": "pt"})
        files.append(name)
        shards.append([])
        buffer, buffer_bytes = {}, 0

    for name, shape in shapes:
        tensor = torch.empty(shape, dtype=torch_dtype).normal_(0.0, 0.02, generator=generator)
        if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "mlp1.0.weight", "_norm.weight")):
            tensor.add_(1.0)
        buffer[name] = tensor
        shards[-1].append(name)
        buffer_bytes += tensor.numel() * element
        if buffer_bytes >= target and len(files) < num_shards - 1:
            flush()
    if buffer:
        flush()
    if len(files) != num_shards:  # fewer, larger tensors than shards: rename to the real count
        for index, name in enumerate(files, start=1):
            final = f"model-{index:05d}-of-{len(files):05d}.safetensors"
            (out / name).rename(out / final)
            files[index - 1] = final
    weight_map = {tensor: files[i] for i, names in enumerate(shards[: len(files)]) for tensor in names}
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (out / "config.json").write_text(json.dumps(config_json(layers, dtype), indent=2))
    sizes = {name: (out / name).stat().st_size for name in files}
    return {"llm_layers": layers, "dtype": dtype, "total_bytes": total, "shards": sizes, "tensors": len(shapes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--size-gb", type=float, default=2.2, help="minimum total size; picks the LLM depth")
    parser.add_argument("--llm-layers", type=int, help="InternLM2 layers (overrides --size-gb; 24 = real 2B)")
    parser.add_argument("--shards", type=int, default=2, help="number of shards (>= 2)")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    element = torch.tensor([], dtype=DTYPES[args.dtype]).element_size()
    layers = args.llm_layers or pick_llm_layers(args.size_gb, element)
    start = time.perf_counter()
    info = write_checkpoint(Path(args.out), layers, args.dtype, max(2, args.shards), args.seed)
    info["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
