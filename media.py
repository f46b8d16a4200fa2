"""Pixel loading for PVC-InternVL: the official InternVL2 / PVC image tiling and video frame sampling.

Reproduces `utils/preprocess.py` of OpenGVLab/PVC without torchvision: dynamic tiling, bicubic resize,
`ToTensor` (/255) and ImageNet normalisation in float32, and the segment-middle frame sampling of
`load_video`. Video decoding uses decord when it is installed and PyAV otherwise; both are optional and
imported only inside functions. Prompts and tokenization live in `processing.py`.

Inputs are checked before any work: a bad argument, an unreadable file or a video range that cannot give
the requested frames is a `ValueError` naming the input and the numbers (`to_rgb`, `load_image` and
`load_video` state the rules).
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

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
    """ValueError unless 1 <= min_num <= max_num, both ints."""
    _check_int("min_num", min_num)
    _check_int("max_num", max_num)
    if max_num < min_num:
        raise ValueError(f"need 1 <= min_num <= max_num, got min_num={min_num}, max_num={max_num}")


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
    _check_int("image_size", image_size)
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
    _check_int("image_size", image_size)
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
    _check_int(size_name, size)
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
    ValueError naming the input.
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
    it repeats frames when num_segments > end_idx - start_idx; `load_video` refuses such calls.
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
    """`get_index` over a video of `num_frames` frames at `fps`, refusing ranges that cannot give the frames.

    ValueError when the video has no frames or no usable frame rate, when `bound` starts after the last
    frame, or when the range start_idx..end_idx cannot give `num_segments` distinct frames: the official
    sampling repeats frames unless num_segments <= max(1, end_idx - start_idx). A bound that ends after the
    video is clipped to the last frame (as the official code does) with a logged warning.
    """
    if num_frames < 1:
        raise ValueError(f"video file {path!r} has 0 frames")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"video file {path!r} reports a frame rate of {fps}; cannot place frames in time")
    max_frame = num_frames - 1
    start_idx, end_idx = _frame_range(bound, fps, max_frame)
    bounded = bound is not None and len(bound) > 0
    where = f"bound=({bound[0]}, {bound[1]})" if bounded else "the whole video"
    if start_idx > max_frame:
        raise ValueError(
            f"video file {path!r}: {where} starts at frame {start_idx}, after the last frame: the video has frames "
            f"0..{max_frame} ({num_frames / fps:.2f} s at {fps:g} fps)"
        )
    if bounded and bound[1] * fps > num_frames:
        logger.warning(
            f"video file {path!r}: {where} ends after the video ({num_frames / fps:.2f} s at {fps:g} fps); "
            f"sampling up to its last frame {max_frame}"
        )
    limit = max(1, end_idx - start_idx)
    if num_segments > limit:
        raise ValueError(
            f"video file {path!r}: num_segments={num_segments} would repeat frames: {where} spans frames "
            f"{start_idx}..{end_idx}, and the official segment sampling gives distinct frames only for "
            f"num_segments <= {limit} there; lower num_segments" + (" or widen the bound" if bounded else "")
        )
    return get_index(bound, fps, max_frame, first_idx=0, num_segments=num_segments)


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
    try:
        return [reader[int(idx)].asnumpy() for idx in indices]
    except errors as err:
        raise ValueError(f"cannot decode frames of video file {path!r} with decord: {err}") from err


def _pyav_stream_info(av: Any, path: str) -> tuple[int, float]:
    """(frame count, average fps) of the first video stream; counts by decoding if the header has none."""
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"video file {path!r} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        num_frames = stream.frames
        if num_frames <= 0:
            num_frames = sum(1 for _ in container.decode(stream))
            logger.info(f"video {path!r} reports no frame count; counted {num_frames} frames by decoding")
    if not rate:
        raise ValueError(f"video file {path!r} does not report a frame rate")
    return num_frames, float(rate)


def _pyav_decode(av: Any, path: str, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode sequentially, keeping the frames whose index is in `wanted` (RGB [H, W, 3] uint8).

    Stops after the last wanted frame; returns the kept frames and the number of frames decoded.
    """
    frames: dict[int, np.ndarray] = {}
    last, decoded = max(wanted), 0
    with av.open(path) as container:
        for index, frame in enumerate(container.decode(container.streams.video[0])):
            decoded = index + 1
            if index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    return frames, decoded


def _pyav_sample(av: Any, path: str, bound: Any, fps: float, num_frames: int, num_segments: int):
    """(frames at the sampled positions or None if some could not be decoded, number of frames decoded)."""
    indices = _sample_indices(path, bound, fps, num_frames, num_segments)
    frames, decoded = _pyav_decode(av, path, {int(idx) for idx in indices})
    if len(frames) < len(indices):
        return None, decoded
    return [frames[int(idx)] for idx in indices], decoded


def _read_frames_pyav(path: str, bound: Any, num_segments: int) -> list[np.ndarray]:
    """Sampled RGB frames [H, W, 3] uint8 read with PyAV (sequential decode).

    If the stream reports more frames than it decodes, sampling is redone over the decoded count.
    """
    try:
        import av
    except ImportError as err:
        raise ImportError("backend='pyav' needs the av (PyAV) package: pip install av") from err
    try:
        num_frames, fps = _pyav_stream_info(av, path)
        frames, decoded = _pyav_sample(av, path, bound, fps, num_frames, num_segments)
        if frames is None:
            logger.warning(f"video {path!r} reports {num_frames} frames but decodes {decoded}; sampling from {decoded}")
            frames, _ = _pyav_sample(av, path, bound, fps, decoded, num_segments)
    except (av.FFmpegError, OSError) as err:
        raise ValueError(f"cannot open video file {path!r} with PyAV: {err}") from err
    if frames is None:
        raise ValueError(f"video file {path!r}: frames could not be decoded consistently")
    return frames


def load_video_frames(
    video_path: str | os.PathLike,
    bound: Sequence[float] | None = None,
    num_segments: int = 32,
    backend: str | None = None,
) -> list[np.ndarray]:
    """The `num_segments` frames at `get_index` positions, each RGB [H, W, 3] uint8.

    Arguments are checked before the file is opened, the sampled range once its frame count and rate are
    known (`_sample_indices`): every returned frame is a different frame of the video, in time order.
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
    `backend` forces "decord" or "pyav"; None picks decord when installed, else PyAV.

    Rules (ValueError naming the numbers, before any frame is decoded where possible):
    - `num_segments` is an int >= 1 and at most max(1, end_idx - start_idx) of the sampled range: the
      official segment sampling repeats frames beyond that, so a too-short video or bound is refused, not
      padded with repeats (e.g. a 48-frame clip takes up to 47 segments). Calls within that limit give
      exactly the official frame indices.
    - `bound` is None / empty (whole video) or (start_s, end_s) with finite 0 <= start < end; a reversed,
      negative or NaN bound is refused, one that starts after the last frame too. One that ends after the
      video is clipped to the last frame with a logged warning, as the official code clips it.
    - `input_size`, `max_num` are ints >= 1, `use_thumbnail` a bool.
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
