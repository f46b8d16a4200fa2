"""Ask PVC-InternVL a question about images or a video from the command line.

    python scripts/chat.py --model DIR --image a.jpg [b.jpg ...] --question "What is shown?"
    python scripts/chat.py --model DIR --video clip.mp4 --num-segments 64 --question "What happens?"
    python scripts/chat.py            # no --model: a tiny random-weight model on a generated clip (offline demo)

Prints the answer and the token budget (frames or tiles, tokens per frame / tile, total visual tokens).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time
import types

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _package():
    """Import the flat remote-code files as the package ``pvc_internvl`` (they use relative imports)."""
    if "pvc_internvl" not in sys.modules:
        package = types.ModuleType("pvc_internvl")
        package.__path__ = [str(ROOT)]
        sys.modules["pvc_internvl"] = package
    import pvc_internvl.configuration_pvc_internvl as configuration
    import pvc_internvl.modeling_pvc_internvl as modeling
    import pvc_internvl.processing as processing

    return configuration, modeling, processing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="converted checkpoint folder (omit for the tiny random demo)")
    media = parser.add_mutually_exclusive_group()
    media.add_argument("--image", nargs="+", help="one or more image files")
    media.add_argument("--video", help="a video file")
    parser.add_argument("--question", default=None, help="the question (default: a description request)")
    parser.add_argument("--num-segments", type=int, default=16, help="frames sampled from a video")
    parser.add_argument("--max-num", type=int, default=None, help="maximum tiles per image (default: config)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--prunevid", action="store_true", help="switch PruneVid on for this call (videos)")
    return parser.parse_args(argv)


def tiny_demo(workdir: pathlib.Path):
    """A tiny random-weight PVC model, its tokenizer, and a generated 8-frame clip (clearly not a real model)."""
    configuration, modeling, _ = _package()
    sys.path.insert(0, str(ROOT))
    from tests.tokenizer_utils import IMG_CONTEXT_ID, VOCAB_SIZE, make_tiny_tokenizer

    import av
    import numpy as np

    tokenizer = make_tiny_tokenizer(workdir / "tokenizer")
    config = configuration.PVCInternVLConfig(
        vision_config=dict(image_size=112, hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2),
        llm_config=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB_SIZE, max_position_embeddings=4096),
        use_temporal=True, downsample_ratio=0.25, ps_version="v2", image_repeat_time=4, video_repeat_time=1,
        dynamic_image_size=True, use_thumbnail=True, max_dynamic_patch=6, img_context_token_id=IMG_CONTEXT_ID,
        prunevid=dict(selected_layer=1),
    )
    torch.manual_seed(0)
    model = modeling.PVCInternVLChatModel(config).eval()
    video = workdir / "demo.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(24):
            rgb = np.full((120, 160, 3), (10 * i) % 256, dtype=np.uint8)
            rgb[:, : 8 + 4 * i] = 255  # a bar that grows: a little motion
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return model, tokenizer, video


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, _, processing = _package()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            from transformers import AutoModel, AutoTokenizer

            dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
            model = AutoModel.from_pretrained(args.model, trust_remote_code=True, dtype=dtype).eval().to(args.device)
            tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True, use_fast=False)
            video = args.video
            print(f"model: {args.model}")
        else:
            model, tokenizer, video = tiny_demo(pathlib.Path(tmp))
            if args.image:
                video = None
            elif args.video:
                video = args.video
            print("model: TINY RANDOM-WEIGHT DEMO MODEL (no checkpoint given; answers are meaningless)")
            if video and not args.video:
                print(f"input: a generated 24-frame test clip ({video})")
        config = model.config
        if video:
            pixel_values, num_patches_list = processing.load_video(
                str(video), num_segments=args.num_segments, input_size=config.image_size, max_num=1
            )
            question = processing.build_video_prompt(len(num_patches_list)) + (args.question or "What happens in the video?")
            data_flag = torch.tensor([3])
            unit, count = "frames", len(num_patches_list)
        elif args.image:
            tiles = [
                processing.load_image(path, input_size=config.image_size, max_num=args.max_num or config.max_dynamic_patch,
                                      use_thumbnail=config.use_thumbnail)
                for path in args.image
            ]
            pixel_values, num_patches_list = torch.cat(tiles), [t.shape[0] for t in tiles]
            body = args.question or "Describe the image in detail."
            question = body if len(tiles) == 1 else processing.build_multi_image_prompt(len(tiles)) + body
            data_flag = torch.tensor([1 if len(tiles) == 1 else 2])
            unit, count = "tiles", pixel_values.shape[0]
        else:
            print("error: give --image or --video together with --model", file=sys.stderr)
            return 2
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        generation_config = dict(max_new_tokens=args.max_new_tokens, do_sample=False)
        start = time.perf_counter()
        response, stats = model.chat(
            tokenizer, pixel_values.to(device, dtype), question, generation_config,
            data_flag=data_flag, num_patches_list=num_patches_list, return_stats=True,
            prunevid={"enabled": True} if args.prunevid else None,
        )
        elapsed = time.perf_counter() - start
        per = config.tokens_per_tile(int(data_flag[0]))
        print(f"question: {question.splitlines()[-1]}")
        print(f"answer: {response}")
        print(
            f"token budget: {count} {unit} x {per} tokens per {unit[:-1]} = {count * per} visual tokens"
            f" (after PruneVid stage 1: {stats['visual_tokens_after_stage1'][0]}, stage 2: {stats['visual_tokens_after_stage2'][0]})"
        )
        print(f"time: {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
