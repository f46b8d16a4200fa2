"""Pixel loading for PVC-InternVL: the official InternVL2 / PVC image tiling and video frame sampling.

Reproduces `utils/preprocess.py` of OpenGVLab/PVC without torchvision: dynamic tiling, bicubic resize,
`ToTensor` (/255) and ImageNet normalisation in float32, and the segment-middle frame sampling of
`load_video`. Video decoding uses decord when it is installed and PyAV otherwise; both are optional and
imported only inside functions. Prompts and tokenization live in `processing.py`.
"""

from __future__ import annotations

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

ImageInput = Image.Image | str | os.PathLike

# ----------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------


def build_target_ratios(min_num: int = 1, max_num: int = 12) -> list[tuple[int, int]]:
    """Candidate grids (cols, rows) with `min_num <= cols*rows <= max_num`, in the official scan order.

    The official code builds a Python set and sorts it by `cols*rows`; the sort is stable, so grids with
    the same tile count keep the set's iteration order (deterministic for small int tuples in CPython).
    That order decides exact ratio ties, so it is rebuilt the same way here.
    """
    if min_num < 1 or max_num < min_num:
        raise ValueError(f"need 1 <= min_num <= max_num, got min_num={min_num}, max_num={max_num}")
    candidates = set(
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
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
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
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

    The image is resized to (image_size*cols, image_size*rows) with PIL's default filter (bicubic for RGB
    images, exactly as the official code) and cropped row-major. With `use_thumbnail` and more than one
    tile, the whole image resized to image_size x image_size is appended as the last tile.
    Returns cols*rows (+1) PIL images.
    """
    width, height = image.size
    cols, rows = tile_grid(width, height, min_num, max_num, image_size)
    resized = image.resize((image_size * cols, image_size * rows))
    tiles = [resized.crop(box) for box in tile_boxes(cols, rows, image_size)]
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size)))
    return tiles


def image_to_tensor(image: Image.Image, image_size: int = 448) -> torch.Tensor:
    """RGB, bicubic resize to image_size^2, /255 and ImageNet normalisation in float32 -> [3, S, S].

    Bit-exact with torchvision's `Resize((S, S), BICUBIC) + ToTensor() + Normalize(mean, std)`.
    """
    image = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))  # [S, S, 3]
    pixels = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return pixels.sub(mean).div(std)


def _open_image(image: ImageInput) -> Image.Image:
    """A PIL image from a PIL image or a file path, converted to RGB."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, (str, os.PathLike)):
        raise ValueError(f"an image must be a PIL.Image or a file path, got {type(image).__name__}")
    try:
        with Image.open(image) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot open image file {os.fspath(image)!r}: {err}") from err


def load_image(
    image: ImageInput,
    input_size: int = 448,
    max_num: int = 12,
    min_num: int = 1,
    use_thumbnail: bool = True,
) -> torch.Tensor:
    """Official InternVL2 `load_image`: dynamic tiles (+ thumbnail) -> float32 [N, 3, S, S]."""
    tiles = dynamic_preprocess(
        _open_image(image), min_num=min_num, max_num=max_num, image_size=input_size, use_thumbnail=use_thumbnail
    )
    return torch.stack([image_to_tensor(tile, input_size) for tile in tiles])


# ----------------------------------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------------------------------


def get_index(
    bound: Sequence[float] | None,
    fps: float,
    max_frame: int,
    first_idx: int = 0,
    num_segments: int = 32,
) -> np.ndarray:
    """Official segment-middle frame sampling: `num_segments` frame indices (int64) in [first_idx, max_frame].

    `bound = (start_s, end_s)` limits the range (seconds); None or empty means the whole video.
    Rounding is Python's / numpy's round-half-to-even, as in the official code.
    """
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if bound is not None and len(bound) > 0:
        if len(bound) != 2:
            raise ValueError(f"bound must be (start_seconds, end_seconds), got {len(bound)} values")
        start, end = bound[0], bound[1]
    else:
        start, end = -100000, 100000
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    return np.array(
        [int(start_idx + seg_size / 2 + np.round(seg_size * idx)) for idx in range(num_segments)], dtype=np.int64
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


def _check_indices(indices: np.ndarray, max_frame: int, path: str, bound: Any) -> None:
    """ValueError unless every sampled index lies in [0, max_frame]."""
    if indices.min() < 0 or indices.max() > max_frame:
        raise ValueError(
            f"video {path!r}: bound={bound} gives frame indices {indices.min()}..{indices.max()} "
            f"outside the video's frames 0..{max_frame}"
        )


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
    if num_frames == 0:
        raise ValueError(f"video file {path!r} has 0 frames")
    indices = get_index(bound, fps, num_frames - 1, first_idx=0, num_segments=num_segments)
    _check_indices(indices, num_frames - 1, path, bound)
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
    """(frames at the get_index positions or None if some could not be decoded, number of frames decoded)."""
    if num_frames == 0:
        raise ValueError(f"video file {path!r} has 0 frames")
    indices = get_index(bound, fps, num_frames - 1, first_idx=0, num_segments=num_segments)
    _check_indices(indices, num_frames - 1, path, bound)
    frames, decoded = _pyav_decode(av, path, {int(idx) for idx in indices})
    if len(frames) < len(set(indices.tolist())):
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
    """The `num_segments` frames at `get_index` positions, each RGB [H, W, 3] uint8."""
    path = os.fspath(video_path)
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
    """
    pixel_values, num_patches_list = [], []
    for frame in load_video_frames(video_path, bound, num_segments, backend):
        tiles = dynamic_preprocess(
            Image.fromarray(frame).convert("RGB"), max_num=max_num, image_size=input_size, use_thumbnail=use_thumbnail
        )
        pixel_values.extend(image_to_tensor(tile, input_size) for tile in tiles)
        num_patches_list.append(len(tiles))
    return torch.stack(pixel_values), num_patches_list
