"""The call patterns of the official PVC evaluation scripts (OpenGVLab/PVC eval/*: MVBench, MME, MMBench,
VQA / MMMU / SEED) and of the PVC model card, replayed unchanged (minus ``.cuda()``) against the documented demo
checkpoint in a fresh offline process, on whichever transformers version runs the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

REPLAY = textwrap.dedent(
    r"""
    import json, torch
    from transformers import AutoModel, AutoProcessor, AutoTokenizer

    path = "./demo-checkpoint"
    # every official script loads like this
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True, use_fast=False)
    model = AutoModel.from_pretrained(path, trust_remote_code=True, low_cpu_mem_usage=True,
                                      torch_dtype=torch.bfloat16, load_in_8bit=False).eval()
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    image = processor(images="./examples/image1.jpg")["pixel_values"].to(torch.bfloat16)
    out = {"dtype": str(next(model.parameters()).dtype)}

    # VQA / MMMU / SEED / ScienceQA: no layout fields, the question has no <image>
    vqa = dict(num_beams=5, max_new_tokens=10, min_new_tokens=1, do_sample=False, temperature=0.0)
    out["vqa"] = model.chat(tokenizer=tokenizer, pixel_values=image,
                            question="What is it? Answer the question using a single word or phrase.",
                            generation_config=vqa)
    # MMBench: split_sizes as a LongTensor, no data_flag
    out["mmbench"] = model.chat(tokenizer=tokenizer, pixel_values=image,
                                split_sizes=torch.LongTensor((image.shape[0],)),
                                question="What is it? Answer the question using a single word or phrase.",
                                generation_config=vqa)
    # MME: split_sizes as a list, sampling settings with do_sample=False, the tokenizer's eos in the config
    mme = dict(do_sample=False, top_k=50, top_p=0.9, num_beams=5, max_new_tokens=20,
               eos_token_id=tokenizer.eos_token_id)
    out["mme"] = model.chat(tokenizer=tokenizer, pixel_values=image, split_sizes=[image.shape[0]],
                            question="Is it red? Answer the question using a single word or phrase.",
                            generation_config=mme)
    out["mme_without_eos"] = model.chat(tokenizer=tokenizer, pixel_values=image, split_sizes=[image.shape[0]],
                                        question="Is it red? Answer the question using a single word or phrase.",
                                        generation_config={k: v for k, v in mme.items() if k != "eos_token_id"})
    # MVBench: "Frame{i}:<image>" lines (no space), LongTensor split_sizes / data_flag, a flat num_patches_list
    video = processor(videos="./examples/red-panda.mp4", num_segments=16)
    frames = video["pixel_values"].to(torch.bfloat16)
    special = "\n".join("Frame{}:<image>".format(i + 1) for i in range(frames.shape[0]))
    question = special + "\n" + "Carefully watch the video.\n" + "Question: what?\nOptions:\n(A) a\n(B) b" + "\nOnly give the best option."
    out["mvbench"] = model.chat(tokenizer=tokenizer, pixel_values=frames,
                                split_sizes=torch.LongTensor((frames.shape[0],)), data_flag=torch.LongTensor((3,)),
                                num_patches_list=[1] * frames.shape[0], question=question,
                                generation_config=dict(num_beams=5, max_new_tokens=10, min_new_tokens=1,
                                                       do_sample=False, temperature=0.0))
    # the model card: data_flag tensors, positional generation_config, sampling
    card = dict(max_new_tokens=16, do_sample=True)
    torch.manual_seed(0)
    out["card_image"] = model.chat(tokenizer, image, "<image>\nWhat is in the image?", card,
                                   data_flag=torch.tensor([1], dtype=torch.long))
    second = processor(images="./examples/image2.jpg")["pixel_values"].to(torch.bfloat16)
    out["card_images"] = model.chat(tokenizer, torch.cat((image, second)), "Image-1: <image>\nImage-2: <image>\nSame?",
                                    card, data_flag=torch.tensor([2], dtype=torch.long),
                                    num_patches_list=[image.shape[0], second.shape[0]])
    prefix = "".join(f"Frame{i+1}: <image>\n" for i in range(frames.shape[0]))
    out["card_video"] = model.chat(tokenizer, frames, prefix + "Describe this video in detail.", card,
                                   data_flag=torch.tensor([3], dtype=torch.long), num_patches_list=[1] * frames.shape[0])
    # multi-turn, as in the InternVL2 model card
    greedy = dict(max_new_tokens=8, do_sample=False)
    first, history = model.chat(tokenizer, image, "<image>\nDescribe.", greedy, history=None, return_history=True)
    again, history = model.chat(tokenizer, image, "And the colour?", greedy, history=history, return_history=True)
    out["turns"] = [len(history), history[0][0], history[0][1] == first, history[1][1] == again]
    # pure text
    out["text"] = model.chat(tokenizer, None, "Hello, who are you?", greedy)
    out["use_fast_false_ids"] = tokenizer("Frame1: describe")["input_ids"]
    out["fast_ids"] = AutoTokenizer.from_pretrained(path, trust_remote_code=True)("Frame1: describe")["input_ids"]
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("official")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(folder / "hf_home"), HF_MODULES_CACHE=str(folder / "modules"))
    made = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_checkpoint.py")], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    (folder / "replay.py").write_text(REPLAY)
    run = subprocess.run([sys.executable, "replay.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    line = next(l for l in run.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_every_official_pattern_answers(replayed):
    assert replayed["dtype"] == "torch.bfloat16"
    for key in ("vqa", "mmbench", "mme", "mvbench", "card_image", "card_images", "card_video", "text"):
        assert isinstance(replayed[key], str), key


def test_layout_defaults_agree(replayed):
    # no layout fields == split_sizes alone: one single-image sample either way
    assert replayed["vqa"] == replayed["mmbench"]


def test_chat_stops_at_the_template_separator_whatever_eos_the_script_passes(replayed):
    # the official chat() replaces eos_token_id by the separator id, so the tokenizer's eos changes nothing
    assert replayed["mme"] == replayed["mme_without_eos"]


def test_multi_turn_history(replayed):
    length, first_question, first_kept, second_kept = replayed["turns"]
    assert length == 2 and first_question == "<image>\nDescribe." and first_kept and second_kept


def test_slow_tokenizer_request_gives_the_same_ids(replayed):
    assert replayed["use_fast_false_ids"] == replayed["fast_ids"]
