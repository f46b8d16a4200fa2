#!/usr/bin/env python
"""Write a small RANDOM-WEIGHT PVC-InternVL checkpoint and example media, to try the quick start in seconds
on a CPU (the answers are meaningless; the code paths are the real ones).

    python scripts/make_demo_checkpoint.py [--dst demo-checkpoint] [--examples examples] [--seed 0] [--overwrite]

``--dst`` gets a checkpoint folder that loads with ``AutoModel`` / ``AutoTokenizer`` / ``AutoProcessor``
(``trust_remote_code=True``): config.json with the full ``auto_map``, the weights, a tokenizer with the
InternVL special tokens and the default chat template (``conversation.DEFAULT_TEMPLATE``), processor and
generation configs, the remote-code files and a model card saying that the weights are random. The files are
written by the converter's own writer (``conversion/writer.py``). ``--examples`` gets ``image1.jpg``,
``image2.jpg`` and ``red-panda.mp4`` (synthetic, drawn with PIL and encoded with PyAV).

The model is PVC-shaped but tiny: 112-px tiles of 8 x 8 patches, downsample ratio 0.25 (4 tokens per
frame), image tiles repeated 4 times, temporal attention on, a 2-layer Llama language model.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import os  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import torch  # noqa: E402

from conversion import destination, model_card, tiny_tokenizer, weights, writer  # noqa: E402
from conversion.common import ConversionError, logger, setup_logging  # noqa: E402
from conversion.convert_checkpoint import expected_tensors  # noqa: E402
from conversion.package import remote_module  # noqa: E402

IMAGE_SIZE = 112
EXAMPLE_FILES = ("image1.jpg", "image2.jpg", "red-panda.mp4")
VIDEO_FRAMES, VIDEO_FPS, VIDEO_SIZE = 96, 24, (160, 120)


def demo_settings() -> dict[str, Any]:
    """Keyword arguments of the demo ``PVCInternVLConfig`` (PVC mode, tiny sizes)."""
    return dict(
        vision_config=dict(
            image_size=IMAGE_SIZE, patch_size=14, hidden_size=32, num_attention_heads=4, intermediate_size=64,
            num_hidden_layers=2, norm_type="layer_norm", qkv_bias=True, qk_normalization=False, time_embed_dim=16,
        ),
        llm_config=dict(
            model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, vocab_size=tiny_tokenizer.VOCAB_SIZE,
            rms_norm_eps=1e-5, bos_token_id=tiny_tokenizer.BOS_ID, eos_token_id=tiny_tokenizer.EOS_ID,
            pad_token_id=tiny_tokenizer.PAD_ID, tie_word_embeddings=False,
        ),
        template=remote_module("conversation").DEFAULT_TEMPLATE,
        ps_version="v2",
        force_image_size=IMAGE_SIZE,
        dynamic_image_size=True,
        use_thumbnail=True,
        max_dynamic_patch=6,
        use_temporal=True,
        downsample_ratio=0.25,
        image_repeat_time=4,
        video_repeat_time=1,
        img_context_token_id=tiny_tokenizer.IMG_CONTEXT_ID,
        prunevid=dict(selected_layer=1),  # the paper's layer 10 does not exist in a 2-layer LLM; still off
    )


# --------------------------------------------------------------------------------------------- weights
def write_random_weights(config: Any, out_dir: Path, seed: int) -> list[str]:
    """The state dict of a freshly initialised model (``seed``), tied copies left out, through the
    converter's shard writer."""
    modeling = remote_module("modeling_pvc_internvl")
    torch.manual_seed(seed)
    model = modeling.PVCInternVLChatModel(config)
    _, tied = expected_tensors(config)
    shards = weights.ShardWriter(out_dir, max_bytes=5 * 10**9)
    for name, tensor in model.state_dict().items():
        name = modeling.checkpoint_name(name)  # the official names, as save_pretrained writes them
        if name in tied:
            continue
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ConversionError(f"the initialised demo weight {name} is not finite")
        shards.add(name, tensor.detach().contiguous())
    return shards.finish()


def write_checkpoint(out_dir: Path, seed: int, model_ref: str) -> list[str]:
    configuration = remote_module("configuration_pvc_internvl")
    config = configuration.PVCInternVLConfig(**demo_settings())
    files = write_random_weights(config, out_dir, seed)
    tiny_tokenizer.make_tiny_tokenizer(out_dir)
    card = model_card.CardInfo(
        origin=f"Random weights (seed {seed}) written by `scripts/make_demo_checkpoint.py` of the PVC-InternVL "
               "repository; the tokenizer is a tiny word-level vocabulary with the InternVL2 special tokens.",
        model_ref=model_ref,
        random_weights=True,
    )
    notes = [f"weights: {', '.join(files)} (random, seed {seed})"]
    return writer.write_package(out_dir, config, has_tokenizer=True, source_eos=[tiny_tokenizer.EOS_ID], card=card,
                                notes=notes)


# ---------------------------------------------------------------------------------------------- media
def draw_image(kind: int):
    """A 448 x 336 picture: a gradient sky, grass, and a red ball (``kind`` 1) or a yellow house (``kind`` 2)."""
    from PIL import Image, ImageDraw

    width, height = 448, 336
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        shade = int(120 + 100 * y / height)
        draw.line([(0, y), (width, y)], fill=(shade // 2, shade // 2 + 40, 255) if y < 220 else (40, 140 + y % 20, 50))
    if kind == 1:
        draw.ellipse([150, 120, 290, 260], fill=(210, 30, 30), outline=(90, 0, 0), width=4)
    else:
        draw.rectangle([140, 130, 310, 250], fill=(230, 200, 40))
        draw.polygon([(120, 130), (225, 60), (330, 130)], fill=(150, 40, 30))
        draw.rectangle([205, 190, 245, 250], fill=(90, 60, 30))
    return image


def write_video(path: Path) -> None:
    """A 4-second clip (96 frames at 24 fps): a red-brown 'red panda' crossing a green field, H.264."""
    import av
    import numpy as np

    width, height = VIDEO_SIZE
    with av.open(str(path), mode="w", format="mp4") as container:
        # lossless (qp 0): the decoded frames are the drawn ones whatever x264 decides, which with its threads
        # depends on timing, so the demo's answers and PruneVid counts (quoted in the README) are the same each build
        stream = container.add_stream("libx264", rate=VIDEO_FPS, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        ys, xs = np.mgrid[0:height, 0:width]
        for index in range(VIDEO_FRAMES):
            frame = np.zeros((height, width, 3), dtype=np.uint8)
            frame[...] = (60, 150, 60)
            frame[: height // 3] = (150, 190, 240)
            cx, cy = 10 + index * (width - 20) / (VIDEO_FRAMES - 1), height * 0.6
            body = ((xs - cx) / 18) ** 2 + ((ys - cy) / 11) ** 2 <= 1
            frame[body] = (190, 70, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_examples(folder: Path, overwrite: bool) -> list[Path]:
    """``image1.jpg``, ``image2.jpg`` and ``red-panda.mp4`` in ``folder`` (each written to a temporary name and
    renamed, so an interrupted run leaves no half file)."""
    paths = [folder / name for name in EXAMPLE_FILES]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConversionError(f"--examples files exist: {existing}; pass --overwrite to replace them")
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        scratch = folder / f".{path.stem}.partial-{os.getpid()}{path.suffix}"
        try:
            if path.suffix == ".jpg":
                draw_image(1 if path.name == "image1.jpg" else 2).save(scratch, format="JPEG", quality=90)
            else:
                write_video(scratch)
            os.replace(scratch, path)
        except BaseException:
            scratch.unlink(missing_ok=True)
            raise
    return paths


# ------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dst", default="demo-checkpoint", help="checkpoint folder to write")
    parser.add_argument("--examples", default="examples", help="folder for image1.jpg, image2.jpg, red-panda.mp4")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --dst and example files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    dst = Path(args.dst).resolve()
    try:
        destination.check_destination(dst, args.overwrite)
        destination.clean_stale(dst)
        with destination.staged_output(dst) as tmp:
            write_checkpoint(tmp, args.seed, model_ref=args.dst)
        examples = write_examples(Path(args.examples), args.overwrite)
    except (ConversionError, ValueError, destination.Interrupted) as err:
        return destination.report_failure(err)
    logger.info("demo checkpoint (random weights) at %s; example media: %s", dst, ", ".join(map(str, examples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
