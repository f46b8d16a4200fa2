"""Run in a fresh interpreter by the converter tests: load a converted checkpoint the way users do and
record what the test asks for.

    python conv_loader.py DST JOB.pt OUT.pt

JOB is a dict (torch.save) with any of:
  state_dict: True             -> out["state_dict"]: the loaded model's state dict, under the checkpoint names
  config: True                 -> out["config"]: AutoConfig.from_pretrained(...).to_dict()
  lm_logits: [[ids], ...]      -> out["lm_logits"]: language-model logits per prompt, run in this order
  forward: {kwargs}            -> out["forward_logits"]: model(**kwargs).logits
  golden: DIR                  -> out["golden"]: max |diff| per case and generated ids (cases.json layout)
  tokenizer_texts: [str]       -> out["tokenizer_ids"]: AutoTokenizer ids
  processor: True              -> out["processor"]: AutoProcessor class / tokenizer ids / settings
  chat: {pixel_values, question} -> out["chat"]: model.chat(...) response (greedy, 4 new tokens)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoProcessor, AutoTokenizer


def golden(model, folder: Path) -> dict:
    cases = json.loads((folder / "cases.json").read_text())
    out = {}
    for case in cases["cases"]:
        tensors = load_file(str(folder / case["file"]))
        if "logits" in tensors:
            with torch.no_grad():
                logits = model(pixel_values=tensors["pixel_values"], input_ids=tensors["input_ids"],
                               attention_mask=tensors["attention_mask"], image_flags=tensors["image_flags"]).logits
            mask = tensors["attention_mask"].bool()
            out[case["id"]] = (logits - tensors["logits"])[mask].abs().max().item()
        if "generated_ids" in tensors:
            common = dict(max_new_tokens=8, do_sample=False, eos_token_id=154, pad_token_id=2)
            out["generated_ids"] = model.generate(pixel_values=tensors["pixel_values"], input_ids=tensors["input_ids"],
                                                  attention_mask=tensors["attention_mask"], **common)[:, tensors["input_ids"].shape[1]:].tolist()
            per_row = (tensors["batch_input_ids"] == model.config.img_context_token_id).sum(1)
            split_sizes = (per_row // model.config.num_image_token).tolist()
            out["batch_split_sizes"] = split_sizes
            out["batch_generated_ids"] = model.generate(
                pixel_values=tensors["batch_pixel_values"], input_ids=tensors["batch_input_ids"],
                attention_mask=tensors["batch_attention_mask"], data_flag=[1] * len(split_sizes),
                split_sizes=split_sizes, **common)[:, tensors["batch_input_ids"].shape[1]:].tolist()
    return out


def main() -> None:
    dst, job_file, out_file = sys.argv[1], sys.argv[2], sys.argv[3]
    job = torch.load(job_file)
    out: dict = {}
    if job.get("config"):
        out["config"] = AutoConfig.from_pretrained(dst, trust_remote_code=True).to_dict()
    model = AutoModel.from_pretrained(dst, trust_remote_code=True, dtype=torch.float32).eval()
    out["model_class"] = type(model).__name__
    if job.get("state_dict"):
        named = sys.modules[type(model).__module__].checkpoint_name  # the official names the checkpoint keeps
        out["state_dict"] = {named(k): v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        if "lm_logits" in job:
            out["lm_logits"] = [model(input_ids=torch.tensor([ids])).logits[0] for ids in job["lm_logits"]]
        if "forward" in job:
            out["forward_logits"] = model(**job["forward"]).logits
    if "golden" in job:
        out["golden"] = golden(model, Path(job["golden"]))
    if "tokenizer_texts" in job or "chat" in job:
        tokenizer = AutoTokenizer.from_pretrained(dst, trust_remote_code=True)
        out["tokenizer_ids"] = [tokenizer(text).input_ids for text in job.get("tokenizer_texts", [])]
    if job.get("processor"):
        processor = AutoProcessor.from_pretrained(dst, trust_remote_code=True)
        out["processor"] = {
            "class": type(processor).__name__,
            "module": type(processor).__module__,
            "settings": [processor.image_size, processor.min_dynamic_patch, processor.max_dynamic_patch,
                         processor.use_thumbnail],
            "tokenizer_ids": [processor.tokenizer(text).input_ids for text in job.get("tokenizer_texts", [])],
        }
    if "chat" in job:
        chat = job["chat"]
        out["chat"] = model.chat(tokenizer, chat["pixel_values"], chat["question"],
                                 dict(max_new_tokens=4, do_sample=False))
    torch.save(out, out_file)


if __name__ == "__main__":
    main()
