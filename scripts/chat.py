"""Ask PVC-InternVL a question about images or a video from the command line.

    python scripts/chat.py --model DIR --image a.jpg [b.jpg ...] --question "What is shown?"
    python scripts/chat.py --model DIR --video clip.mp4 --num-segments 64 --question "What happens?"
    python scripts/chat.py --model DIR --video clip.mp4 --prunevid
    python scripts/chat.py            # no --model: a tiny random-weight model on a generated clip (offline demo)

Prints the answer and the token budget (frames or tiles, tokens per frame / tile, total visual tokens; the
counts after PruneVid's two stages when PruneVid is on). Every argument and path is checked before
anything heavy is loaded; a bad one is reported in one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import tempfile
import time
from typing import NoReturn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from conversion.package import remote_module  # noqa: E402
from scripts import cli  # noqa: E402
from scripts.cli import HelpFormatter, positive_int  # noqa: E402

DTYPES = ("auto", "float32", "bfloat16", "float16")  # "auto": the checkpoint's dtype; float32 for the demo
DEMO_CLIP_FRAMES = 24
PROG = "chat.py"


def fail(message: str) -> NoReturn:
    """Report a usage error in one line on stderr and exit with code 2."""
    cli.fail(PROG, message)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see --help)")


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", type=pathlib.Path, default=None,
                        help="converted checkpoint folder (None: the tiny random-weight demo model)")
    media = parser.add_mutually_exclusive_group()
    media.add_argument("--image", type=pathlib.Path, nargs="+", default=None, help="one or more image files")
    media.add_argument("--video", type=pathlib.Path, default=None,
                       help="a video file (None without --image: the demo's generated clip)")
    parser.add_argument("--question", default=None,
                        help="the question (None: a request to describe the image or the video)")
    parser.add_argument("--num-segments", type=positive_int, default=16, help="frames sampled from a video")
    parser.add_argument("--max-num", type=positive_int, default=None,
                        help="maximum tiles per image (None: the config's max_dynamic_patch)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=128, help="longest answer, in tokens")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="weights and pixels dtype (auto: the checkpoint's dtype, float32 for the demo)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 or mps")
    parser.add_argument("--prunevid", action="store_true",
                        help="switch PruneVid on for this call (videos only; also on when the config enables it)")
    return parser


def check_paths(args: argparse.Namespace) -> None:
    """Every file and folder the call needs exists, before anything is loaded."""
    if args.model is not None:
        if not args.model.is_dir():
            fail(f"--model {args.model}: no such folder (give a converted checkpoint folder, or omit --model "
                 "for the demo)")
        if not (args.model / "config.json").is_file():
            fail(f"--model {args.model} has no config.json: is it a converted checkpoint folder?")
        if args.image is None and args.video is None:
            fail(f"--model {args.model} needs --image or --video (only the demo has its own clip)")
    for path in args.image or []:
        if not path.is_file():
            fail(f"--image {path}: no such file")
    if args.video is not None and not args.video.is_file():
        fail(f"--video {args.video}: no such file")


def check_options(args: argparse.Namespace) -> None:
    """Combinations that cannot work, refused before loading."""
    if args.question is not None and not args.question.strip():
        fail("--question is empty; ask something, or omit it for the default question")
    if args.prunevid and args.image is not None:
        fail("--prunevid prunes video tokens only; use it with --video (or the demo clip)")
    if args.max_num is not None and args.image is None:
        fail("--max-num sets the tiles per image; a video is read one tile per frame (use --num-segments)")
    if args.model is None and args.image is None and args.video is None and importlib.util.find_spec("av") is None:
        fail("the demo writes its clip with PyAV, which is not installed: pip install av (or give --video)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line (imports nothing heavy, so ``--help`` and errors answer at once)."""
    args = build_parser().parse_args(argv)
    check_paths(args)
    check_options(args)
    return args


def resolve_device(text: str):
    """``--device`` as a ``torch.device`` that exists on this machine (else one line on stderr, exit 2)."""
    return cli.resolve_device(text, PROG)


def resolve_dtype(name: str, demo: bool):
    """``--dtype`` as a torch dtype, or "auto" (the checkpoint's dtype) for a checkpoint."""
    import torch

    if name == "auto":
        return torch.float32 if demo else "auto"
    return getattr(torch, name)


def load_checkpoint(folder: pathlib.Path, device, dtype):
    """The converted checkpoint's model (on ``device`` in ``dtype``) and tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=dtype).eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True, use_fast=False)
    return model, tokenizer


def tiny_demo(workdir: pathlib.Path, device, dtype):
    """A tiny random-weight PVC model (clearly not a real model) on ``device`` in ``dtype``, and its tokenizer."""
    import torch

    from conversion.tiny_tokenizer import IMG_CONTEXT_ID, VOCAB_SIZE, make_tiny_tokenizer

    configuration = remote_module("configuration_pvc_internvl")
    modeling = remote_module("modeling_pvc_internvl")
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
    model = modeling.PVCInternVLChatModel(config).eval().to(device=device, dtype=dtype)
    return model, tokenizer


def write_demo_clip(path: pathlib.Path) -> pathlib.Path:
    """A small generated clip: a grey level that changes and a white bar that grows, 160x120, 8 fps."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(DEMO_CLIP_FRAMES):
            rgb = np.full((120, 160, 3), (10 * i) % 256, dtype=np.uint8)
            rgb[:, : 8 + 4 * i] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def video_inputs(video: pathlib.Path, args: argparse.Namespace, config) -> dict:
    """Pixels, layout and prompt of one video (one tile per frame, one line of the video prompt per frame)."""
    flag = remote_module("configuration_pvc_internvl").DataFlag.VIDEO
    pixel_values, num_patches_list = remote_module("media").load_video(
        video, num_segments=args.num_segments, input_size=config.image_size, max_num=1
    )
    body = args.question or "What happens in the video?"
    question = remote_module("conversation").build_video_prompt(len(num_patches_list)) + body
    return dict(pixel_values=pixel_values, num_patches_list=num_patches_list, question=question, body=body,
                flag=flag, unit="frame", count=len(num_patches_list))


def image_inputs(images: list[pathlib.Path], args: argparse.Namespace, config) -> dict:
    """Pixels, layout and prompt of one or more images (dynamic tiles each)."""
    import torch

    media, conversation = remote_module("media"), remote_module("conversation")
    flags = remote_module("configuration_pvc_internvl").DataFlag
    max_num = args.max_num or config.max_dynamic_patch
    tiles = [media.load_image(path, input_size=config.image_size, max_num=max_num, min_num=config.min_dynamic_patch,
                              use_thumbnail=config.use_thumbnail) for path in images]
    body = args.question or "Describe the image in detail."
    single = len(tiles) == 1
    question = body if single else conversation.build_multi_image_prompt(len(tiles)) + body
    return dict(pixel_values=torch.cat(tiles), num_patches_list=[t.shape[0] for t in tiles], question=question,
                body=body, flag=flags.IMAGE if single else flags.MULTI_IMAGE, unit="tile",
                count=sum(t.shape[0] for t in tiles))


def report(inputs: dict, answer: str, stats: dict, config, prunevid_on: bool, seconds: float) -> None:
    """Print the question, the answer and the token budget (PruneVid figures only when it is on)."""
    per, count, unit = config.tokens_per_tile(inputs["flag"]), inputs["count"], inputs["unit"]
    print(f"question: {inputs['body']}")
    print(f"answer: {answer}")
    print(f"token budget: {count} {unit}s x {per} tokens per {unit} = {count * per} visual tokens")
    if prunevid_on:
        print(f"PruneVid: {stats['visual_tokens_after_stage1'][0]} visual tokens after stage 1 (merging), "
              f"{stats['visual_tokens_after_stage2'][0]} after stage 2 (pruning in the language model)")
    print(f"time: {seconds:.2f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    demo = args.model is None
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype, demo)
    with tempfile.TemporaryDirectory() as tmp:
        if demo:
            model, tokenizer = tiny_demo(pathlib.Path(tmp), device, dtype)
            print("model: TINY RANDOM-WEIGHT DEMO MODEL (no checkpoint given; answers are meaningless)")
        else:
            model, tokenizer = load_checkpoint(args.model, device, dtype)
            print(f"model: {args.model}")
        video = args.video
        if demo and args.image is None and video is None:
            video = write_demo_clip(pathlib.Path(tmp) / "demo.mp4")
            print(f"input: a generated {DEMO_CLIP_FRAMES}-frame test clip")
        config = model.config
        inputs = video_inputs(video, args, config) if video is not None else image_inputs(args.image, args, config)
        prunevid_on = args.prunevid or bool(config.prunevid.enabled)
        weights = next(model.parameters())
        print(f"weights: {str(weights.dtype).removeprefix('torch.')} on {weights.device}")
        start = time.perf_counter()
        answer, stats = model.chat(
            tokenizer, inputs["pixel_values"].to(weights.device, weights.dtype), inputs["question"],
            dict(max_new_tokens=args.max_new_tokens, do_sample=False),
            data_flag=[int(inputs["flag"])], num_patches_list=inputs["num_patches_list"], return_stats=True,
            prunevid={"enabled": True} if args.prunevid else None,
        )
        report(inputs, answer, stats, config, prunevid_on, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
