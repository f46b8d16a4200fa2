"""Preprocessing and processor for PVC-InternVL (InternVL2 + Progressive Visual Token Compression).

Reproduces the official InternVL2 / PVC preprocessing (`utils/preprocess.py` of OpenGVLab/PVC) without
torchvision: dynamic tiling, bicubic resize, `ToTensor` (/255) and ImageNet normalisation in float32,
and the segment-middle frame sampling of `load_video`. Video decoding uses decord when it is installed
and PyAV otherwise; both are optional and imported only inside functions.

`PVCInternVLProcessor` turns (text, images | video) into the inputs of the model's `chat()`:
`pixel_values`, `num_patches_list`, `data_flag`, `split_sizes` and the untokenised `question`.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

logger = logging.get_logger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_PLACEHOLDER = "<image>"

DATA_FLAG_SINGLE_IMAGE = 1
DATA_FLAG_MULTI_IMAGE = 2
DATA_FLAG_VIDEO = 3

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


# ----------------------------------------------------------------------------------------------------
# Prompts and processor
# ----------------------------------------------------------------------------------------------------


def build_video_prompt(num_frames: int) -> str:
    """'Frame1: <image>\\nFrame2: <image>\\n...' (the PVC README video prompt)."""
    return "".join(f"Frame{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(num_frames))


def build_multi_image_prompt(num_images: int) -> str:
    """'Image-1: <image>\\nImage-2: <image>\\n...' (the InternVL2 multi-image prompt)."""
    return "".join(f"Image-{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(num_images))


def _with_placeholders(text: str, num_media: int, prefix: str, kind: str) -> str:
    """`prefix + text` if `text` has no <image>; `text` if it has exactly `num_media`; else ValueError."""
    found = text.count(IMAGE_PLACEHOLDER)
    if found == 0:
        return prefix + text
    if found != num_media:
        raise ValueError(f"text has {found} {IMAGE_PLACEHOLDER} placeholders but {num_media} {kind} were given")
    return text


def collate_features(features_list: Sequence[dict[str, Any]]) -> BatchFeature:
    """Merge single-sample processor outputs into one `batch_chat` batch.

    Returns pixel_values [sum N_b, 3, S, S], data_flag [B], split_sizes [B], num_patches_list (list of
    per-sample lists) and questions (list of B strings).
    """
    if len(features_list) == 0:
        raise ValueError("collate needs at least 1 sample, got 0")
    for index, features in enumerate(features_list):
        if features.get("pixel_values") is None:
            raise ValueError(
                f"sample {index} of {len(features_list)} has no images or video; "
                "batch_chat needs pixel_values for every sample"
            )
    return BatchFeature(
        data={
            "pixel_values": torch.cat([f["pixel_values"] for f in features_list]),
            "data_flag": torch.cat([f["data_flag"] for f in features_list]),
            "split_sizes": torch.cat([f["split_sizes"] for f in features_list]),
            "num_patches_list": [list(f["num_patches_list"]) for f in features_list],
            "questions": [f["question"] for f in features_list],
        }
    )


class PVCInternVLProcessor(ProcessorMixin):
    """Prepares one sample (text + images or one video) for `PVCInternVLChatModel.chat`.

    Args:
        tokenizer: the checkpoint's tokenizer (kept for `chat`; the question is returned untokenised).
        image_size: tile size S in pixels.
        min_dynamic_patch: minimum number of tiles per image.
        max_dynamic_patch: maximum number of tiles per image (thumbnail not counted).
        use_thumbnail: append a whole-image thumbnail tile when an image has more than one tile.
        num_segments: frames sampled from a video by default.
    """

    # transformers 4.x reads the sub-processors from these (5.x from the __init__ signature).
    attributes = ["tokenizer"]
    tokenizer_class = "AutoTokenizer"

    def __init__(
        self,
        tokenizer: Any = None,
        image_size: int = 448,
        min_dynamic_patch: int = 1,
        max_dynamic_patch: int = 12,
        use_thumbnail: bool = True,
        num_segments: int = 32,
        chat_template: str | None = None,
    ):
        if tokenizer is None:
            raise ValueError("PVCInternVLProcessor needs a tokenizer, got None")
        build_target_ratios(min_dynamic_patch, max_dynamic_patch)  # validates the range
        if image_size <= 0 or num_segments < 1:
            raise ValueError(f"need image_size > 0 and num_segments >= 1, got {image_size} and {num_segments}")
        self.image_size = image_size
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        self.use_thumbnail = use_thumbnail
        self.num_segments = num_segments
        super().__init__(tokenizer, chat_template=chat_template)

    def __call__(
        self,
        text: str = "",
        images: ImageInput | Sequence[ImageInput] | None = None,
        videos: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        num_segments: int | None = None,
        bound: Sequence[float] | None = None,
        max_num: int | None = None,
        return_tensors: str = "pt",
        backend: str | None = None,
    ) -> BatchFeature:
        """One sample -> pixel_values [N, 3, S, S] (None for text only), num_patches_list, data_flag [1],
        split_sizes [1] (= N) and question (prompt with <image> placeholders, not tokenised).

        `max_num` overrides max_dynamic_patch for images; video frames are always one tile each.
        """
        if not isinstance(text, str):
            raise ValueError(
                f"text must be one string (one sample), got {type(text).__name__}; use collate() for batches"
            )
        if return_tensors != "pt":
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        images = _as_list(images)
        videos = _as_list(videos)
        if images and videos:
            raise ValueError(f"pass images or a video, not both: got {len(images)} images and {len(videos)} videos")
        if videos:
            return self._process_video(text, videos, num_segments, bound, max_num, backend)
        if images:
            return self._process_images(text, images, max_num)
        if text.count(IMAGE_PLACEHOLDER):
            raise ValueError(f"text has {text.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER} placeholders but 0 images")
        data = {"pixel_values": None, "num_patches_list": [], "data_flag": None, "split_sizes": None}
        return BatchFeature(data={**data, "question": text})

    def _process_images(self, text: str, images: list, max_num: int | None) -> BatchFeature:
        """Tiles of every image; flag 1 for one image, 2 for several."""
        max_num = self.max_dynamic_patch if max_num is None else max_num
        tiles = [
            load_image(image, self.image_size, max_num, self.min_dynamic_patch, self.use_thumbnail) for image in images
        ]
        if len(images) == 1:
            question = _with_placeholders(text, 1, f"{IMAGE_PLACEHOLDER}\n", "images")
            flag = DATA_FLAG_SINGLE_IMAGE
        else:
            question = _with_placeholders(text, len(images), build_multi_image_prompt(len(images)), "images")
            flag = DATA_FLAG_MULTI_IMAGE
        return _features(torch.cat(tiles), [t.shape[0] for t in tiles], flag, question)

    def _process_video(self, text, videos, num_segments, bound, max_num, backend) -> BatchFeature:
        """One video: `num_segments` frames, one tile each; flag 3."""
        if len(videos) != 1:
            raise ValueError(f"one video per sample is supported, got {len(videos)}")
        if max_num not in (None, 1):
            raise ValueError(f"video frames are one tile each; got max_num={max_num}")
        num_segments = self.num_segments if num_segments is None else num_segments
        pixel_values, num_patches_list = load_video(
            videos[0], bound=bound, input_size=self.image_size, max_num=1, num_segments=num_segments, backend=backend
        )
        question = _with_placeholders(text, len(num_patches_list), build_video_prompt(len(num_patches_list)), "frames")
        return _features(pixel_values, num_patches_list, DATA_FLAG_VIDEO, question)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any):
        """`ProcessorMixin.save_pretrained` (writes processing.py, processor_config.json with `auto_map` and the
        tokenizer files), then restores the tokenizer's in-memory `auto_map`, which the base class deletes."""
        tokenizer_auto_map = copy.deepcopy(self.tokenizer.init_kwargs.get("auto_map"))
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            if tokenizer_auto_map is not None:
                self.tokenizer.init_kwargs["auto_map"] = tokenizer_auto_map

    @staticmethod
    def collate(features_list: Sequence[dict[str, Any]]) -> BatchFeature:
        """See `collate_features`."""
        return collate_features(features_list)


def _as_list(value: Any) -> list:
    """None -> [], a single item -> [item], a list/tuple -> list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _features(pixel_values: torch.Tensor, num_patches_list: list[int], flag: int, question: str) -> BatchFeature:
    """Single-sample output dict."""
    return BatchFeature(
        data={
            "pixel_values": pixel_values,
            "num_patches_list": list(num_patches_list),
            "data_flag": torch.tensor([flag], dtype=torch.long),
            "split_sizes": torch.tensor([pixel_values.shape[0]], dtype=torch.long),
            "question": question,
        }
    )


PVCInternVLProcessor.register_for_auto_class("AutoProcessor")
