"""A saved tiny checkpoint loads in a fresh, offline process through the Auto classes and chats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from pvc_internvl.modeling_pvc_internvl import PVCInternVLChatModel
from pvc_internvl.processing import PVCInternVLProcessor
from tests.chat_all import run_all
from tests.conftest import ROOT
from tests.tiny import tiny_model
from tests.tokenizer_utils import IM_END_ID, make_tiny_tokenizer

AUTO_MAP = {
    "AutoConfig": "configuration_pvc_internvl.PVCInternVLConfig",
    "AutoModel": "modeling_pvc_internvl.PVCInternVLChatModel",
    "AutoModelForImageTextToText": "modeling_pvc_internvl.PVCInternVLChatModel",
}


def write_video(path, frames=12, width=96, height=64):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            rgb = np.full((height, width, 3), (20 * i) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


CHILD = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoConfig, AutoModel, AutoProcessor, AutoTokenizer
    sys.path.insert(0, {root!r})
    from tests.chat_all import run_all
    path = {path!r}
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    model = AutoModel.from_pretrained(path, trust_remote_code=True, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    out = run_all(model, tokenizer, processor, {media!r})
    out["modules"] = [type(config).__module__, type(model).__module__, type(processor).__module__]
    mapped = AutoModel.from_pretrained(path, trust_remote_code=True, dtype=torch.float32, device_map="auto")
    out["device_map_answer"] = run_all(mapped.eval(), tokenizer, processor, {media!r})["image"]
    bf16 = AutoModel.from_pretrained(path, trust_remote_code=True, dtype=torch.bfloat16).eval()
    out["bf16_dtype"] = str(next(bf16.parameters()).dtype)
    out["bf16_answer_type"] = type(run_all(bf16, tokenizer, processor, {media!r})["video"]).__name__
    from transformers import pipeline
    from tests.chat_all import GEN, messages_for
    pipe = pipeline("image-text-to-text", model=path, trust_remote_code=True, dtype=torch.float32)
    out["pipeline_class"] = type(pipe.model).__name__
    for kind in ("image", "video"):
        answer = pipe(text=messages_for(kind, {media!r}), return_full_text=False, generate_kwargs=dict(GEN))
        out["pipeline_" + kind] = answer[0]["generated_text"]
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    path = root / "tiny-pvc"
    tokenizer = make_tiny_tokenizer(path)
    model = tiny_model(pvc=True, temporal_random=True)
    model.config.auto_map = dict(AUTO_MAP)
    PVCInternVLChatModel.register_for_auto_class("AutoModel")
    model.generation_config.eos_token_id = [IM_END_ID]  # what the converter writes: the template separator
    model.save_pretrained(path)
    processor = PVCInternVLProcessor.from_model_config(tokenizer, model.config)
    processor.save_pretrained(path)
    media = {"wide": str(root / "wide.png"), "square": str(root / "square.png"), "video": str(root / "clip.mp4")}
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (100, 260, 3), dtype=np.uint8)).save(media["wide"])
    Image.fromarray(rng.integers(0, 255, (90, 90, 3), dtype=np.uint8)).save(media["square"])
    write_video(media["video"])
    return path, model, tokenizer, processor, media


def test_saved_folder_is_self_contained(checkpoint):
    path = checkpoint[0]
    names = set(os.listdir(path))
    for required in ("configuration_pvc_internvl.py", "modeling_pvc_internvl.py", "prunevid.py", "conversation.py",
                     "processing.py", "media.py", "layout.py", "config.json", "processor_config.json",
                     "tokenizer.json", "generation_config.json"):
        assert required in names, f"{required} missing from the saved folder: {sorted(names)}"
    config = json.loads((path / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP and config["img_context_token_id"] == 7


def test_fresh_offline_process_loads_and_chats(checkpoint, tmp_path):
    path, model, tokenizer, processor, media = checkpoint
    expected = run_all(model, tokenizer, processor, media)
    for kind in ("image", "images", "video", "text"):  # native path == chat()
        assert expected[kind + "_native_text"] == expected[kind], kind
    assert expected["image_tiles"] == [4]  # 260x100 -> 3 tiles + thumbnail
    assert expected["images_tiles"] == [4, 1]
    assert expected["video_tiles"] == [1] * 8
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_MODULES_CACHE=str(tmp_path / "modules"))
    script = CHILD.format(root=str(ROOT), path=str(path), media=media)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT"))
    got = json.loads(line[len("RESULT"):])
    assert all(m.startswith("transformers_modules.") for m in got["modules"]), got["modules"]
    for key in expected:
        assert got[key] == expected[key], key
    assert got["pipeline_class"] == "PVCInternVLChatModel"
    # the pipeline decodes prompt + answer and cuts the decoded prompt off: the answer keeps its leading space
    assert got["pipeline_image"].strip() == expected["image"] and got["pipeline_video"].strip() == expected["video"]
    assert got["device_map_answer"] == expected["image"]
    assert got["bf16_dtype"] == "torch.bfloat16" and got["bf16_answer_type"] == "str"
    assert isinstance(expected["batch"], list) and len(expected["batch"]) == 2
    assert expected["batch"] == expected["batch_native"] == [expected["image"], expected["video"]]
