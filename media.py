"""The official InternVL2 / PVC image tiling and video frame sampling (`utils/preprocess.py`) without torchvision;
videos decoded with PyAV, decord only when asked for. Inputs are checked first (`ValueError` naming the numbers)."""

from __future__ import annotations

import bisect
import itertools
import math
import os
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from transformers.utils import logging

logger = logging.get_logger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ImageInput = Image.Image | str | os.PathLike | np.ndarray
# InternVL2 uses 12 tiles (up to 40 for high-resolution benchmarks); each costs 256 LLM tokens (64 with PVC).
MAX_TILES = 40
# InternViT is trained at 448 px: 4 x 448 allows interpolation experiments, not gigabytes per tile.
MAX_INPUT_SIZE = 1792

VIDEO_BACKENDS = ("decord", "pyav")
PYAV_STRATEGIES = ("auto", "sequential", "seek")
# Containers on which decord 0.6 returns PyAV's frames bit for bit (PyAV's names); on AVI it misplaces frames.
DECORD_CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")
# One seek in decoded frames: 480p H.264, gop 250, 2 cores: seek + N frames 13 ms + N x 0.8 ms, 0.8-1 ms a frame.
SEEK_COST_FRAMES = 16
_NO_PYAV = ("load_video needs a video decoder: install PyAV (pip install av); backend='decord' needs it too, to check "
            "the video for what decord misreads")


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {name}={value!r} ({type(value).__name__})")


def _check_tiling(min_num: Any = 1, max_num: Any = 1, size: Any = 448, use_thumbnail: Any = False,
                  size_name: str = "image_size") -> None:
    _check_int(size_name, size)
    if size > MAX_INPUT_SIZE:
        raise ValueError(f"{size_name} must be at most MAX_INPUT_SIZE={MAX_INPUT_SIZE} pixels, got {size_name}={size}; "
                         f"InternViT tiles are 448 px, use that (or the model's force_image_size)")
    _check_int("min_num", min_num)
    _check_int("max_num", max_num)
    if max_num < min_num:
        raise ValueError(f"need 1 <= min_num <= max_num, got min_num={min_num}, max_num={max_num}")
    if max_num > MAX_TILES:
        raise ValueError(f"max_num must be at most MAX_TILES={MAX_TILES} tiles, got max_num={max_num}; InternVL2 "
                         f"uses 12 (up to 40 for high-resolution benchmarks), lower max_num")
    if not isinstance(use_thumbnail, (bool, np.bool_)):
        raise ValueError(f"use_thumbnail must be True or False, got use_thumbnail={use_thumbnail!r}")


def _check_pil(image: Any) -> None:
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL.Image.Image, got {_type_name(image)}")


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__.split(".")[0]
    return kind.__name__ if module == "builtins" else f"{module}.{kind.__name__}"


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB: Pillow's `convert("RGB")` as official (**alpha dropped, not composited**); "I;16*" and
    "I": `round(v / 257)` of 0..65535; "F": `round(v * 255)` of 0.0..1.0, other values, NaN, Inf a ValueError."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        is_float = image.mode == "F"
        values = np.asarray(image, dtype=np.float64) if is_float else np.asarray(image).astype(np.int64)
        if bad := int(np.count_nonzero(~np.isfinite(values))):
            raise ValueError(f"mode {image.mode!r} image has {bad} NaN or Inf pixels; replace them before loading")
        top, scale = (1.0, "scale 0.0..1.0") if is_float else (65535, "16-bit scale 0..65535")
        if values.size and (values.min() < 0 or values.max() > top):
            raise ValueError(f"mode {image.mode!r} pixels are read on the {scale}, but this image has values "
                             f"{values.min()}..{values.max()}; rescale them or convert the image to 'L' yourself")
        levels = np.rint(values * 255.0) if is_float else (values + 128) // 257  # exact round(v / 257)
        return Image.fromarray(np.repeat(levels.astype(np.uint8)[:, :, None], 3, axis=2))
    if image.mode == "La":
        image = image.convert("LA")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # same colours as P -> RGB, without Pillow's palette-transparency warning
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise ValueError(f"cannot convert a mode {image.mode!r} image to RGB: {err}") from err


def build_target_ratios(min_num: int = 1, max_num: int = 12) -> list[tuple[int, int]]:
    """Grids (cols, rows) with `min_num <= cols*rows <= max_num` in the official order (it decides ratio ties)."""
    _check_tiling(min_num, max_num)
    candidates = set((i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1)
                     for j in range(1, min(n, max_num // i) + 1) if min_num <= i * j <= max_num)
    return sorted(candidates, key=lambda ratio: ratio[0] * ratio[1])


def tile_grid(width: int, height: int, min_num: int = 1, max_num: int = 12, image_size: int = 448) -> tuple[int, int]:
    """The (cols, rows) grid of `dynamic_preprocess` for a `width` x `height` image, with the official tie rule."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image must have a positive size, got {width}x{height}")
    _check_tiling(min_num, max_num, image_size)
    best_diff, best_ratio = float("inf"), (1, 1)
    for cols, rows in build_target_ratios(min_num, max_num):
        diff = abs(width / height - cols / rows)
        if diff < best_diff:
            best_diff, best_ratio = diff, (cols, rows)
        elif diff == best_diff and width * height > 0.5 * image_size * image_size * cols * rows:
            best_ratio = (cols, rows)
    return best_ratio


def tile_boxes(cols: int, rows: int, image_size: int) -> list[tuple[int, int, int, int]]:
    """Crop boxes (left, upper, right, lower) of the cols x rows tiles, row-major."""
    size = image_size
    return [(c * size, r * size, (c + 1) * size, (r + 1) * size) for r in range(rows) for c in range(cols)]


def dynamic_preprocess(image: Image.Image, min_num: int = 1, max_num: int = 12, image_size: int = 448,
                       use_thumbnail: bool = False) -> list[Image.Image]:
    """RGB tiles [image_size^2] of the image resized to its `tile_grid`, row-major, + a thumbnail if asked and > 1."""
    _check_pil(image)
    _check_tiling(min_num, max_num, image_size, use_thumbnail)
    cols, rows = tile_grid(image.width, image.height, min_num, max_num, image_size)
    image = image if image.mode == "RGB" else to_rgb(image)
    resized = image.resize((image_size * cols, image_size * rows))
    tiles = [resized.crop(box) for box in tile_boxes(cols, rows, image_size)]
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size)))
    return tiles


def image_to_tensor(image: Image.Image, image_size: int = 448) -> torch.Tensor:
    """RGB, bicubic, ImageNet-normalised float32 [3, S, S], bit-exact with torchvision's Resize+ToTensor+Normalize."""
    _check_pil(image)
    _check_tiling(size=image_size)
    image = (image if image.mode == "RGB" else to_rgb(image)).resize((image_size, image_size), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    mean, std = (torch.tensor(values, dtype=torch.float32).view(3, 1, 1) for values in (IMAGENET_MEAN, IMAGENET_STD))
    return pixels.sub(mean).div(std)


def _checked_rgb(image: Image.Image, label: str) -> Image.Image:
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{label} has zero size; an image needs at least 1x1 pixels")
    try:
        return to_rgb(image)
    except (OSError, SyntaxError, EOFError, ValueError) as err:  # Pillow's decoding errors, our range checks
        raise ValueError(f"cannot read {label}: {err}") from err


def _open_image(image: ImageInput) -> Image.Image:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"a numpy image must be a uint8 [H, W, 3] RGB array, got dtype {image.dtype} and shape "
                             f"{tuple(image.shape)}; make a PIL image (PIL.Image.fromarray) with an explicit mode")
        image = Image.fromarray(np.ascontiguousarray(image))
    if isinstance(image, Image.Image):
        return _checked_rgb(image, f"the PIL image (mode {image.mode!r}, size {image.width}x{image.height})")
    if not isinstance(image, (str, os.PathLike)):
        raise ValueError(f"an image must be a PIL.Image, a file path or a uint8 [H, W, 3] numpy array, got "
                         f"{_type_name(image)}")
    path = os.fspath(image)
    if not os.path.isfile(path):
        raise ValueError(f"image file {path!r} does not exist or is not a file")
    try:
        with Image.open(path) as opened:
            return _checked_rgb(opened, f"image file {path!r}")
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot open image file {path!r}: {err}") from err


def load_image(image: ImageInput, input_size: int = 448, max_num: int = 12, min_num: int = 1,
               use_thumbnail: bool = True) -> torch.Tensor:
    """Official InternVL2 `load_image`: dynamic tiles (+ thumbnail) -> float32 [N, 3, S, S]. `image`: a PIL image,
    a file path or a uint8 [H, W, 3] RGB array; RGB by `to_rgb`, EXIF orientation not applied (as official)."""
    _check_tiling(min_num, max_num, input_size, use_thumbnail, size_name="input_size")
    tiles = dynamic_preprocess(_open_image(image), min_num, max_num, input_size, use_thumbnail)
    return torch.stack([image_to_tensor(tile, input_size) for tile in tiles])


def _frame_range(bound: Sequence[float] | None, fps: float, max_frame: int, first_idx: int = 0) -> tuple[int, int]:
    if bound is not None and len(bound) not in (0, 2):
        raise ValueError(f"bound must be (start_seconds, end_seconds), got {len(bound)} values")
    start, end = (bound[0], bound[1]) if bound is not None and len(bound) > 0 else (-100000, 100000)
    return max(first_idx, round(start * fps)), min(round(end * fps), max_frame)


def get_index(bound: Sequence[float] | None, fps: float, max_frame: int, first_idx: int = 0,
              num_segments: int = 32) -> np.ndarray:
    """Official segment-middle sampling: [num_segments] int64 frame indices in [first_idx, max_frame] within `bound`."""
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    start_idx, end_idx = _frame_range(bound, fps, max_frame, first_idx)
    seg_size = float(end_idx - start_idx) / num_segments
    return np.array([int(start_idx + seg_size / 2 + np.round(seg_size * k)) for k in range(num_segments)], np.int64)


def _check_bound(bound: Any) -> None:
    if bound is not None and (isinstance(bound, (str, bytes)) or not hasattr(bound, "__len__")):
        raise ValueError(f"bound must be None or (start_seconds, end_seconds), got {_type_name(bound)} {bound!r}")
    if bound is None or len(bound) == 0:
        return
    if len(bound) != 2:
        raise ValueError(f"bound must be (start_seconds, end_seconds), got {len(bound)} values: {bound!r}")
    start, end = bound[0], bound[1]
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) for v in bound):
        raise ValueError(f"bound must hold two numbers of seconds, got bound={bound!r}")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"bound must hold finite seconds, got bound=({start}, {end})")
    if start < 0:
        raise ValueError(f"bound must start at 0 seconds or later, got bound=({start}, {end})")
    if end <= start:
        raise ValueError(f"bound must be (start_seconds, end_seconds) with start < end, got bound=({start}, {end}); "
                         "a reversed bound is not reordered")


def _where(bound: Any) -> str:
    return f"bound=({bound[0]}, {bound[1]})" if bound is not None and len(bound) > 0 else "the whole video"


def _sample_indices(path: str, bound: Any, fps: float, num_frames: int, num_segments: int) -> np.ndarray:
    if num_frames < 1:
        raise ValueError(f"video file {path!r} has 0 frames")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"video file {path!r} reports a frame rate of {fps}; cannot place frames in time")
    max_frame, where, length = num_frames - 1, _where(bound), f"{num_frames / fps:.2f} s at {fps:g} fps"
    start_idx, _ = _frame_range(bound, fps, max_frame)
    if start_idx > max_frame:
        raise ValueError(f"video file {path!r}: {where} starts at frame {start_idx}, after the last frame: the video "
                         f"has frames 0..{max_frame} ({length})")
    if where != "the whole video" and bound[1] * fps > num_frames:
        logger.warning(f"video file {path!r}: {where} ends after the video ({length}); sampling up to its last "
                       f"frame {max_frame}")
    return get_index(bound, fps, max_frame, first_idx=0, num_segments=num_segments)


def _warn_if_repeated(path: str, bound: Any, fps: float, num_frames: int, indices: np.ndarray) -> None:
    if (distinct := len(np.unique(indices))) < len(indices):
        start_idx, end_idx = _frame_range(bound, fps, num_frames - 1)
        logger.warning(f"video file {path!r}: {_where(bound)} has {end_idx - start_idx + 1} frames ({start_idx}.."
                       f"{end_idx}) and num_segments={len(indices)} repeats frames: the official sampling gives "
                       f"{distinct} distinct frames, some of them several times; lower num_segments to avoid repeats")


def _read_frames_decord(path: str, bound: Any, num_segments: int) -> list[np.ndarray]:
    """Sampled RGB frames [H, W, 3] uint8 read with decord (official reader settings), after refusing (with PyAV) what
    decord 0.6 misreads: a display rotation, a container not in DECORD_CONTAINERS."""
    try:  # optional: transformers' remote-code import scan skips imports under try
        import av
    except ImportError as err:
        raise ImportError(_NO_PYAV) from err
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"video file {path!r} has no video stream")
            container_format = container.format.name
            frame = next(container.decode(container.streams.video[0]), None)
    except (av.FFmpegError, OSError) as err:
        raise ValueError(f"cannot open video file {path!r} with PyAV: {err}") from err
    advice = "decode it with the default backend (PyAV: backend=None or 'pyav')"
    if container_format not in DECORD_CONTAINERS:
        raise ValueError(f"backend='decord' refuses video file {path!r}: decord 0.6 is only checked on MP4/MOV and "
                         f"Matroska/WebM (it returns wrong frames on AVI), this is {container_format!r}; {advice}")
    if frame is not None and not hasattr(frame, "rotation"):
        logger.warning(f"PyAV {av.__version__} does not report display rotations: video file {path!r} is not "
                       "checked for one (decord 0.6 garbles rotated videos); pip install -U av")
    if getattr(frame, "rotation", 0):
        raise ValueError(f"backend='decord' refuses video file {path!r}: it has a {frame.rotation}-degree display "
                         f"rotation, which decord 0.6 decodes into garbled frames; {advice}")
    try:
        import decord
    except ImportError as err:
        raise ImportError("backend='decord' needs the decord package: pip install decord") from err
    errors = (RuntimeError, OSError, ValueError, getattr(decord, "DECORDError", RuntimeError))
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        num_frames, fps = len(reader), float(reader.get_avg_fps())
    except errors as err:
        raise ValueError(f"cannot open video file {path!r} with decord: {err}") from err
    indices = _sample_indices(path, bound, fps, num_frames, num_segments)
    _warn_if_repeated(path, bound, fps, num_frames, indices)
    try:
        return [reader[int(idx)].asnumpy() for idx in indices]
    except errors as err:
        raise ValueError(f"cannot decode frames of video file {path!r} with decord: {err}") from err


class _SeekMiss(RuntimeError):
    """The seeking reader met something its packet index did not predict; the sequential reader takes over."""


class _PtsIndex(NamedTuple):
    pts: tuple[int, ...]  # [F] ascending: frame i has pts[i]
    keyframes: tuple[int, ...]  # [K] ascending frame positions, keyframes[0] == 0


def _pyav_stream_info(av: Any, path: str) -> tuple[int, float]:
    """(frame count, average fps) of the first video stream; without a header count, packets are counted."""
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"video file {path!r} has no video stream")
        stream = container.streams.video[0]
        rate, num_frames = stream.average_rate or stream.guessed_rate, stream.frames
        if num_frames <= 0:
            num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
            logger.info(f"video {path!r} reports no frame count; counted {num_frames} frames by demuxing")
    if not rate:
        raise ValueError(f"video file {path!r} does not report a frame rate")
    return num_frames, float(rate)


def _pyav_index(av: Any, path: str) -> _PtsIndex | None:
    """The `_PtsIndex` of the first video stream, or None if its packets' pts cannot be trusted (raw streams, AVI)."""
    pts, key_pts = [], []  # every packet's pts, the keyframes' pts (decode order)
    with av.open(path) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size == 0 and packet.pts is None:
                continue  # the demuxer's end-of-stream packet
            if packet.pts is None or packet.size == 0 or packet.is_corrupt or getattr(packet, "is_discard", False):
                return None
            pts.append(packet.pts)
            if packet.is_keyframe:
                key_pts.append(packet.pts)
    ordered = sorted(pts)
    if (not pts or len(set(pts)) < len(pts) or not key_pts or key_pts[0] != pts[0] or pts[0] != ordered[0]
            or any(later <= earlier for earlier, later in zip(key_pts, key_pts[1:]))):
        return None
    return _PtsIndex(tuple(ordered), tuple(bisect.bisect_left(ordered, value) for value in key_pts))


def _plan_seeks(targets: Sequence[int], keyframes: Sequence[int], seek_cost: int) -> list[int | None]:
    """Per ascending target t, the keyframe k <= t to seek to, or None to decode on from frame `nxt`: seeking costs
    seek_cost + t - k + 1 frames, decoding on t - nxt + 1, both end before t + 1, so per-target choice is cheapest."""
    starts = [0] + [target + 1 for target in targets[:-1]]  # `nxt` before each target
    keys = [keyframes[bisect.bisect_right(keyframes, target) - 1] for target in targets]
    return [key if key > nxt + seek_cost else None for key, nxt in zip(keys, starts)]


def _pyav_decode(av: Any, path: str, targets: Sequence[int], index: _PtsIndex | None = None,
                 plan: Sequence[int | None] | None = None) -> tuple[dict[int, np.ndarray], int]:
    """({target: RGB [H, W, 3] uint8}, frames decoded) for ascending `targets`; with `index`, seeks follow `plan`
    and every frame must carry the pts the index predicts (`_SeekMiss`), else frame i is the i-th frame out."""
    frames: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"  # frame + slice threads, bit-identical output
        output, nxt = container.decode(stream), 0
        for target, key in zip(targets, plan or [None] * len(targets)):
            if key is not None:
                key_pts, nxt = index.pts[key], key
                container.seek(key_pts, stream=stream, backward=True, any_frame=False)
                early = lambda frame, first=key_pts: frame.pts is not None and frame.pts < first  # noqa: E731
                output = itertools.dropwhile(early, container.decode(stream))
            for frame in output:
                if index is not None and frame.pts != index.pts[nxt]:
                    raise _SeekMiss(f"frame {nxt} should have pts {index.pts[nxt]}, the decoder gave pts {frame.pts}")
                nxt += 1
                if nxt > target:
                    frames[target] = frame.to_ndarray(format="rgb24")
                    break
            else:  # the stream ended before the target
                if index is not None:
                    raise _SeekMiss(f"the stream ended before frame {target}")
                break
    return frames, nxt


def _pyav_sample(av: Any, path: str, index: _PtsIndex | None, indices: np.ndarray,
                 strategy: str) -> tuple[list[np.ndarray] | None, int]:
    """(frames at `indices`, or None and the frames the video holds if fewer than they need). With an `index` (none for
    'sequential'), 'auto' seeks if `_plan_seeks` does (decoding sequentially after a `_SeekMiss`), 'seek' always."""
    wanted = sorted({int(idx) for idx in indices})
    if index is not None and wanted[-1] >= len(index.pts):
        return None, len(index.pts)
    frames = None
    if index is not None:
        plan = _plan_seeks(wanted, index.keyframes, 0 if strategy == "seek" else SEEK_COST_FRAMES)
        if strategy == "seek" or any(key is not None for key in plan):
            try:
                frames, _ = _pyav_decode(av, path, wanted, index, plan)
            except _SeekMiss as miss:
                if strategy == "seek":
                    raise
                logger.info(f"video {path!r}: seeking gave unexpected frames ({miss}); decoding sequentially")
    if frames is None:
        frames, available = _pyav_decode(av, path, wanted)
        if len(frames) < len(wanted):
            return None, available
    return [frames[int(idx)] for idx in indices], len(frames)


def _read_frames_pyav(path: str, bound: Any, num_segments: int, strategy: str = "auto") -> list[np.ndarray]:
    """Sampled RGB frames [H, W, 3] uint8 read with PyAV, pixels as stored; `strategy`: see `_pyav_sample`."""
    if strategy not in PYAV_STRATEGIES:
        raise ValueError(f"strategy must be one of {PYAV_STRATEGIES}, got strategy={strategy!r}")
    try:  # optional: transformers' remote-code import scan skips imports under try
        import av
    except ImportError as err:
        raise ImportError(_NO_PYAV) from err
    try:
        num_frames, fps = _pyav_stream_info(av, path)
        index = None if strategy == "sequential" else _pyav_index(av, path)
        if index is None and strategy == "seek":
            raise _SeekMiss(f"video {path!r} has no trustworthy packet index")
        indices = _sample_indices(path, bound, fps, num_frames, num_segments)
        frames, available = _pyav_sample(av, path, index, indices, strategy)
        if frames is None:
            logger.warning(f"video {path!r} reports {num_frames} frames but decodes {available}; sampling those")
            num_frames = available
            indices = _sample_indices(path, bound, fps, num_frames, num_segments)
            frames, _ = _pyav_sample(av, path, index, indices, strategy)
    except (av.FFmpegError, OSError) as err:
        raise ValueError(f"cannot open video file {path!r} with PyAV: {err}") from err
    if frames is None:
        raise ValueError(f"video file {path!r}: frames could not be decoded consistently")
    _warn_if_repeated(path, bound, fps, num_frames, indices)
    return frames


def load_video_frames(video_path: str | os.PathLike, bound: Sequence[float] | None = None, num_segments: int = 32,
                      backend: str | None = None) -> list[np.ndarray]:
    """The `num_segments` frames at `get_index` positions, each RGB [H, W, 3] uint8; arguments as `load_video`."""
    if not isinstance(video_path, (str, os.PathLike)):
        raise ValueError(f"video_path must be a file path (str or os.PathLike), got {_type_name(video_path)}")
    _check_int("num_segments", num_segments)
    _check_bound(bound)
    if backend is not None and backend not in VIDEO_BACKENDS:
        raise ValueError(f"backend must be None or one of {VIDEO_BACKENDS}, got {backend!r}")
    path = os.fspath(video_path)
    if not os.path.isfile(path):
        raise ValueError(f"video file {path!r} does not exist or is not a file")
    if backend == "decord":
        return _read_frames_decord(path, bound, num_segments)
    return _read_frames_pyav(path, bound, num_segments)


def load_video(video_path: str | os.PathLike, bound: Sequence[float] | None = None, input_size: int = 448,
               max_num: int = 1, num_segments: int = 32, use_thumbnail: bool = False,
               backend: str | None = None) -> tuple[torch.Tensor, list[int]]:
    """Official `load_video`: sampled frames -> dynamic tiles -> (pixel_values [T', 3, S, S], tiles per frame),
    T' = num_segments with max_num=1. `backend` None / "pyav": PyAV (no display rotation); "decord" only when asked,
    refusing what decord 0.6 misreads. Repeated frames and a `bound` past the end are warned about, as official."""
    _check_tiling(1, max_num, input_size, use_thumbnail, size_name="input_size")
    frames = load_video_frames(video_path, bound, num_segments, backend)
    tiles = [dynamic_preprocess(Image.fromarray(frame), 1, max_num, input_size, use_thumbnail) for frame in frames]
    pixel_values = torch.stack([image_to_tensor(tile, input_size) for frame_tiles in tiles for tile in frame_tiles])
    return pixel_values, [len(frame_tiles) for frame_tiles in tiles]
