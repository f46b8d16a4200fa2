"""Tests of conversion/convert_checkpoint.py: golden parity, LLM families, PVC tensors, failure modes,
tokenizer equivalence, sharding and Hub upload."""

from __future__ import annotations

import io
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conversion import convert_checkpoint as cc
from conversion import spm_proto, writer
from conversion.common import layer_ranges, parse_size
from tests.golden import golden_path
from tests.conv_helpers import (
    ROOT,
    Spec,
    expected_converted,
    run_cli,
    run_loader,
    split_wqkv_reference,
    write_checkpoint,
)

GOLDEN = golden_path("internvl2", "internlm2")
REMOTE_CODE = ["configuration_pvc_internvl.py", "modeling_pvc_internvl.py", "conversation.py", "prunevid.py",
               "processing.py", "media.py"]
INTERNVL_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]


def convert(argv: list) -> int:
    return cc.main([str(a) for a in argv])


def assert_nothing_written(dst: Path) -> None:
    assert not dst.exists()
    if dst.parent.exists():
        assert [p.name for p in dst.parent.iterdir() if p.name.startswith(dst.name + ".")] == []


def eos_list(generation: dict) -> list[int]:
    eos = generation["eos_token_id"]
    return eos if isinstance(eos, list) else [eos]


def assert_state_dict(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    for name, tensor in expected.items():
        assert name in loaded, name
        assert torch.equal(loaded[name], tensor.to(loaded[name].dtype)), name


def image_prompt(context_id: int, count: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(20, min(vocab, 140), (6,), generator=g)
    return torch.cat([torch.tensor([1]), text[:3], torch.full((count,), context_id), text[3:]]).unsqueeze(0)


# ==================================================================================== golden parity
def rope_settings(llm: dict) -> tuple:
    """(rope type, factor, theta) from a saved LLM config of transformers 5 or 4."""
    rope = llm.get("rope_parameters") or {**(llm.get("rope_scaling") or {}), "rope_theta": llm.get("rope_theta")}
    return rope.get("rope_type", rope.get("type")), rope.get("factor"), rope.get("rope_theta")


def test_golden_checkpoint_reproduces_official_logits_and_generation(tmp_path):
    dst = tmp_path / "golden-converted"
    run = run_cli(["--src", GOLDEN / "checkpoint", "--dst", dst, "--img-context-token-id", 150], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "no tokenizer was written" in run.stderr
    files = {p.name for p in dst.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "README.md", *REMOTE_CODE} <= files
    assert not any(name.startswith("tokenizer") for name in files)
    result = run_loader(dst, {"config": True, "golden": str(GOLDEN)}, tmp_path)
    config = result["config"]
    assert config["auto_map"] == writer.AUTO_MAP and config["architectures"] == ["PVCInternVLChatModel"]
    assert config["img_context_token_id"] == 150 and config["llm_config"]["model_type"] == "llama"
    assert rope_settings(config["llm_config"]) == ("dynamic", 2.0, 1e6)
    golden = result["golden"]
    for case in ("a_single_1tile", "b_single_5tiles", "c_two_images_2_1"):
        assert golden[case] <= 1e-4, (case, golden[case])
    expected = load_file(str(GOLDEN / "g_greedy.safetensors"))
    assert golden["generated_ids"] == expected["generated_ids"].tolist()
    assert sum(golden["batch_split_sizes"]) == 3  # tiles per row, from the <IMG_CONTEXT> counts
    assert golden["batch_generated_ids"] == expected["batch_generated_ids"].tolist()


# ============================================================================ InternLM2 + dynamic RoPE
def internlm2_reference_logits(tensors: dict, spec: Spec, ids: list[int]) -> torch.Tensor:
    """Plain-torch InternLM2 (fused wqkv, rotate-half RoPE with dynamic NTK, GQA, SwiGLU), float64."""
    t = {k: v.double() for k, v in tensors.items() if k.startswith("language_model.")}
    length, head_dim = len(ids), spec.hidden // spec.heads
    groups = spec.heads // spec.kv_heads
    base = spec.rope_theta
    if spec.rope_scaling and length > spec.max_pos:  # dynamic NTK, applied to all positions
        factor = spec.rope_scaling["factor"]
        base = base * ((factor * length / spec.max_pos) - (factor - 1)) ** (head_dim / (head_dim - 2))
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rms(x, w):
        return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)

    def rope(x):  # (heads, L, d)
        half = torch.cat([-x[..., head_dim // 2:], x[..., : head_dim // 2]], -1)
        return x * cos + half * sin

    x = t["language_model.model.tok_embeddings.weight"][torch.tensor(ids)]
    causal = torch.full((length, length), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(spec.layers):
        pre = f"language_model.model.layers.{i}."
        qkv = (rms(x, t[pre + "attention_norm.weight"]) @ t[pre + "attention.wqkv.weight"].T)
        qkv = qkv.view(length, spec.kv_heads, groups + 2, head_dim)
        q = qkv[:, :, :groups].reshape(length, spec.heads, head_dim).transpose(0, 1)
        k = qkv[:, :, groups].transpose(0, 1).repeat_interleave(groups, 0)
        v = qkv[:, :, groups + 1].transpose(0, 1).repeat_interleave(groups, 0)
        scores = rope(q) @ rope(k).transpose(1, 2) / math.sqrt(head_dim) + causal
        attn = (scores.softmax(-1) @ v).transpose(0, 1).reshape(length, spec.hidden)
        x = x + attn @ t[pre + "attention.wo.weight"].T
        h = rms(x, t[pre + "ffn_norm.weight"])
        gate = torch.nn.functional.silu(h @ t[pre + "feed_forward.w1.weight"].T)
        x = x + (gate * (h @ t[pre + "feed_forward.w3.weight"].T)) @ t[pre + "feed_forward.w2.weight"].T
    x = rms(x, t["language_model.model.norm.weight"])
    return x @ t["language_model.output.weight"].T


def test_internlm2_llm_matches_reference_including_dynamic_ntk(tmp_path):
    spec = Spec(llm="internlm2", hidden=64, heads=4, kv_heads=2, layers=2, max_pos=24, rope_theta=10000.0,
                rope_scaling={"type": "dynamic", "factor": 2.0})
    src, dst = tmp_path / "src", tmp_path / "dst"
    tensors = write_checkpoint(src, spec, shards=2)
    assert convert(["--src", src, "--dst", dst, "--img-context-token-id", 150, "--max-shard-size", "60KB"]) == 0
    assert (dst / "model.safetensors.index.json").is_file()
    g = torch.Generator().manual_seed(1)
    short, long = [torch.randint(3, 150, (n,), generator=g).tolist() for n in (10, 3 * spec.max_pos // 2 + 4)]
    result = run_loader(dst, {"state_dict": True, "lm_logits": [short, long, short]}, tmp_path)
    assert_state_dict(result["state_dict"], expected_converted(tensors, spec))
    got_short, got_long, got_short_again = result["lm_logits"]
    ref_short = internlm2_reference_logits(tensors, spec, short)
    ref_long = internlm2_reference_logits(tensors, spec, long)
    assert len(long) > spec.max_pos
    scale = ref_long.abs().max().item()
    assert (got_short.double() - ref_short).abs().max().item() <= 1e-4 * max(1.0, scale)
    assert (got_long.double() - ref_long).abs().max().item() <= 1e-4 * max(1.0, scale)
    # the long prompt leaves no state behind: the next short prompt uses the unscaled base again
    assert (got_short_again.double() - ref_short).abs().max().item() <= 1e-4 * max(1.0, scale)
    # sensitivity: without the NTK rescaling the long-prompt logits would be clearly different
    unscaled = internlm2_reference_logits(tensors, Spec(**{**spec.__dict__, "rope_scaling": None}), long)
    assert (unscaled - ref_long).abs().max().item() > 1e-2


def test_wqkv_split_general_formula():
    from conversion.keymap import LLMShape
    from conversion.weights import split_wqkv

    for heads, kv_heads, head_dim in ((8, 2, 4), (4, 4, 3), (6, 1, 2)):
        wqkv = torch.randn((heads + 2 * kv_heads) * head_dim, 5)
        got = split_wqkv(wqkv, LLMShape(heads, kv_heads, head_dim, 5))
        for a, b in zip(got, split_wqkv_reference(wqkv, heads, kv_heads)):
            assert torch.equal(a, b)


# ========================================================================== native LLMs and vision kinds
def make_qwen2_tokenizer(folder: Path, vocab_size: int) -> dict[str, int]:
    """A tiny byte-level BPE tokenizer in the Qwen2 file layout (tokenizer.json, vocab.json, merges.txt,
    tokenizer_config.json) with the InternVL2 added tokens; returns the special-token ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *INTERNVL_TOKENS]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["Describe the image in detail.", "What is in this picture?"] * 20, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    backend.save(str(folder / "tokenizer.json"))
    backend.model.save(str(folder))
    ids = {token: backend.token_to_id(token) for token in specials}
    decoder = {str(i): {"content": t, "lstrip": False, "rstrip": False, "normalized": False, "single_word": False,
                        "special": True} for t, i in ids.items()}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "added_tokens_decoder": decoder, "bos_token": None,
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "model_max_length": 32768,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "errors": "replace",
    }))
    return ids


def test_qwen2_source_keeps_native_keys_and_copies_tokenizer(tmp_path):
    spec = Spec(llm="qwen2", tie=True, template="Hermes-2", vocab=300, rope_scaling=None)
    src, dst = tmp_path / "src", tmp_path / "dst"
    tensors = write_checkpoint(src, spec)
    ids = make_qwen2_tokenizer(src, spec.vocab)
    assert convert(["--src", src, "--dst", dst]) == 0
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (dst / name).read_bytes() == (src / name).read_bytes(), name
    config = json.loads((dst / "config.json").read_text())
    assert config["img_context_token_id"] == ids["<IMG_CONTEXT>"] and config["template"] == "Hermes-2"
    assert config["llm_config"]["model_type"] == "qwen2" and "auto_map" not in config["llm_config"]
    generation = json.loads((dst / "generation_config.json").read_text())
    assert eos_list(generation) == list(dict.fromkeys([ids["<|im_end|>"], 2]))  # separator, then the LLM's eos
    assert generation["pad_token_id"] == ids["<|endoftext|>"]  # the tokenizer's pad token
    assert not any("lm_head" in name for name in safe_open(str(dst / "model.safetensors"), "pt").keys())
    prompt = image_prompt(ids["<IMG_CONTEXT>"], 4, spec.vocab)
    job = {"state_dict": True, "tokenizer_texts": ["<|im_start|>user\n<img><IMG_CONTEXT></img>hi<|im_end|>"],
           "forward": {"pixel_values": torch.randn(1, 3, 56, 56), "input_ids": prompt}}
    result = run_loader(dst, job, tmp_path)
    assert_state_dict(result["state_dict"], tensors)
    loaded = result["state_dict"]
    assert torch.equal(loaded["language_model.lm_head.weight"], loaded["language_model.model.embed_tokens.weight"])
    assert result["forward_logits"].shape == (1, prompt.shape[1], spec.vocab)
    assert torch.isfinite(result["forward_logits"]).all()
    from transformers import AutoTokenizer

    source_ids = AutoTokenizer.from_pretrained(str(src))("<|im_start|>user\n<img><IMG_CONTEXT></img>hi<|im_end|>").input_ids
    assert result["tokenizer_ids"] == [source_ids]
    assert ids["<IMG_CONTEXT>"] in source_ids


QWEN_CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
               "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.mark.parametrize("source_template", ["chatml-with-newlines", "same-as-hermes-2"])
def test_chat_template_of_the_conversation_template_replaces_the_source_one(tmp_path, capsys, source_template):
    from transformers import AutoTokenizer

    from pvc_internvl.conversation import get_template

    spec = Spec(llm="qwen2", tie=True, template="Hermes-2", vocab=300, rope_scaling=None)
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_checkpoint(src, spec)
    make_qwen2_tokenizer(src, spec.vocab)
    settings = json.loads((src / "tokenizer_config.json").read_text())
    hermes = get_template("Hermes-2")
    settings["chat_template"] = QWEN_CHATML if source_template == "chatml-with-newlines" else hermes.jinja
    (src / "tokenizer_config.json").write_text(json.dumps(settings))
    assert convert(["--src", src, "--dst", dst]) == 0
    err = capsys.readouterr().err
    replaced = "replaced the source chat template with the Hermes-2 template" in err
    assert replaced == (source_template == "chatml-with-newlines")
    assert (dst / "chat_template.jinja").read_text() == hermes.jinja
    assert "chat_template" not in json.loads((dst / "tokenizer_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(dst))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>\nWhat?"},
                {"role": "assistant", "content": "A cat."}, {"role": "user", "content": "Sure?"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == hermes.render([("<image>\nWhat?", "A cat.")], "Sure?", system_message="Be brief.")
    assert rendered.endswith("<|im_end|><|im_start|>assistant\n")  # MPT style: no newline after <|im_end|>


def test_repository_config_and_remote_code_list():
    from conversion.package import REMOTE_CODE_FILES

    assert json.loads((ROOT / "config.json").read_text())["auto_map"] == writer.AUTO_MAP
    assert "AutoModelForCausalLM" not in writer.AUTO_MAP
    assert {"media.py", "processing.py", "conversation.py", "prunevid.py"} <= set(REMOTE_CODE_FILES)


def test_6b_vision_pixel_shuffle_v1_select_layer_llama(tmp_path):
    spec = Spec(llm="llama", vision="6b", ps_version="v1", select_layer=-2, vit_layers=3, rope_scaling=None)
    src, dst = tmp_path / "src", tmp_path / "dst"
    tensors = write_checkpoint(src, spec)
    assert convert(["--src", src, "--dst", dst, "--img-context-token-id", 150]) == 0
    prompt = image_prompt(150, 2 * 4, spec.vocab)
    job = {"state_dict": True, "config": True,
           "forward": {"pixel_values": torch.randn(2, 3, 56, 56), "input_ids": prompt}}
    result = run_loader(dst, job, tmp_path)
    assert_state_dict(result["state_dict"], tensors)
    assert len(result["state_dict"]) == len(tensors)
    vision = result["config"]["vision_config"]
    assert (vision["norm_type"], vision["qk_normalization"], vision["qkv_bias"]) == ("rms_norm", True, False)
    assert (result["config"]["ps_version"], result["config"]["select_layer"]) == ("v1", -2)
    assert result["forward_logits"].shape == (1, prompt.shape[1], spec.vocab)
    assert torch.isfinite(result["forward_logits"]).all()


def test_phi3_source_passes_through_as_native_phi3(tmp_path):
    spec = Spec(llm="phi3", template="phi3-chat", rope_scaling=None)
    src, dst = tmp_path / "src", tmp_path / "dst"
    tensors = write_checkpoint(src, spec)
    assert convert(["--src", src, "--dst", dst, "--img-context-token-id", 150]) == 0
    llm = json.loads((dst / "config.json").read_text())["llm_config"]
    assert llm["model_type"] == "phi3" and "auto_map" not in llm and llm["sliding_window"] == 2047
    written = load_file(str(dst / "model.safetensors"))
    assert written.keys() == tensors.keys() and all(torch.equal(written[k], v) for k, v in tensors.items())


# ================================================================================== PVC-specific tensors
def pvc_spec(**kwargs) -> Spec:
    pvc = {"use_temporal": True, "image_repeat_time": 4, "video_repeat_time": 1, "tile_repeat_way": None, "mlp_add_ops": None}
    return Spec(model_type="pvc_internvl", pvc=pvc, **kwargs)


def pvc_tensors(spec: Spec, names: dict[str, str], modulations: int, time_dim: int = 16) -> dict[str, torch.Tensor]:
    """Temporal attention in the last ViT layer, AdaLN in all, a time MLP; ``names`` spells them."""
    g = torch.Generator().manual_seed(7)
    c, last = spec.vit_hidden, spec.vit_layers - 1
    out = {
        names["qkv_w"].format(i=last): torch.randn(3 * c, c, generator=g) * 0.1,
        names["qkv_b"].format(i=last): torch.randn(3 * c, generator=g) * 0.1,
        names["proj_w"].format(i=last): torch.randn(c, c, generator=g) * 0.1,
        names["proj_b"].format(i=last): torch.randn(c, generator=g) * 0.1,
        names["t0_w"]: torch.randn(c, time_dim, generator=g) * 0.1,
        names["t0_b"]: torch.randn(c, generator=g) * 0.1,
        names["t2_w"]: torch.randn(c, c, generator=g) * 0.1,
        names["t2_b"]: torch.randn(c, generator=g) * 0.1,
    }
    for i in range(spec.vit_layers):
        out[names["ada_w"].format(i=i)] = torch.randn(modulations * c, c, generator=g) * 0.1
        out[names["ada_b"].format(i=i)] = torch.randn(modulations * c, generator=g) * 0.1
    return out


GUESSED_NAMES = {  # torch.nn.MultiheadAttention / DiT spellings that the built-in guess table maps
    "qkv_w": "vision_model.encoder.layers.{i}.temporal_attn.in_proj_weight",
    "qkv_b": "vision_model.encoder.layers.{i}.temporal_attn.in_proj_bias",
    "proj_w": "vision_model.encoder.layers.{i}.temporal_attn.out_proj.weight",
    "proj_b": "vision_model.encoder.layers.{i}.temporal_attn.out_proj.bias",
    "ada_w": "vision_model.encoder.layers.{i}.adaLN_modulation.1.weight",
    "ada_b": "vision_model.encoder.layers.{i}.adaLN_modulation.1.bias",
    "t0_w": "vision_model.t_embedder.mlp.0.weight", "t0_b": "vision_model.t_embedder.mlp.0.bias",
    "t2_w": "vision_model.t_embedder.mlp.2.weight", "t2_b": "vision_model.t_embedder.mlp.2.bias",
}
PACKAGE_NAMES = {
    "qkv_w": "vision_model.encoder.layers.{i}.temporal_attn.qkv.weight",
    "qkv_b": "vision_model.encoder.layers.{i}.temporal_attn.qkv.bias",
    "proj_w": "vision_model.encoder.layers.{i}.temporal_attn.proj.weight",
    "proj_b": "vision_model.encoder.layers.{i}.temporal_attn.proj.bias",
    "ada_w": "vision_model.encoder.layers.{i}.adaLN_modulation.1.weight",
    "ada_b": "vision_model.encoder.layers.{i}.adaLN_modulation.1.bias",
    "t0_w": "vision_model.time_embedder.mlp.0.weight", "t0_b": "vision_model.time_embedder.mlp.0.bias",
    "t2_w": "vision_model.time_embedder.mlp.2.weight", "t2_b": "vision_model.time_embedder.mlp.2.bias",
}
UNGUESSABLE_NAMES = {
    "qkv_w": "vision_model.encoder.layers.{i}.zeit_mischer.qkv.weight",
    "qkv_b": "vision_model.encoder.layers.{i}.zeit_mischer.qkv.bias",
    "proj_w": "vision_model.encoder.layers.{i}.zeit_mischer.proj.weight",
    "proj_b": "vision_model.encoder.layers.{i}.zeit_mischer.proj.bias",
    "ada_w": "vision_model.encoder.layers.{i}.mod_lin.weight",
    "ada_b": "vision_model.encoder.layers.{i}.mod_lin.bias",
    "t0_w": "vision_model.zeit_embed.lin_a.weight", "t0_b": "vision_model.zeit_embed.lin_a.bias",
    "t2_w": "vision_model.zeit_embed.lin_b.weight", "t2_b": "vision_model.zeit_embed.lin_b.bias",
}


def renamed(tensors: dict[str, torch.Tensor], old: dict[str, str], new: dict[str, str], layers: int) -> dict:
    table = {old[k].format(i=i): new[k].format(i=i) for k in old for i in range(layers)}
    return {table.get(name, name): tensor for name, tensor in tensors.items()}


def test_pvc_source_with_guessed_temporal_names(tmp_path):
    spec = pvc_spec(vision_extra={"num_temporal_layers": 1})
    src, dst = tmp_path / "src", tmp_path / "dst"
    g = torch.Generator().manual_seed(0)
    from tests.conv_helpers import llm_tensors, vision_tensors

    base = {**vision_tensors(spec, g), **llm_tensors(spec, g)}
    tensors = write_checkpoint(src, spec, {**base, **pvc_tensors(spec, GUESSED_NAMES, modulations=6)})
    # an unknown vision-config key refuses the conversion and is named
    assert convert(["--src", src, "--dst", dst, "--img-context-token-id", 150]) == 1
    assert_nothing_written(dst)
    config_map = tmp_path / "config_map.json"
    config_map.write_text(json.dumps({"vision_config.num_temporal_layers": None}))
    assert convert(["--src", src, "--dst", dst, "--img-context-token-id", 150, "--config-map", config_map,
                    "--set", "tile_repeat_way=frame_major", "--set", "vision_config.time_input=\"normalized\""]) == 0
    config = json.loads((dst / "config.json").read_text())
    assert (config["tile_repeat_way"], config["vision_config"]["time_input"]) == ("frame_major", "normalized")
    vision = config["vision_config"]
    assert config["use_temporal"] and config["image_repeat_time"] == 4
    assert vision["temporal_attn_layers"] == [spec.vit_layers - 1] and vision["adaln_layers"] == [0, 1]
    assert (vision["adaln_num_modulations"], vision["time_embed_dim"], vision["temporal_attn_norm"]) == (6, 16, False)
    expected = renamed(expected_converted(tensors, spec), GUESSED_NAMES, PACKAGE_NAMES, spec.vit_layers)
    prompt = image_prompt(150, 4 * 4, spec.vocab)
    job = {"state_dict": True, "forward": {"pixel_values": torch.randn(1, 3, 56, 56), "input_ids": prompt,
                                           "data_flag": torch.tensor([1]), "split_sizes": [1]}}
    result = run_loader(dst, job, tmp_path)
    assert_state_dict(result["state_dict"], expected)
    assert len(result["state_dict"]) == len(expected)
    assert torch.isfinite(result["forward_logits"]).all()


def test_unknown_vision_config_key_is_named(tmp_path, capsys):
    spec = pvc_spec(vision_extra={"num_temporal_layers": 1})
    src, dst = tmp_path / "src", tmp_path / "dst"
    g = torch.Generator().manual_seed(0)
    from tests.conv_helpers import llm_tensors, vision_tensors

    write_checkpoint(src, spec, {**vision_tensors(spec, g), **llm_tensors(spec, g),
                                 **pvc_tensors(spec, GUESSED_NAMES, modulations=4)})
    assert convert(["--src", src, "--dst", dst]) == 1
    err = capsys.readouterr().err
    assert "vision_config.num_temporal_layers" in err and "--config-map" in err
    assert_nothing_written(dst)


def test_inspect_lists_unmapped_tensors_and_key_map_maps_them(tmp_path, capsys):
    spec = pvc_spec()
    src, dst = tmp_path / "src", tmp_path / "dst"
    g = torch.Generator().manual_seed(0)
    from tests.conv_helpers import llm_tensors, vision_tensors

    base = {**vision_tensors(spec, g), **llm_tensors(spec, g)}
    tensors = write_checkpoint(src, spec, {**base, **pvc_tensors(spec, UNGUESSABLE_NAMES, modulations=4, time_dim=8)})
    assert convert(["--src", src, "--dst", dst]) == 1
    err = capsys.readouterr().err
    assert "vision_model.encoder.layers.1.zeit_mischer.qkv.weight" in err and "vision_model.zeit_embed.lin_a.weight" in err
    assert_nothing_written(dst)

    assert convert(["--src", src, "--dst", dst, "--inspect"]) == 0
    out = capsys.readouterr().out
    assert_nothing_written(dst)
    assert "Unmapped source tensors (no rule maps them): 12 in 10 group(s)" in out
    assert re.search(r"vision_model\.encoder\.layers\.N\.mod_lin\.weight  x2  \[128, 32\] F32  layers 0-1", out)
    assert re.search(r"vision_model\.encoder\.layers\.N\.zeit_mischer\.qkv\.weight  x1  \[96, 32\] F32  layers 1", out)
    assert "vision_model.zeit_embed.lin_a.weight  x1  [32, 8] F32" in out
    assert "128 rows = 4C" in out and "downsample_ratio 0.5" in out and "ViT layers with unmapped tensors: 0-1" in out
    assert "vision_model.time_embedder.mlp.N.weight  x2" in out  # target tensors without a source

    key_map = tmp_path / "key_map.json"
    key_map.write_text(json.dumps({
        r"vision_model\.encoder\.layers\.(\d+)\.zeit_mischer\.(qkv|proj)\.(weight|bias)":
            r"vision_model.encoder.layers.\1.temporal_attn.\2.\3",
        r"vision_model\.encoder\.layers\.(\d+)\.mod_lin\.(weight|bias)": r"vision_model.encoder.layers.\1.adaLN_modulation.1.\2",
        r"vision_model\.zeit_embed\.lin_a\.(weight|bias)": r"vision_model.time_embedder.mlp.0.\1",
        r"vision_model\.zeit_embed\.lin_b\.(weight|bias)": r"vision_model.time_embedder.mlp.2.\1",
    }))
    assert convert(["--src", src, "--dst", dst, "--key-map", key_map]) == 0
    vision = json.loads((dst / "config.json").read_text())["vision_config"]
    assert (vision["adaln_num_modulations"], vision["time_embed_dim"], vision["temporal_attn_layers"]) == (4, 8, [1])
    written = {}
    for file in dst.glob("*.safetensors"):
        written.update(load_file(str(file)))
    expected = renamed(expected_converted(tensors, spec), UNGUESSABLE_NAMES, PACKAGE_NAMES, spec.vit_layers)
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[k], v) for k, v in expected.items())


# ====================================================================================== failure modes
def test_unmapped_tensor_refuses_and_leaves_nothing(tmp_path):
    spec = Spec()
    src, dst = tmp_path / "src", tmp_path / "out" / "dst"
    g = torch.Generator().manual_seed(0)
    from tests.conv_helpers import llm_tensors, vision_tensors

    extra = {"vision_model.encoder.layers.1.mystery.weight": torch.ones(3, 5)}
    write_checkpoint(src, spec, {**vision_tensors(spec, g), **llm_tensors(spec, g), **extra})
    run = run_cli(["--src", src, "--dst", dst], tmp_path)
    assert run.returncode != 0
    assert "vision_model.encoder.layers.1.mystery.weight [3, 5] F32" in run.stderr
    assert_nothing_written(dst)


def test_shape_mismatch_refuses_and_leaves_nothing(tmp_path, capsys):
    spec = Spec()
    src, dst = tmp_path / "src", tmp_path / "dst"
    g = torch.Generator().manual_seed(0)
    from tests.conv_helpers import llm_tensors, vision_tensors

    tensors = {**vision_tensors(spec, g), **llm_tensors(spec, g)}
    tensors["vision_model.encoder.layers.0.mlp.fc1.weight"] = torch.zeros(48, spec.vit_hidden)
    tensors["language_model.model.layers.1.attention.wqkv.weight"] = torch.zeros(100, spec.hidden)
    write_checkpoint(src, spec, tensors)
    assert convert(["--src", src, "--dst", dst]) == 1
    err = capsys.readouterr().err
    assert "vision_model.encoder.layers.0.mlp.fc1.weight [48, 32]" in err and "expects [64, 32]" in err
    assert "language_model.model.layers.1.attention.wqkv.weight has shape [100, 64], expected [128, 64]" in err
    assert_nothing_written(dst)


def test_existing_destination_needs_overwrite(tmp_path, capsys):
    spec = Spec()
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_checkpoint(src, spec)
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    assert convert(["--src", src, "--dst", dst]) == 1
    assert "--overwrite" in capsys.readouterr().err and (dst / "keep.txt").is_file()
    assert convert(["--src", src, "--dst", dst, "--overwrite"]) == 0
    assert not (dst / "keep.txt").exists() and (dst / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("dst.")] == []


def test_unsupported_source_kind(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llava"}))
    assert convert(["--src", src, "--dst", tmp_path / "dst"]) == 1
    assert "unsupported source model_type 'llava'" in capsys.readouterr().err


def test_converted_checkpoint_converts_again_unchanged(tmp_path):
    src, first, second = tmp_path / "src", tmp_path / "first", tmp_path / "second"
    write_checkpoint(src, Spec())
    assert convert(["--src", src, "--dst", first, "--img-context-token-id", 150]) == 0
    assert convert(["--src", first, "--dst", second]) == 0  # a pvc_internvl source in the package's own format
    a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    config_a, config_b = (json.loads((d / "config.json").read_text()) for d in (first, second))
    for config in (config_a, config_b):  # transformers adds a legacy "type" alias when it re-reads rope settings
        for key in ("rope_parameters", "rope_scaling"):
            if config["llm_config"].get(key):
                config["llm_config"][key].pop("type", None)
    assert config_a == config_b


# ========================================================================================= sharding
def test_multi_shard_source_and_sharded_output(tmp_path):
    spec = Spec()
    src, dst = tmp_path / "src", tmp_path / "dst"
    g = torch.Generator().manual_seed(0)
    from tests.conv_helpers import llm_tensors, vision_tensors

    tensors = {**vision_tensors(spec, g), **llm_tensors(spec, g)}
    buffer = {"language_model.model.layers.0.attention.rotary_emb.inv_freq": torch.ones(8)}  # saved by old code
    write_checkpoint(src, spec, {**tensors, **buffer}, shards=3)
    assert convert(["--src", src, "--dst", dst, "--img-context-token-id", 150, "--max-shard-size", "40KB",
                    "--dtype", "bfloat16"]) == 0
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 3 and not (dst / "model.safetensors").exists()
    assert files == [f"model-{i:05d}-of-{len(files):05d}.safetensors" for i in range(1, len(files) + 1)]
    expected = {k: v.to(torch.bfloat16) for k, v in expected_converted(tensors, spec).items()}
    assert set(index["weight_map"]) == set(expected)
    written, total = {}, 0
    for file in files:
        part = load_file(str(dst / file))
        assert all(index["weight_map"][name] == file for name in part)
        assert sum(t.numel() * t.element_size() for t in part.values()) <= 40_000 or len(part) == 1
        total += sum(t.numel() * t.element_size() for t in part.values())
        written.update(part)
    assert index["metadata"]["total_size"] == total
    assert all(torch.equal(written[k], v) for k, v in expected.items())
    assert json.loads((dst / "config.json").read_text())["dtype"] == "bfloat16"


# ========================================================================================= tokenizer
CORPUS_EN = ("The quick brown fox jumps over the lazy dog. Please describe the image in detail! What is shown in "
             "this video? There are 12 cats and 345 dogs; version 3.14 released on 2024-12-11.").split()
CORPUS_ZH = list("你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型英文名叫是一个有用无害的人工智能助手图片视频描述")


def train_internlm2_like_spm(add_dummy_prefix: bool, rule: str) -> bytes:
    import sentencepiece as spm

    rng = random.Random(0)
    lines = [" ".join(rng.choices(CORPUS_EN, k=8)) + "".join(rng.choices(CORPUS_ZH, k=6))
             + rng.choice(["  ", "\t", "\n", "   ", " "]) + " ".join(rng.choices(CORPUS_EN, k=3)) for _ in range(400)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=400, hard_vocab_limit=False,
        character_coverage=1.0, byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, add_dummy_prefix=add_dummy_prefix, normalization_rule_name=rule,
        pad_id=-1, minloglevel=2,
    )
    return model.getvalue()


def write_internlm2_tokenizer(folder: Path, model: bytes) -> dict[str, int]:
    """tokenizer.model + the InternLM2 / InternVL2 tokenizer files (remote slow class in auto_map)."""
    import sentencepiece as spm

    size = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
    (folder / "tokenizer.model").write_bytes(model)
    chat = {"<|im_end|>": size, "<|im_start|>": size + 1}
    added = {token: size + 2 + i for i, token in enumerate(INTERNVL_TOKENS)}
    decoder = {str(i): {"content": t, "lstrip": False, "rstrip": False, "normalized": False, "single_word": False,
                        "special": True} for t, i in chat.items()}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
        "tokenizer_class": "InternLM2Tokenizer", "added_tokens_decoder": decoder, "bos_token": "<s>",
        "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
    }))
    (folder / "added_tokens.json").write_text(json.dumps(added))
    (folder / "special_tokens_map.json").write_text(json.dumps({"additional_special_tokens": [*chat, *added]}))
    return {**chat, **added}


def reference_ids(model: bytes, specials: dict[str, int], text: str) -> list[int]:
    """What InternLM2Tokenizer does: BOS, then sentencepiece on the text between added tokens."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=model)
    pattern = "(" + "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)) + ")"
    ids = [1]
    for part in re.split(pattern, text):
        ids += [specials[part]] if part in specials else processor.encode(part) if part else []
    return ids


TOKENIZER_TEXTS = [
    "Please describe the image in detail.",
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。",
    "  two leading spaces", " one leading space", "multiple   spaces\tand\ttabs\n\nand newlines \n",
    "trailing spaces   ", "digits 1234567890 and 3.14", "emoji 😀 and a rare character 龘 (byte fallback)",
    "<|im_start|>system\n你是一个有用无害的人工智能助手。<|im_end|><|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\n"
    "What is shown in this video?<|im_end|><|im_start|>assistant\n",
    "<ref>the dog</ref><box>[[1, 2, 3, 4]]</box> <quad> </quad>", " <IMG_CONTEXT> describe", "", " ", "\n",
    "混合 English 和中文  text\t制表符",
]


@pytest.mark.parametrize("add_dummy_prefix,rule", [(False, "identity"), (True, "nmt_nfkc")])
def test_internlm2_tokenizer_matches_sentencepiece(tmp_path, add_dummy_prefix, rule):
    from transformers import AutoTokenizer

    model = train_internlm2_like_spm(add_dummy_prefix, rule)
    spec = Spec(vocab=400 + 11)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    specials = write_internlm2_tokenizer(src, model)
    import sentencepiece as spm

    assert spm.SentencePieceProcessor(model_proto=model).get_piece_size() + 11 <= spec.vocab
    spec.vocab = spm.SentencePieceProcessor(model_proto=model).get_piece_size() + 11
    write_checkpoint(src, spec)
    assert convert(["--src", src, "--dst", dst]) == 0
    assert not (dst / "tokenization_internlm2.py").exists() and (dst / "tokenizer.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(dst))
    for text in TOKENIZER_TEXTS + [" ".join(random.Random(i).choices(CORPUS_EN + CORPUS_ZH, k=12)) for i in range(30)]:
        assert tokenizer(text).input_ids == reference_ids(model, specials, text), repr(text)
    config = json.loads((dst / "config.json").read_text())
    assert config["img_context_token_id"] == specials["<IMG_CONTEXT>"]
    assert eos_list(json.loads((dst / "generation_config.json").read_text())) == [specials["<|im_end|>"], 2]
    # clients that stop at tokenizer.eos_token_id stop at the end of the assistant turn (the source's eos is </s>)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == specials["<|im_end|>"]
    assert tokenizer.decode(tokenizer("Please describe the image.").input_ids, skip_special_tokens=True) == \
        "Please describe the image."
    if add_dummy_prefix:
        return
    # the whole folder as users load it: AutoProcessor (remote code), the tokenizer, and chat()
    job = {"tokenizer_texts": TOKENIZER_TEXTS[:9], "processor": True,
           "chat": {"pixel_values": torch.randn(1, 3, 56, 56), "question": "<image>\nDescribe the image."}}
    result = run_loader(dst, job, tmp_path)
    expected = [reference_ids(model, specials, text) for text in TOKENIZER_TEXTS[:9]]
    assert result["tokenizer_ids"] == expected and result["processor"]["tokenizer_ids"] == expected
    assert result["processor"]["class"] == "PVCInternVLProcessor"
    assert result["processor"]["module"].startswith("transformers_modules.")
    assert result["processor"]["settings"] == [56, 1, 6, True]
    assert isinstance(result["chat"], str)


def test_sentencepiece_proto_reader_matches_sentencepiece():
    import sentencepiece as spm

    for dummy, rule in ((False, "identity"), (True, "nmt_nfkc")):
        data = train_internlm2_like_spm(dummy, rule)
        model, processor = spm_proto.parse_model(data), spm.SentencePieceProcessor(model_proto=data)
        assert len(model.pieces) == processor.get_piece_size()
        for index, piece in enumerate(model.pieces):
            assert piece.piece == processor.id_to_piece(index)
            assert piece.score == pytest.approx(processor.get_score(index))
            assert (piece.type == spm_proto.BYTE) == processor.is_byte(index)
            assert (piece.type == spm_proto.CONTROL) == processor.is_control(index)
        trainer, normalizer = model.trainer_spec, model.normalizer_spec
        assert (trainer.model_type, trainer.byte_fallback, trainer.split_digits) == (spm_proto.BPE, True, True)
        assert (normalizer.add_dummy_prefix, normalizer.remove_extra_whitespaces) == (dummy, False)
        assert (normalizer.name, bool(normalizer.precompiled_charsmap)) == (rule, rule != "identity")


def test_no_tokenizer_without_cli_id_leaves_img_context_none(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_checkpoint(src, Spec())
    assert convert(["--src", src, "--dst", dst]) == 0
    err = capsys.readouterr().err
    assert "no tokenizer was written" in err and "img_context_token_id is not known" in err
    assert json.loads((dst / "config.json").read_text())["img_context_token_id"] is None
    assert "img_context_token_id` is not set" in (dst / "README.md").read_text()


# ============================================================================================ helpers
def test_small_helpers():
    assert parse_size("5GB") == 5_000_000_000 and parse_size("2GiB") == 2**31 and parse_size("40KB") == 40_000
    with pytest.raises(ValueError):
        parse_size("lots")
    assert layer_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and layer_ranges([]) == ""


# ==================================================================================== demo checkpoint
DEMO_SCRIPT = ROOT / "scripts" / "make_demo_checkpoint.py"
DEMO_LOAD = r"""
import json, sys, torch
from transformers import AutoModel, AutoProcessor, AutoTokenizer
from transformers.dynamic_module_utils import get_class_from_dynamic_module

path = "demo-checkpoint"
model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
pixel_values = get_class_from_dynamic_module("processing.load_image", path)("examples/image1.jpg", input_size=112, max_num=6)
answer = model.chat(tokenizer, pixel_values, "<image>\nDescribe the image.", dict(max_new_tokens=6, do_sample=False))
messages = [{"role": "user", "content": [{"type": "image", "path": "examples/image1.jpg"},
                                          {"type": "text", "text": "Describe the image."}]}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                       return_tensors="pt")
ids = model.generate(**inputs, max_new_tokens=6, do_sample=False)
json.dump({"answer": answer, "generated": ids.tolist(), "decoded": tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True),
           "tiles": pixel_values.shape[0], "context": int((inputs["input_ids"] == 7).sum()),
           "eos": model.generation_config.eos_token_id, "classes": [type(x).__name__ for x in (model, processor)]},
          open("out.json", "w"))
"""


def python_blocks(markdown: str) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL))


def test_demo_checkpoint_loads_with_auto_classes_and_chats(tmp_path):
    from tests.conv_helpers import isolated_env
    from tests.tokenizer_utils import EOS_ID, IM_END_ID

    env = isolated_env(tmp_path)
    made = subprocess.run([sys.executable, str(DEMO_SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    dst = tmp_path / "demo-checkpoint"
    card = (dst / "README.md").read_text()
    assert "weights of this checkpoint are random" in card and str(tmp_path) not in card
    assert "- random-weights" in card and "pipeline_tag: image-text-to-text" in card
    config = json.loads((dst / "config.json").read_text())
    assert config["auto_map"] == writer.AUTO_MAP and config["use_temporal"] is True
    assert (config["downsample_ratio"], config["image_repeat_time"], config["force_image_size"]) == (0.25, 4, 112)
    assert {"media.py", "processing.py", "chat_template.jinja", "processor_config.json"} <= {p.name for p in dst.iterdir()}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("demo-checkpoint.")] == []
    from PIL import Image

    assert Image.open(tmp_path / "examples" / "image1.jpg").size == (448, 336)
    import av

    with av.open(str(tmp_path / "examples" / "red-panda.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == 96
    (tmp_path / "load.py").write_text(DEMO_LOAD)
    run = subprocess.run([sys.executable, "load.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["classes"] == ["PVCInternVLChatModel", "PVCInternVLProcessor"]
    assert out["eos"] == [IM_END_ID, EOS_ID]
    assert out["tiles"] == 7 and out["context"] == 7 * 4 * 4  # 6 tiles + thumbnail, 4 tokens x 4 repeats each
    assert out["answer"] == out["decoded"].strip() and out["answer"]  # chat() == generate() on the native path
    # every snippet of the model card runs as written (bfloat16 on CPU) from the folder holding the checkpoint
    (tmp_path / "card.py").write_text(python_blocks(card))
    run = subprocess.run([sys.executable, "card.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip()  # the random model's answers (they may hold newlines)


def test_tokenizer_config_written_by_transformers5_is_made_readable_by_4(tmp_path):
    """transformers 5 writes TokenizersBackend and a list-form extra_special_tokens; 4.57 reads neither."""
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "TokenizersBackend", "backend": "tokenizers", "eos_token": "</s>",
        "additional_special_tokens": ["<img>"], "extra_special_tokens": ["<img>", "<IMG_CONTEXT>"],
    }))
    changes = writer.make_tokenizer_config_portable(tmp_path)
    assert changes == ["tokenizer_class TokenizersBackend -> PreTrainedTokenizerFast",
                       "2 list-form extra_special_tokens -> additional_special_tokens"]
    assert json.loads((tmp_path / "tokenizer_config.json").read_text()) == {
        "tokenizer_class": "PreTrainedTokenizerFast", "backend": "tokenizers", "eos_token": "</s>",
        "additional_special_tokens": ["<img>", "<IMG_CONTEXT>"],
    }
    assert writer.make_tokenizer_config_portable(tmp_path) == []  # already portable: unchanged
