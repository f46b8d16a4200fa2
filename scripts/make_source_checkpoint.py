#!/usr/bin/env python
"""Write a tiny RANDOM-WEIGHT InternVL2 checkpoint in the OFFICIAL layout, to try the converter offline.

    python scripts/make_source_checkpoint.py [--dst official-tiny] [--projector-name mlp1] [--seed 0] [--overwrite]

``--dst`` gets what an official InternVL2 Hub folder holds, at toy sizes: ``config.json`` (``model_type:
internvl_chat``, an InternViT ``vision_config`` and an InternLM2 ``llm_config`` with their remote-code
``auto_map``), ``model.safetensors`` with the official key names (``vision_model.*``, ``mlp1.*``,
``language_model.model.tok_embeddings``, fused ``attention.wqkv``, ``feed_forward.w1/w2/w3``,
``language_model.output``), and an InternLM2 sentencepiece tokenizer (``tokenizer.model`` trained here on a
small built-in corpus, ``tokenizer_config.json`` naming the remote ``InternLM2Tokenizer``, the chat and
InternVL2 image tokens as added tokens). Nothing is downloaded.

``--projector-name mm_projector`` stores the ``mlp1.*`` projector under another name, as a checkpoint saved
by other training code might: the converter then refuses it until a ``--key-map`` rule maps the names back
(the README's ``--inspect`` / ``--key-map`` example).

Sizes: InternViT with 2 layers of width 32 on 56-px tiles (patch 14), pixel shuffle 0.5 (4 tokens per tile),
an InternLM2 language model with 2 layers of width 64 (4 heads, 2 KV heads).
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import io  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
from typing import Sequence  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from conversion import destination  # noqa: E402
from conversion.common import ConversionError, logger, setup_logging, write_json  # noqa: E402
from conversion.package import remote_module  # noqa: E402

VIT = dict(hidden=32, layers=2, heads=4, image=56, patch=14)
LLM = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, max_positions=2048)
DOWNSAMPLE_RATIO = 0.5
CHAT_TOKENS = ("<|im_end|>", "<|im_start|>")
_conversation = remote_module("conversation")
IMAGE_TOKENS = (_conversation.IMG_START_TOKEN, _conversation.IMG_END_TOKEN, _conversation.IMG_CONTEXT_TOKEN,
                "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")
CORPUS = (
    "Please describe the image in detail. What is shown in this picture? The red ball lies on green grass "
    "under a blue sky. A yellow house with a brown roof stands in a field. Describe this video. A red panda "
    "walks from the left to the right. Which one is brighter? There are 2 images and 16 frames."
).split()


# ------------------------------------------------------------------------------------------ tokenizer
def train_tokenizer(seed: int) -> bytes:
    """A byte-fallback BPE sentencepiece model like InternLM2's (identity normalisation, no dummy prefix)."""
    import sentencepiece as spm

    rng = random.Random(seed)
    lines = [" ".join(rng.choices(CORPUS, k=12)) for _ in range(300)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=320, hard_vocab_limit=False,
        character_coverage=1.0, byte_fallback=True, split_digits=True, remove_extra_whitespaces=False,
        add_dummy_prefix=False, normalization_rule_name="identity", pad_id=-1, num_threads=1, minloglevel=2,
    )
    return model.getvalue()


def write_tokenizer(folder: Path, model: bytes) -> dict[str, int]:
    """tokenizer.model + the tokenizer files of an official InternVL2 folder; returns the added tokens' ids."""
    import sentencepiece as spm

    size = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
    added = {token: size + i for i, token in enumerate(CHAT_TOKENS + IMAGE_TOKENS)}
    (folder / "tokenizer.model").write_bytes(model)
    decoder = {str(added[t]): {"content": t, "lstrip": False, "rstrip": False, "normalized": False,
                               "single_word": False, "special": True} for t in CHAT_TOKENS}
    write_json(folder / "tokenizer_config.json", {
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
        "tokenizer_class": "InternLM2Tokenizer", "added_tokens_decoder": decoder, "bos_token": "<s>",
        "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
        "model_max_length": LLM["max_positions"],
    })
    write_json(folder / "added_tokens.json", {t: added[t] for t in IMAGE_TOKENS})
    write_json(folder / "special_tokens_map.json", {"additional_special_tokens": list(CHAT_TOKENS + IMAGE_TOKENS)})
    return added


# -------------------------------------------------------------------------------------------- config
def source_config(vocab: int, eos_ids: list[int]) -> dict:
    """config.json of an official InternVL2 checkpoint (InternViT-300M-style vision, InternLM2 language model)."""
    vision = {
        "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": VIT["hidden"],
        "num_hidden_layers": VIT["layers"], "num_attention_heads": VIT["heads"], "intermediate_size": 2 * VIT["hidden"],
        "image_size": VIT["image"], "patch_size": VIT["patch"], "num_channels": 3, "hidden_act": "gelu",
        "norm_type": "layer_norm", "layer_norm_eps": 1e-6, "qkv_bias": True, "qk_normalization": False,
        "use_flash_attn": False, "drop_path_rate": 0.0, "dropout": 0.0, "attention_dropout": 0.0,
        "initializer_range": 0.02, "initializer_factor": 1.0,
    }
    llm = {
        "architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2",
        "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config",
                     "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
        "hidden_size": LLM["hidden"], "intermediate_size": LLM["intermediate"], "num_hidden_layers": LLM["layers"],
        "num_attention_heads": LLM["heads"], "num_key_value_heads": LLM["kv_heads"], "vocab_size": vocab,
        "max_position_embeddings": LLM["max_positions"], "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "rope_theta": 1000000, "rope_scaling": {"type": "dynamic", "factor": 2.0}, "bias": False,
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": eos_ids[0], "pad_token_id": 2,
        "attn_implementation": "eager",
    }
    return {
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                     "AutoModel": "modeling_internvl_chat.InternVLChatModel"},
        "downsample_ratio": DOWNSAMPLE_RATIO, "dynamic_image_size": True, "force_image_size": VIT["image"],
        "max_dynamic_patch": 6, "min_dynamic_patch": 1, "pad2square": False, "ps_version": "v2", "select_layer": -1,
        "template": _conversation.DEFAULT_TEMPLATE, "use_thumbnail": True, "use_backbone_lora": 0, "use_llm_lora": 0,
        "tie_word_embeddings": False, "torch_dtype": "float32", "vision_config": vision, "llm_config": llm,
    }


# ------------------------------------------------------------------------------------------- weights
def official_shapes(vocab: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of the checkpoint under its official name, with its shape."""
    c, grid = VIT["hidden"], VIT["image"] // VIT["patch"]
    shapes: dict[str, tuple[int, ...]] = {
        "vision_model.embeddings.class_embedding": (1, 1, c),
        "vision_model.embeddings.patch_embedding.weight": (c, 3, VIT["patch"], VIT["patch"]),
        "vision_model.embeddings.patch_embedding.bias": (c,),
        "vision_model.embeddings.position_embedding": (1, grid * grid + 1, c),
    }
    for i in range(VIT["layers"]):
        pre = f"vision_model.encoder.layers.{i}."
        shapes.update({pre + "attn.qkv.weight": (3 * c, c), pre + "attn.qkv.bias": (3 * c,),
                       pre + "attn.proj.weight": (c, c), pre + "attn.proj.bias": (c,),
                       pre + "mlp.fc1.weight": (2 * c, c), pre + "mlp.fc1.bias": (2 * c,),
                       pre + "mlp.fc2.weight": (c, 2 * c), pre + "mlp.fc2.bias": (c,)})
        for name in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "ls1", "ls2"):
            shapes[pre + name] = (c,)
    width, d = c * round(1 / DOWNSAMPLE_RATIO) ** 2, LLM["hidden"]
    shapes.update({"mlp1.0.weight": (width,), "mlp1.0.bias": (width,), "mlp1.1.weight": (d, width),
                   "mlp1.1.bias": (d,), "mlp1.3.weight": (d, d), "mlp1.3.bias": (d,)})
    head_dim = d // LLM["heads"]
    shapes["language_model.model.tok_embeddings.weight"] = (vocab, d)
    for i in range(LLM["layers"]):
        pre = f"language_model.model.layers.{i}."
        shapes.update({pre + "attention.wqkv.weight": ((LLM["heads"] + 2 * LLM["kv_heads"]) * head_dim, d),
                       pre + "attention.wo.weight": (d, d),
                       pre + "feed_forward.w1.weight": (LLM["intermediate"], d),
                       pre + "feed_forward.w3.weight": (LLM["intermediate"], d),
                       pre + "feed_forward.w2.weight": (d, LLM["intermediate"]),
                       pre + "attention_norm.weight": (d,), pre + "ffn_norm.weight": (d,)})
    shapes["language_model.model.norm.weight"] = (d,)
    shapes["language_model.output.weight"] = (vocab, d)
    return shapes


def random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Norm weights near 1, layer scales and biases small, matrices scaled by 1/sqrt(fan-in)."""
    if re.search(r"(norm\d?|mlp1\.0)\.weight$", name):
        return 1 + 0.1 * torch.randn(shape, generator=generator)
    scale = 0.1 if len(shape) == 1 else shape[-1] ** -0.5
    if name.endswith(("class_embedding", "position_embedding")):
        scale = 0.5
    return scale * torch.randn(shape, generator=generator)


def write_weights(folder: Path, vocab: int, seed: int, projector: str) -> int:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in official_shapes(vocab).items():
        tensor = random_tensor(name, shape, generator)
        tensors[re.sub(r"^mlp1\.", f"{projector}.", name)] = tensor.contiguous()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return len(tensors)


def write_source(folder: Path, seed: int, projector: str) -> int:
    added = write_tokenizer(folder, train_tokenizer(seed))
    vocab = max(added.values()) + 1
    write_json(folder / "config.json", source_config(vocab, [added["<|im_end|>"]]))
    return write_weights(folder, vocab, seed, projector)


# ----------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dst", default="official-tiny", help="folder to write")
    parser.add_argument("--projector-name", default="mlp1",
                        help="name of the projector's tensors (anything but mlp1 needs a --key-map to convert)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and the tokenizer corpus")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --dst")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.projector_name):
        return destination.report_failure(ConversionError(
            f"--projector-name {args.projector_name!r} must be one identifier such as mm_projector"))
    dst = Path(args.dst).resolve()
    try:
        destination.check_destination(dst, args.overwrite)
        destination.clean_stale(dst)
        with destination.staged_output(dst) as tmp:
            count = write_source(tmp, args.seed, args.projector_name)
    except (ConversionError, ValueError, destination.Interrupted) as err:
        return destination.report_failure(err)
    logger.info("official-layout InternVL2 checkpoint (random weights, %d tensors) at %s", count, args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
