"""Pixel loading for PVC-InternVL: the official InternVL2 / PVC image tiling and video frame sampling.

Reproduces `utils/preprocess.py` of OpenGVLab/PVC without torchvision: dynamic tiling, bicubic resize,
`ToTensor` (/255) and ImageNet normalisation in float32, and the segment-middle frame sampling of
`load_video`. Video decoding uses decord when it is installed and PyAV otherwise; both are optional and
imported only inside functions. The PyAV reader seeks to the keyframe before a sampled frame when that is
cheaper than decoding on (`_plan_seeks` states the rule) and gives the same frames as sequential decoding.
Prompts and tokenization live in `processing.py`.

Inputs are checked before any work: a bad argument, an unreadable file or a video range that cannot give
the requested frames is a `ValueError` naming the input and the numbers (`to_rgb`, `load_image` and
`load_video` state the rules).
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from transformers.utils import logging

logger = logging.get_logger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VIDEO_BACKENDS = ("decord", "pyav")

ImageInput = Image.Image | str | os.PathLike | np.ndarray

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
SIXTEEN_BIT_MAX = 65535

# Upper bounds of the tiling arguments. InternVL2 uses max_num=12 tiles (6 for some video settings) and up to
# 40 for high-resolution benchmarks (e.g. document VQA); more tiles than that is almost surely a typo, and each
# tile costs 256 LLM tokens (64 with PVC x image_repeat_time), so 40 tiles are already ~10k tokens.
MAX_TILES = 40
# InternViT is trained at 448 px (and 224 px for some smaller variants); 1792 = 4 x 448 leaves room for
# position-embedding interpolation experiments while refusing sizes that would allocate gigabytes per tile.
MAX_INPUT_SIZE = 1792

# ----------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int = 1) -> None:
    """ValueError unless `value` is an int (not a bool) >= `minimum`; the message names the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {minimum}, got {name}={value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {name}={value}")


def _check_tile_range(min_num: Any, max_num: Any) -> None:
    """ValueError unless 1 <= min_num <= max_num <= MAX_TILES, both ints."""
    _check_int("min_num", min_num)
    _check_int("max_num", max_num)
    if max_num < min_num:
        raise ValueError(f"need 1 <= min_num <= max_num, got min_num={min_num}, max_num={max_num}")
    if max_num > MAX_TILES:
        raise ValueError(
            f"max_num must be at most MAX_TILES={MAX_TILES} tiles, got max_num={max_num}; InternVL2 uses 12 "
            f"(up to 40 for high-resolution benchmarks), lower max_num"
        )


def _check_size(name: str, value: Any) -> None:
    """ValueError unless `value` is an int with 1 <= value <= MAX_INPUT_SIZE (pixels of a square tile)."""
    _check_int(name, value)
    if value > MAX_INPUT_SIZE:
        raise ValueError(
            f"{name} must be at most MAX_INPUT_SIZE={MAX_INPUT_SIZE} pixels, got {name}={value}; "
            f"InternViT tiles are 448 px, use that (or the model's force_image_size)"
        )


def _check_bool(name: str, value: Any) -> None:
    """ValueError unless `value` is True or False (no truthy strings or numbers)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {name}={value!r} ({type(value).__name__})")


# ----------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as an 8-bit RGB PIL image, with one stated rule per Pillow mode.

    - "1", "L", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV", "LAB": Pillow's own
      `convert("RGB")`, exactly as the official `Image.open(f).convert("RGB")`, so ordinary images give the
      official pixels. **Alpha is dropped, not composited**: a transparent pixel keeps its stored colour
      (palette transparency included). CMYK uses Pillow's formula R = (255-C)(255-K)/255 (no ICC profile).
    - "La", "RGBa" (premultiplied alpha): un-premultiplied by Pillow, then alpha is dropped.
    - "I;16", "I;16B", "I;16L", "I;16N" (16-bit unsigned): the full range 0..65535 maps onto 0..255 as
      `round(v / 257)` (Pillow alone clips every value above 255 to white).
    - "I" (32-bit signed): read on the same 16-bit scale, because that is where Pillow stores 16-bit files
      (older Pillow releases open 16-bit PNGs as "I"); values outside 0..65535 are a ValueError.
    - "F" (32-bit float): read on the 0.0..1.0 scale, `round(v * 255)`; values outside it, NaN and Inf are
      a ValueError (scale the data yourself, the range of float images is not self-describing).
    Single-channel results are repeated on R, G and B. A mode Pillow cannot convert is a ValueError.
    """
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        return _levels_to_rgb(_sixteen_bit_levels(image))
    if image.mode == "F":
        return _levels_to_rgb(_float_levels(image))
    if image.mode == "La":
        image = image.convert("LA")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # same colours as P -> RGB, without Pillow's palette-transparency warning
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise ValueError(f"cannot convert a mode {image.mode!r} image to RGB: {err}") from err


def _sixteen_bit_levels(image: Image.Image) -> np.ndarray:
    """8-bit levels round(v / 257) of a 16-bit ("I;16*") or 16-bit-scale ("I") image, [H, W] uint8."""
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > SIXTEEN_BIT_MAX):
        raise ValueError(
            f"mode {image.mode!r} pixels are read on the 16-bit scale 0..{SIXTEEN_BIT_MAX}, but this image has "
            f"values {values.min()}..{values.max()}; rescale them or convert the image to 'L' yourself"
        )
    return ((values + 128) // 257).astype(np.uint8)  # exact round(v / 257): v / 257 is never a half


def _float_levels(image: Image.Image) -> np.ndarray:
    """8-bit levels round(v * 255) of a mode "F" image on the 0.0..1.0 scale, [H, W] uint8."""
    values = np.asarray(image, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise ValueError(f"mode 'F' image has {bad} NaN or Inf pixels; replace them before loading")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise ValueError(
            f"mode 'F' pixels are read on the scale 0.0..1.0, but this image has values "
            f"{values.min():g}..{values.max():g}; rescale them or convert the image to 'L' yourself"
        )
    return np.rint(values * 255.0).astype(np.uint8)


def _levels_to_rgb(levels: np.ndarray) -> Image.Image:
    """[H, W] uint8 grey levels -> RGB PIL image with the level on every channel."""
    return Image.fromarray(np.repeat(levels[:, :, None], 3, axis=2))


def build_target_ratios(min_num: int = 1, max_num: int = 12) -> list[tuple[int, int]]:
    """Candidate grids (cols, rows) with `min_num <= cols*rows <= max_num`, in the official scan order.

    The official code builds a Python set and sorts it by `cols*rows`; the sort is stable, so grids with
    the same tile count keep the set's iteration order (deterministic for small int tuples in CPython).
    That order decides exact ratio ties, so the set is rebuilt with the same insertions in the same order
    (rows past `max_num // cols` are skipped: they never pass the filter, and skipping them changes nothing).
    """
    _check_tile_range(min_num, max_num)
    candidates = set(
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, min(n, max_num // i) + 1)
        if min_num <= i * j <= max_num
    )
    return sorted(candidates, key=lambda ratio: ratio[0] * ratio[1])


def find_closest_aspect_ratio(
    aspect_ratio: float,
    target_ratios: Sequence[tuple[int, int]],
    width: int,
    height: int,
    image_size: int,
) -> tuple[int, int]:
    """Pick the grid (cols, rows) whose cols/rows is closest to `aspect_ratio` (= width/height).

    On an exact tie with the current best, a later candidate wins only if the image area exceeds half
    the area of that candidate's tiles: `width*height > 0.5 * image_size**2 * cols * rows`.
    """
    best_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for cols, rows in target_ratios:
        diff = abs(aspect_ratio - cols / rows)
        if diff < best_diff:
            best_diff = diff
            best_ratio = (cols, rows)
        elif diff == best_diff and area > 0.5 * image_size * image_size * cols * rows:
            best_ratio = (cols, rows)
    return best_ratio


def tile_grid(width: int, height: int, min_num: int = 1, max_num: int = 12, image_size: int = 448) -> tuple[int, int]:
    """The (cols, rows) grid `dynamic_preprocess` uses for an image of `width` x `height` pixels."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image must have a positive size, got {width}x{height}")
    _check_size("image_size", image_size)
    target_ratios = build_target_ratios(min_num, max_num)
    return find_closest_aspect_ratio(width / height, target_ratios, width, height, image_size)


def tile_boxes(cols: int, rows: int, image_size: int) -> list[tuple[int, int, int, int]]:
    """Crop boxes (left, upper, right, lower) of the cols x rows tiles, row-major."""
    return [
        (c * image_size, r * image_size, (c + 1) * image_size, (r + 1) * image_size)
        for r in range(rows)
        for c in range(cols)
    ]


def dynamic_preprocess(
    image: Image.Image,
    min_num: int = 1,
    max_num: int = 12,
    image_size: int = 448,
    use_thumbnail: bool = False,
) -> list[Image.Image]:
    """Split `image` into `image_size`-square tiles on the closest grid (official InternVL2 rule).

    A non-RGB image is first made RGB by `to_rgb`. The image is resized to (image_size*cols,
    image_size*rows) with PIL's default filter (bicubic for RGB images, exactly as the official code) and
    cropped row-major. With `use_thumbnail` and more than one tile, the whole image resized to
    image_size x image_size is appended as the last tile. Returns cols*rows (+1) RGB PIL images.
    """
    _check_pil("image", image)
    _check_bool("use_thumbnail", use_thumbnail)
    width, height = image.size
    cols, rows = tile_grid(width, height, min_num, max_num, image_size)
    image = _as_rgb(image)
    resized = image.resize((image_size * cols, image_size * rows))
    tiles = [resized.crop(box) for box in tile_boxes(cols, rows, image_size)]
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size)))
    return tiles


def image_to_tensor(image: Image.Image, image_size: int = 448) -> torch.Tensor:
    """RGB (`to_rgb`), bicubic resize to image_size^2, /255 and ImageNet normalisation in float32 -> [3, S, S].

    Bit-exact with torchvision's `Resize((S, S), BICUBIC) + ToTensor() + Normalize(mean, std)`.
    """
    _check_pil("image", image)
    _check_size("image_size", image_size)
    image = _as_rgb(image).resize((image_size, image_size), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))  # [S, S, 3]
    pixels = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return pixels.sub(mean).div(std)


def _check_pil(name: str, image: Any) -> None:
    """ValueError unless `image` is a PIL image."""
    if not isinstance(image, Image.Image):
        raise ValueError(f"{name} must be a PIL.Image.Image, got {_type_name(image)}")


def _type_name(value: Any) -> str:
    """'numpy.ndarray', 'torch.Tensor', 'int', ...: the type as a user would write it."""
    kind = type(value)
    module = kind.__module__.split(".")[0]
    return kind.__name__ if module == "builtins" else f"{module}.{kind.__name__}"


def _as_rgb(image: Image.Image) -> Image.Image:
    """`image` itself when it is RGB already, else `to_rgb(image)`."""
    return image if image.mode == "RGB" else to_rgb(image)


def _array_to_image(array: np.ndarray) -> Image.Image:
    """A uint8 [H, W, 3] array read as RGB; any other array is refused (its meaning is not self-describing)."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"a numpy image must be a uint8 [H, W, 3] RGB array, got dtype {array.dtype} and shape "
            f"{tuple(array.shape)}; make a PIL image yourself (PIL.Image.fromarray) so that its mode is explicit"
        )
    return Image.fromarray(np.ascontiguousarray(array))


def _checked_rgb(image: Image.Image, label: str) -> Image.Image:
    """`to_rgb(image)`, refusing zero-size images; every failure is a ValueError that starts with `label`."""
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{label} has zero size; an image needs at least 1x1 pixels")
    try:
        return to_rgb(image)
    except (OSError, SyntaxError, EOFError, ValueError) as err:  # Pillow's decoding errors, our range checks
        raise ValueError(f"cannot read {label}: {err}") from err


def _open_image(image: ImageInput) -> Image.Image:
    """RGB PIL image from a PIL image, a uint8 [H, W, 3] numpy array or a file path (ValueError naming it)."""
    if isinstance(image, np.ndarray):
        image = _array_to_image(image)
    if isinstance(image, Image.Image):
        return _checked_rgb(image, f"the PIL image (mode {image.mode!r}, size {image.width}x{image.height})")
    if not isinstance(image, (str, os.PathLike)):
        raise ValueError(
            f"an image must be a PIL.Image, a file path or a uint8 [H, W, 3] numpy array, got {_type_name(image)}"
        )
    path = os.fspath(image)
    if not os.path.isfile(path):
        raise ValueError(f"image file {path!r} does not exist or is not a file")
    try:
        with Image.open(path) as opened:
            return _checked_rgb(opened, f"image file {path!r}")
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot open image file {path!r}: {err}") from err


def _check_tiling(min_num: Any, max_num: Any, size: Any, use_thumbnail: Any, size_name: str) -> None:
    """The tiling arguments of `load_image` / `load_video`, checked before any file is read."""
    _check_size(size_name, size)
    _check_tile_range(min_num, max_num)
    _check_bool("use_thumbnail", use_thumbnail)


def load_image(
    image: ImageInput,
    input_size: int = 448,
    max_num: int = 12,
    min_num: int = 1,
    use_thumbnail: bool = True,
) -> torch.Tensor:
    """Official InternVL2 `load_image`: dynamic tiles (+ thumbnail) -> float32 [N, 3, S, S].

    `image` is a PIL image, a path to an image file, or a numpy uint8 [H, W, 3] array read as RGB; any
    other array is refused (its channel order and value range are not self-describing). Pixels become RGB
    by the rules of `to_rgb`: 8-bit modes exactly as the official `convert("RGB")` (alpha dropped), 16-bit
    and float images scaled to 0..255. EXIF orientation is not applied, as in the official code.
    Bad arguments (named), other input types, missing or unreadable files and zero-size images are a
    ValueError naming the input; `input_size` is at most MAX_INPUT_SIZE (1792) and `max_num` at most
    MAX_TILES (40).
    """
    _check_tiling(min_num, max_num, input_size, use_thumbnail, size_name="input_size")
    tiles = dynamic_preprocess(_open_image(image), min_num, max_num, input_size, use_thumbnail)
    return torch.stack([image_to_tensor(tile, input_size) for tile in tiles])


# ----------------------------------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------------------------------


def _frame_range(bound: Sequence[float] | None, fps: float, max_frame: int, first_idx: int = 0) -> tuple[int, int]:
    """(start_idx, end_idx) of the official sampling: `bound` in seconds rounded to frames (half-to-even) and
    clipped to [first_idx, max_frame]; None or an empty bound means the whole video."""
    if bound is not None and len(bound) > 0:
        if len(bound) != 2:
            raise ValueError(f"bound must be (start_seconds, end_seconds), got {len(bound)} values")
        start, end = bound[0], bound[1]
    else:
        start, end = -100000, 100000
    return max(first_idx, round(start * fps)), min(round(end * fps), max_frame)


def get_index(
    bound: Sequence[float] | None,
    fps: float,
    max_frame: int,
    first_idx: int = 0,
    num_segments: int = 32,
) -> np.ndarray:
    """Official segment-middle frame sampling: `num_segments` frame indices (int64) in [first_idx, max_frame].

    `bound = (start_s, end_s)` limits the range (seconds); None or empty means the whole video.
    Rounding is Python's / numpy's round-half-to-even, as in the official code. Like the official function
    it repeats frames when the range has fewer frames than segments; `load_video` keeps the repeats and logs
    a warning.
    """
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    start_idx, end_idx = _frame_range(bound, fps, max_frame, first_idx)
    seg_size = float(end_idx - start_idx) / num_segments
    return np.array(
        [int(start_idx + seg_size / 2 + np.round(seg_size * idx)) for idx in range(num_segments)], dtype=np.int64
    )


def _check_bound(bound: Any) -> None:
    """ValueError unless `bound` is None, empty, or (start_s, end_s) with finite 0 <= start < end."""
    if bound is None:
        return
    if isinstance(bound, (str, bytes)) or not hasattr(bound, "__len__"):
        raise ValueError(f"bound must be None or (start_seconds, end_seconds), got {_type_name(bound)} {bound!r}")
    if len(bound) == 0:
        return
    if len(bound) != 2:
        raise ValueError(f"bound must be (start_seconds, end_seconds), got {len(bound)} values: {bound!r}")
    start, end = bound[0], bound[1]
    for value in (start, end):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"bound must hold two numbers of seconds, got bound={bound!r}")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"bound must hold finite seconds, got bound=({start}, {end})")
    if start < 0:
        raise ValueError(f"bound must start at 0 seconds or later, got bound=({start}, {end})")
    if end <= start:
        raise ValueError(
            f"bound must be (start_seconds, end_seconds) with start < end, got bound=({start}, {end}); "
            "a reversed bound is not reordered"
        )


def _check_video_request(video_path: Any, bound: Any, num_segments: Any) -> str:
    """The video path as a str, after checking the path type, `bound` and `num_segments`."""
    if not isinstance(video_path, (str, os.PathLike)):
        raise ValueError(f"video_path must be a file path (str or os.PathLike), got {_type_name(video_path)}")
    _check_int("num_segments", num_segments)
    _check_bound(bound)
    return os.fspath(video_path)


def _sample_indices(path: str, bound: Any, fps: float, num_frames: int, num_segments: int) -> np.ndarray:
    """`get_index` over a video of `num_frames` frames at `fps`: [num_segments] int64 frame indices.

    ValueError when the video has no frames or no usable frame rate, or when `bound` starts after the last
    frame. A bound that ends after the video is clipped to the last frame (as the official code does) with a
    logged warning. Repeated indices (a range shorter than `num_segments`) are kept, as the official
    sampling gives them; `_warn_if_repeated` reports them once the final indices are known.
    """
    if num_frames < 1:
        raise ValueError(f"video file {path!r} has 0 frames")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"video file {path!r} reports a frame rate of {fps}; cannot place frames in time")
    max_frame = num_frames - 1
    start_idx, _ = _frame_range(bound, fps, max_frame)
    where = _where(bound)
    if start_idx > max_frame:
        raise ValueError(
            f"video file {path!r}: {where} starts at frame {start_idx}, after the last frame: the video has frames "
            f"0..{max_frame} ({num_frames / fps:.2f} s at {fps:g} fps)"
        )
    if where != "the whole video" and bound[1] * fps > num_frames:
        logger.warning(
            f"video file {path!r}: {where} ends after the video ({num_frames / fps:.2f} s at {fps:g} fps); "
            f"sampling up to its last frame {max_frame}"
        )
    return get_index(bound, fps, max_frame, first_idx=0, num_segments=num_segments)


def _where(bound: Any) -> str:
    """'bound=(start, end)' for a non-empty bound, else 'the whole video' (for messages)."""
    return f"bound=({bound[0]}, {bound[1]})" if bound is not None and len(bound) > 0 else "the whole video"


def _warn_if_repeated(path: str, bound: Any, fps: float, num_frames: int, indices: np.ndarray) -> None:
    """One logged warning when the official sampling `indices` repeat frames (range shorter than the request)."""
    distinct = len(np.unique(indices))
    if distinct == len(indices):
        return
    start_idx, end_idx = _frame_range(bound, fps, num_frames - 1)
    logger.warning(
        f"video file {path!r}: {_where(bound)} has {end_idx - start_idx + 1} frames ({start_idx}..{end_idx}) and "
        f"num_segments={len(indices)} repeats frames: the official sampling gives {distinct} distinct frames, "
        f"some of them several times; lower num_segments to avoid repeats"
    )


def _resolve_backend(backend: str | None) -> str:
    """'decord' if importable (or requested), else 'pyav'; ImportError naming both when neither is."""
    if backend is not None and backend not in VIDEO_BACKENDS:
        raise ValueError(f"backend must be None or one of {VIDEO_BACKENDS}, got {backend!r}")
    if backend in (None, "decord"):
        try:
            import decord  # noqa: F401
        except ImportError as err:
            if backend == "decord":
                raise ImportError("backend='decord' needs the decord package: pip install decord") from err
            logger.info("decord is not installed; decoding videos with PyAV")
        else:
            return "decord"
    try:
        import av  # noqa: F401
    except ImportError as err:
        if backend == "pyav":
            raise ImportError("backend='pyav' needs the av (PyAV) package: pip install av") from err
        raise ImportError(
            "load_video needs a video decoder: install decord (pip install decord) or av (pip install av)"
        ) from err
    return "pyav"


def _read_frames_decord(path: str, bound: Any, num_segments: int) -> list[np.ndarray]:
    """Sampled RGB frames [H, W, 3] uint8 read with decord (official reader settings)."""
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


PYAV_STRATEGIES = ("auto", "sequential", "seek")

# What one seek costs, in decoded frames: the demuxer seek, the decoder flush, the keyframe and the refill of the
# frame-thread pipeline. Measured on 480p H.264 with gop 250 (2 cores): seek + N frames took about 13 ms + N x
# 0.8 ms, against 0.8-1 ms a frame decoding on, so a seek is worth 13-16 frames.
SEEK_COST_FRAMES = 16


class _SeekMiss(RuntimeError):
    """The seeking reader met something its packet index did not predict; the sequential reader takes over."""


@dataclass(frozen=True)
class _PtsIndex:
    """Timing of a video stream read by demuxing its packets (no frame decoded).

    `pts`: [F] presentation timestamps ascending, so frame i of the video (presentation order) has pts[i];
    `keyframes`: [K] ascending presentation positions of the keyframes (the seek points), keyframes[0] == 0.
    """

    pts: tuple[int, ...]
    keyframes: tuple[int, ...]


def _pyav_stream_info(av: Any, path: str) -> tuple[int, float]:
    """(frame count, average fps) of the first video stream; counts demuxed packets if the header has no count.

    Counting packets (one per frame) gives the frame count decoding would give, without decoding.
    """
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"video file {path!r} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        num_frames = stream.frames
        if num_frames <= 0:
            num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
            logger.info(f"video {path!r} reports no frame count; counted {num_frames} frames by demuxing")
    if not rate:
        raise ValueError(f"video file {path!r} does not report a frame rate")
    return num_frames, float(rate)


def _pyav_index(av: Any, path: str) -> _PtsIndex | None:
    """The `_PtsIndex` of the first video stream from one demux pass, or None when it cannot be trusted.

    It is trusted when every packet carries a presentation timestamp (pts), the pts are all different, none
    is marked discard or corrupt, the first packet is a keyframe holding the earliest pts and the keyframes'
    pts grow in decode order. Streams failing this (raw streams without pts, some AVI files) decode
    sequentially.
    """
    pts: list[int] = []
    key_pts: list[int] = []
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
    if not pts or len(set(pts)) < len(pts) or not key_pts or key_pts[0] != pts[0] or pts[0] != ordered[0]:
        return None
    if any(later <= earlier for earlier, later in zip(key_pts, key_pts[1:])):
        return None
    position = {value: i for i, value in enumerate(ordered)}
    return _PtsIndex(tuple(ordered), tuple(position[value] for value in key_pts))


def _plan_seeks(targets: Sequence[int], keyframes: Sequence[int], seek_cost: int) -> list[int | None]:
    """For each target frame, the keyframe position to seek to before decoding it, or None to decode forward.

    `targets` [T] are distinct presentation positions, ascending; `keyframes` [K] ascending with
    keyframes[0] == 0. Cost rule, in decoded frames: the decoder stands before frame `nxt` (0 at the start,
    target + 1 after each target). Decoding forward to target t costs t - nxt + 1 frames; seeking to the last
    keyframe k <= t costs seek_cost + t - k + 1. So the reader seeks exactly when k > nxt + seek_cost: a
    target inside the GOP being decoded (k <= nxt) never seeks, dense requests (gaps shorter than about a
    GOP + seek_cost) decode sequentially, and sparse requests on long videos seek. Both choices leave the
    decoder before t + 1, so choosing per target gives the cheapest plan overall (never dearer than
    sequential decoding, which is the plan with no seek).
    """
    plan: list[int | None] = []
    nxt = 0
    for target in targets:
        key = keyframes[bisect.bisect_right(keyframes, target) - 1]
        plan.append(key if key > nxt + seek_cost else None)
        nxt = target + 1
    return plan


def _choose_pyav_strategy(
    targets: Sequence[int], keyframes: Sequence[int], seek_cost: int = SEEK_COST_FRAMES
) -> str:
    """'seek' when the `_plan_seeks` cost rule seeks at least once for these targets, else 'sequential'."""
    plan = _plan_seeks(targets, keyframes, seek_cost)
    return "seek" if any(key is not None for key in plan) else "sequential"


def _open_video_stream(container: Any) -> Any:
    """The first video stream of an open container, with frame threading on (output is bit-identical)."""
    stream = container.streams.video[0]
    stream.codec_context.thread_type = "AUTO"  # frame + slice threads; the codec context has it in every PyAV
    return stream


def _pyav_decode(av: Any, path: str, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode sequentially, keeping the frames whose index is in `wanted` (RGB [H, W, 3] uint8).

    Frame i is the i-th frame the decoder outputs. Stops after the last wanted frame; returns the kept
    frames and the number of frames decoded.
    """
    frames: dict[int, np.ndarray] = {}
    last, decoded = max(wanted), 0
    with av.open(path) as container:
        for index, frame in enumerate(container.decode(_open_video_stream(container))):
            decoded = index + 1
            if index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    return frames, decoded


def _decode_forward(output: Iterator[Any], pts: Sequence[int], nxt: int, target: int) -> Any:
    """Decode from frame `nxt` up to frame `target` (presentation positions) and return that frame.

    Every decoded frame must carry the pts the index predicts for its position, pts[nxt], pts[nxt + 1], ...;
    anything else is a `_SeekMiss`.
    """
    for frame in output:
        if frame.pts != pts[nxt]:
            raise _SeekMiss(f"frame {nxt} should have pts {pts[nxt]}, the decoder gave pts {frame.pts}")
        if nxt == target:
            return frame
        nxt += 1
    raise _SeekMiss(f"the stream ended before frame {target}")


def _skip_before(output: Iterator[Any], key_pts: int) -> Iterator[Any]:
    """`output` without its leading frames whose pts is below `key_pts` (frames before the seek target)."""
    return itertools.dropwhile(lambda frame: frame.pts is not None and frame.pts < key_pts, output)


def _pyav_seek_decode(
    av: Any, path: str, index: _PtsIndex, targets: Sequence[int], plan: Sequence[int | None]
) -> dict[int, np.ndarray]:
    """Frames {target: RGB [H, W, 3] uint8} decoded along `plan` (`_plan_seeks`); `_SeekMiss` if off index.

    A seek goes to the keyframe's pts (`backward=True`: at or before it); frames before that pts (an earlier
    landing, open-GOP leading frames) are skipped, then frames must follow the index one by one.
    """
    frames: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        stream = _open_video_stream(container)
        output, nxt = container.decode(stream), 0
        for target, key in zip(targets, plan):
            if key is not None:
                container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)
                output, nxt = _skip_before(container.decode(stream), index.pts[key]), key
            frames[target] = _decode_forward(output, index.pts, nxt, target).to_ndarray(format="rgb24")
            nxt = target + 1
    return frames


def _pyav_seek_frames(
    av: Any, path: str, wanted: list[int], strategy: str
) -> tuple[dict[int, np.ndarray] | None, int]:
    """The seeking reader: ({frame: RGB array} or None to read sequentially, frames the video holds or -1).

    `wanted` [T] ascending distinct frame indices. 'auto' seeks only when `_choose_pyav_strategy` says so and
    falls back on a `_SeekMiss`; 'seek' plans with seek cost 0 and raises it (for tests).
    """
    index = _pyav_index(av, path)
    if index is None:
        if strategy == "seek":
            raise _SeekMiss(f"video {path!r} has no trustworthy packet index")
        return None, -1
    if wanted[-1] >= len(index.pts):
        return {}, len(index.pts)
    if strategy == "auto" and _choose_pyav_strategy(wanted, index.keyframes) == "sequential":
        return None, len(index.pts)
    plan = _plan_seeks(wanted, index.keyframes, 0 if strategy == "seek" else SEEK_COST_FRAMES)
    try:
        return _pyav_seek_decode(av, path, index, wanted, plan), len(index.pts)
    except _SeekMiss as miss:
        if strategy == "seek":
            raise
        logger.info(f"video {path!r}: seeking gave unexpected frames ({miss}); decoding sequentially")
        return None, len(index.pts)


def _pyav_sample(av: Any, path: str, indices: np.ndarray, strategy: str) -> tuple[list[np.ndarray] | None, int]:
    """(frames at `indices`, or None when the video has fewer frames than they need; frames available)."""
    wanted = sorted({int(idx) for idx in indices})
    frames, available = (None, -1) if strategy == "sequential" else _pyav_seek_frames(av, path, wanted, strategy)
    if frames is None:
        frames, available = _pyav_decode(av, path, set(wanted))
    if len(frames) < len(wanted):
        return None, available
    return [frames[int(idx)] for idx in indices], available


def _read_frames_pyav(path: str, bound: Any, num_segments: int, strategy: str = "auto") -> list[np.ndarray]:
    """Sampled RGB frames [H, W, 3] uint8 read with PyAV.

    `strategy` 'auto' picks seeking or sequential decoding by the `_plan_seeks` cost rule; 'sequential' and
    'seek' force one (tests compare them: both give bit-identical frames; a forced 'seek' raises `_SeekMiss`
    where 'auto' would fall back). If the stream reports more frames than it holds, sampling is redone over
    the frames it holds.
    """
    if strategy not in PYAV_STRATEGIES:
        raise ValueError(f"strategy must be one of {PYAV_STRATEGIES}, got strategy={strategy!r}")
    try:
        import av
    except ImportError as err:
        raise ImportError("backend='pyav' needs the av (PyAV) package: pip install av") from err
    try:
        num_frames, fps = _pyav_stream_info(av, path)
        indices = _sample_indices(path, bound, fps, num_frames, num_segments)
        frames, available = _pyav_sample(av, path, indices, strategy)
        if frames is None:
            logger.warning(
                f"video {path!r} reports {num_frames} frames but decodes {available}; sampling from {available}"
            )
            num_frames = available
            indices = _sample_indices(path, bound, fps, num_frames, num_segments)
            frames, _ = _pyav_sample(av, path, indices, strategy)
    except (av.FFmpegError, OSError) as err:
        raise ValueError(f"cannot open video file {path!r} with PyAV: {err}") from err
    if frames is None:
        raise ValueError(f"video file {path!r}: frames could not be decoded consistently")
    _warn_if_repeated(path, bound, fps, num_frames, indices)
    return frames


def load_video_frames(
    video_path: str | os.PathLike,
    bound: Sequence[float] | None = None,
    num_segments: int = 32,
    backend: str | None = None,
) -> list[np.ndarray]:
    """The `num_segments` frames at `get_index` positions, each RGB [H, W, 3] uint8.

    Arguments are checked before the file is opened, the sampled range once its frame count and rate are
    known (`_sample_indices`). Frames come in time order; a range with fewer frames than `num_segments`
    gives the official indices with repeats (the same frame several times) and one logged warning.
    """
    path = _check_video_request(video_path, bound, num_segments)
    resolved = _resolve_backend(backend)
    if not os.path.isfile(path):
        raise ValueError(f"video file {path!r} does not exist or is not a file")
    if resolved == "pyav":
        return _read_frames_pyav(path, bound, num_segments)
    return _read_frames_decord(path, bound, num_segments)


def load_video(
    video_path: str | os.PathLike,
    bound: Sequence[float] | None = None,
    input_size: int = 448,
    max_num: int = 1,
    num_segments: int = 32,
    use_thumbnail: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Official `load_video`: sampled frames -> dynamic tiles -> (pixel_values [T', 3, S, S], tiles per frame).

    With the default `max_num=1` every frame is one tile, so T' = T = num_segments and the list is [1]*T.
    `backend` forces "decord" or "pyav"; None picks decord when installed, else PyAV. PyAV seeks to the
    keyframe before a sampled frame when that costs less than decoding on (`_plan_seeks`), with the frames
    sequential decoding gives, as stored: PyAV does not apply a display rotation (decord 0.6.0 returns
    garbled [W, H, 4] frames for rotated videos).

    Rules (ValueError naming the numbers, before any frame is decoded where possible):
    - `num_segments` is an int >= 1. Every call gives exactly the official frame indices; when the sampled
      range has fewer frames than that (e.g. 64 segments of a 24-frame clip) the official sampling repeats
      frames, and so does this function, with one logged warning per call.
    - `bound` is None / empty (whole video) or (start_s, end_s) with finite 0 <= start < end; a reversed,
      negative or NaN bound is refused, one that starts after the last frame too. One that ends after the
      video is clipped to the last frame with a logged warning, as the official code clips it.
    - `input_size` is an int in 1..MAX_INPUT_SIZE, `max_num` in 1..MAX_TILES, `use_thumbnail` a bool.
    """
    _check_tiling(1, max_num, input_size, use_thumbnail, size_name="input_size")
    pixel_values, num_patches_list = [], []
    for frame in load_video_frames(video_path, bound, num_segments, backend):
        tiles = dynamic_preprocess(
            Image.fromarray(frame), max_num=max_num, image_size=input_size, use_thumbnail=use_thumbnail
        )
        pixel_values.extend(image_to_tensor(tile, input_size) for tile in tiles)
        num_patches_list.append(len(tiles))
    return torch.stack(pixel_values), num_patches_list
