"""Cross-version check of converted checkpoints (CI runs it between the transformers 5 and 4 venvs):

    python tests/cross_version.py convert DIR   # with one transformers version
    python tests/cross_version.py load DIR      # with the other one

``convert`` writes a tiny official-layout InternVL2 checkpoint with an InternLM2 sentencepiece tokenizer,
converts it into ``DIR/converted`` and records, with the converting version, the tokenizer ids, the rendered
chat prompt, the processor's input ids, the logits and a greedy ``chat()`` answer in ``DIR/expected.json``.
``load`` loads the folder with AutoTokenizer / AutoProcessor / AutoModel (remote code, offline) and checks
that the other version gives the same. Exit code 0 when everything matches.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

TEXTS = ["Please describe the image in detail.", "你是由上海人工智能实验室联合商汤科技开发的",
         "<|im_start|>user\n<img><IMG_CONTEXT></img>\nWhat?<|im_end|>", "  two spaces and\ttabs\n"]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "What is shown?"}]


def observe(folder: Path) -> dict:
    """What the installed transformers makes of ``folder``."""
    import transformers
    from transformers import AutoModel, AutoProcessor, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(str(folder), trust_remote_code=True)
    model = AutoModel.from_pretrained(str(folder), trust_remote_code=True, dtype=torch.float32).eval()
    pixel_values = torch.linspace(-1, 1, 3 * 56 * 56).reshape(1, 3, 56, 56)
    inputs = processor.apply_chat_template(MESSAGES[:1] + [{"role": "user", "content": [
        {"type": "image", "image": _image()}, {"type": "text", "text": "Describe it."}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        prompt = "<img>" + "<IMG_CONTEXT>" * model.config.num_image_token + "</img>\nWhat?"
        logits = model(pixel_values=pixel_values, input_ids=torch.tensor([tokenizer(prompt).input_ids])).logits
    answer = model.chat(tokenizer, pixel_values, "<image>\nDescribe the image.", dict(max_new_tokens=5, do_sample=False))
    return {
        "transformers": transformers.__version__,
        "tokenizer_class": type(tokenizer).__name__,
        "processor_class": type(processor).__name__,
        "ids": [tokenizer(text).input_ids for text in TEXTS],
        "prompt": tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
        "processor_ids": inputs["input_ids"].tolist(),
        "logits": logits[0, -3:].tolist(),
        "answer": answer,
        "eos": model.generation_config.eos_token_id,
    }


def _image():
    from PIL import Image

    return Image.new("RGB", (80, 60), (200, 30, 30))


def convert(work: Path) -> None:
    from conversion import convert_checkpoint
    from tests.conv_helpers import Spec, write_checkpoint
    from tests.test_conversion import train_internlm2_like_spm, write_internlm2_tokenizer

    src, dst = work / "source", work / "converted"
    src.mkdir(parents=True)
    model = train_internlm2_like_spm(False, "identity")
    specials = write_internlm2_tokenizer(src, model)
    write_checkpoint(src, Spec(vocab=max(specials.values()) + 1))
    if convert_checkpoint.main(["--src", str(src), "--dst", str(dst)]) != 0:
        raise SystemExit("conversion failed")
    (work / "expected.json").write_text(json.dumps(observe(dst), ensure_ascii=False, indent=1))


def load(work: Path) -> None:
    expected = json.loads((work / "expected.json").read_text())
    got = observe(work / "converted")
    wrong = [key for key in expected if key not in ("transformers", "logits", "tokenizer_class") and got[key] != expected[key]]
    diff = (torch.tensor(got["logits"]) - torch.tensor(expected["logits"])).abs().max().item()
    if diff > 1e-4:
        wrong.append(f"logits (max |diff| {diff:.2e})")
    print(f"converted with transformers {expected['transformers']}, loaded with {got['transformers']}: "
          f"{'OK' if not wrong else 'MISMATCH in ' + ', '.join(wrong)}")
    if wrong:
        for key in wrong:
            if key in got:
                print(f"  {key}: expected {expected[key]!r}\n  {' ' * len(key)}  got      {got[key]!r}")
        raise SystemExit(1)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("convert", "load"):
        raise SystemExit("usage: python tests/cross_version.py convert|load DIR")
    (convert if sys.argv[1] == "convert" else load)(Path(sys.argv[2]))
