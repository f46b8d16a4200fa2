"""Tests of media.py: RGB values for every Pillow mode, accepted image inputs, official video sampling (short
clips included), and the bad-media table (images and videos), each asserting the exception type and a phrase
of its message. The seeking PyAV reader has its own file, test_media_seek.py."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.testing_utils import CaptureLogger

from pvc_internvl import media as M
from tests.test_processing import reference_get_index  # the independent re-statement of the official rule

MEAN32 = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD32 = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SIXTEEN_BIT_VALUES = [0, 128, 129, 257, 32768, 65535]
SIXTEEN_BIT_LEVELS = [0, 0, 1, 1, 128, 255]  # round(v / 257), worked by hand


def rgb_of(image: Image.Image) -> list:
    return np.asarray(M.to_rgb(image)).tolist()


def grey(levels: list[int]) -> list:
    return [[[level] * 3 for level in levels]]


def reference_pixels(images: list[Image.Image], size: int) -> np.ndarray:
    """Bicubic resize, /255 and ImageNet normalisation in numpy float32 -> [N, 3, S, S]."""
    arrays = [
        (np.asarray(i.resize((size, size), Image.BICUBIC), dtype=np.float32) / np.float32(255.0) - MEAN32) / STD32
        for i in images
    ]
    return np.stack(arrays).transpose(0, 3, 1, 2)


# ------------------------------------------------------------------------------------------------
# Pillow modes -> RGB values
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I;16L", "<u2"), ("I;16N", "=u2")])
def test_sixteen_bit_modes_scale_by_257(mode, dtype):
    values = np.array([SIXTEEN_BIT_VALUES], dtype=dtype)
    image = Image.frombytes(mode, (len(SIXTEEN_BIT_VALUES), 1), values.tobytes())
    assert image.mode == mode
    assert rgb_of(image) == grey(SIXTEEN_BIT_LEVELS)


def test_mode_i_reads_the_sixteen_bit_scale():
    image = Image.fromarray(np.array([SIXTEEN_BIT_VALUES], dtype=np.int32))
    assert image.mode == "I"
    assert rgb_of(image) == grey(SIXTEEN_BIT_LEVELS)


def test_mode_f_reads_zero_to_one():
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0, 0.2, 0.0019, 0.0021]], dtype=np.float32))
    assert image.mode == "F"
    # 0.5*255 = 127.5 -> 128 (nearest, ties to even); 0.2*255 = 51; 0.0019*255 = 0.48 -> 0; 0.0021*255 = 0.54 -> 1
    assert rgb_of(image) == grey([0, 128, 255, 51, 0, 1])


def test_eight_bit_grey_modes():
    assert rgb_of(Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))) == grey([0, 77, 255])
    assert rgb_of(Image.fromarray(np.array([[False, True]]))) == grey([0, 255])  # mode "1"
    assert rgb_of(Image.new("LA", (1, 1), (77, 0))) == grey([77])  # alpha dropped, not composited
    assert rgb_of(Image.new("La", (1, 1), (77, 128))) == grey([153])  # un-premultiplied: 77*255//128


def palette_image() -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 100, 50])
    image.putpixel((1, 0), 1)
    return image


@pytest.mark.parametrize("transparency", [None, 1, bytes([255, 0])])
def test_palette_keeps_palette_colours_without_warning(transparency):
    image = palette_image()
    if transparency is not None:
        image.info["transparency"] = transparency
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns for bytes transparency on a plain convert("RGB")
        assert rgb_of(image) == [[[10, 20, 30], [200, 100, 50]]]
    assert rgb_of(image.convert("PA")) == [[[10, 20, 30], [200, 100, 50]]]


def test_colour_modes():
    assert rgb_of(Image.new("RGBA", (1, 1), (40, 60, 80, 0))) == [[[40, 60, 80]]]  # alpha dropped
    assert rgb_of(Image.new("RGBX", (1, 1), (40, 60, 80, 9))) == [[[40, 60, 80]]]
    assert rgb_of(Image.new("RGBa", (1, 1), (40, 60, 80, 128))) == [[[79, 119, 159]]]  # floor(v*255/128)
    # CMYK: R = (255-K) - round(C*(255-K)/255): 205 - round(80.39) = 125; 215 - round(8.43, 16.86, 25.29)
    assert rgb_of(Image.new("CMYK", (1, 1), (100, 0, 0, 50))) == [[[125, 205, 205]]]
    assert rgb_of(Image.new("CMYK", (1, 1), (10, 20, 30, 40))) == [[[207, 198, 190]]]
    assert rgb_of(Image.new("HSV", (1, 1), (0, 255, 255))) == [[[255, 0, 0]]]
    assert rgb_of(Image.new("HSV", (1, 1), (85, 255, 128))) == [[[0, 128, 0]]]  # hue 120 degrees, value 128


def test_ycbcr_and_lab():
    for y in (0, 128, 255):  # neutral chroma: Y passes through exactly
        assert rgb_of(Image.new("YCbCr", (1, 1), (y, 128, 128))) == [[[y, y, y]]]
    # JFIF: R = Y + 1.402 (Cr-128) = 200.9, G = Y - 0.714136 (Cr-128) = 48.6, B = Y; Pillow's fixed point is within 1
    got = np.array(rgb_of(Image.new("YCbCr", (1, 1), (100, 128, 200))))[0, 0]
    assert np.abs(got - np.array([200.9, 48.6, 100.0])).max() <= 1.0
    white = np.array(rgb_of(Image.new("LAB", (1, 1), (255, 128, 128))))[0, 0]  # L* = 100, a = b = 0
    assert white.min() >= 253


@pytest.mark.parametrize("mode", ["1", "L", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "HSV"])
def test_eight_bit_modes_equal_the_official_convert(mode):
    size = (7, 5)
    length = len(Image.new(mode, size).tobytes())
    data = np.random.default_rng(len(mode)).integers(0, 256, length, dtype=np.uint8).tobytes()
    image = Image.frombytes(mode, size, data)
    assert M.to_rgb(image).tobytes() == image.convert("RGB").tobytes()


def test_sixteen_bit_png_is_not_white(tmp_path):
    levels16 = (np.arange(24 * 16).reshape(16, 24) * 170).astype(np.uint16)  # 0 .. 65110
    path = tmp_path / "deep.png"
    Image.fromarray(levels16).save(path)
    with Image.open(path) as opened:
        assert opened.mode == "I;16"
    levels8 = ((levels16.astype(np.int64) + 128) // 257).astype(np.uint8)
    expected = M.load_image(Image.fromarray(levels8).convert("RGB"), input_size=32, max_num=1)
    pixels = M.load_image(path, input_size=32, max_num=1)
    assert torch.equal(pixels, expected)
    assert reference_pixels([Image.fromarray(levels8).convert("RGB")], 32).tolist() == expected.tolist()
    assert pixels.max() < reference_pixels([Image.new("RGB", (1, 1), (255, 255, 255))], 32).max()


def test_non_rgb_tiles_are_converted_first():
    image = Image.fromarray(np.array([SIXTEEN_BIT_VALUES] * 4, dtype=np.uint16))
    rgb = Image.fromarray(np.array([SIXTEEN_BIT_LEVELS] * 4, dtype=np.uint8)).convert("RGB")
    tiles = M.dynamic_preprocess(image, max_num=2, image_size=8, use_thumbnail=True)
    assert [t.mode for t in tiles] == ["RGB"] * len(tiles)
    assert torch.equal(M.image_to_tensor(image, 8), M.image_to_tensor(rgb, 8))


# ------------------------------------------------------------------------------------------------
# Accepted image inputs
# ------------------------------------------------------------------------------------------------


def test_load_image_accepts_pil_path_and_uint8_rgb_array(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(array).save(path)
    expected = reference_pixels([Image.fromarray(array)], 16)
    for source in (Image.fromarray(array), path, str(path), array, np.asfortranarray(array)):
        pixels = M.load_image(source, input_size=16, max_num=1)
        assert np.abs(pixels.numpy() - expected).max() == 0.0


def test_limits_are_inclusive():
    assert (M.MAX_TILES, M.MAX_INPUT_SIZE) == (40, 1792)
    assert len(M.build_target_ratios(1, M.MAX_TILES)) > 0
    pixels = M.load_image(Image.new("RGB", (400, 10), (5, 6, 7)), input_size=8, max_num=M.MAX_TILES)
    assert pixels.shape == (41, 3, 8, 8)  # a 40x1 grid and the thumbnail
    assert M.tile_grid(10, 10, image_size=M.MAX_INPUT_SIZE) == (1, 1)  # no error at the limit itself


LIMIT_CASES = [(dict(max_num=1200), "at most MAX_TILES=40 tiles, got max_num=1200"),
               (dict(input_size=100000), "MAX_INPUT_SIZE=1792 pixels, got input_size=100000")]


@pytest.mark.parametrize("kwargs,phrase", LIMIT_CASES)
def test_limits_are_checked_before_the_image_is_read(files, monkeypatch, kwargs, phrase):
    def no_work(*args, **kwargs):
        raise AssertionError("the image was read or tiled before the limits were checked")

    for name in ("_open_image", "dynamic_preprocess", "tile_grid", "image_to_tensor"):
        monkeypatch.setattr(M, name, no_work)
    with pytest.raises(ValueError) as info:
        M.load_image(files["good"], **kwargs)
    assert phrase in str(info.value)


def test_load_image_numpy_integer_arguments():
    image = Image.new("RGB", (60, 20), (1, 2, 3))
    a = M.load_image(image, input_size=np.int64(16), max_num=np.int32(3), min_num=np.int64(1))
    assert a.shape == (4, 3, 16, 16)  # 3x1 grid + thumbnail


# ------------------------------------------------------------------------------------------------
# Videos: test clips
# ------------------------------------------------------------------------------------------------

try:
    import av

    from tests.videos import frame_id, write_video
except ImportError:  # the video tests skip with a reason
    av = None


def write_indexed_video(path: Path, num_frames: int, fps: int = 30) -> Path:
    """32x16 clip, x264 defaults; frame i: left block at level 8*(i % 32), right at 8*(i // 32) (tests/videos.py)."""
    return write_video(path, num_frames, fps=fps, width=32, height=16)


def decode_all(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    if av is None:
        pytest.skip("PyAV (av) is needed to write the test videos")
    folder = tmp_path_factory.mktemp("clips")
    return {
        "long": write_indexed_video(folder / "long.mp4", 200),  # 0..199, 6.67 s at 30 fps
        "short": write_indexed_video(folder / "short.mp4", 48),  # 0..47, 1.6 s
        "clip24": write_indexed_video(folder / "clip24.mp4", 24),  # 0..23, 0.8 s
        "one": write_indexed_video(folder / "one.mp4", 1),
        "folder": folder,
    }


BACKENDS = ["decord", "pyav"]


def backend_or_skip(backend: str) -> str:
    if backend == "decord":
        pytest.importorskip("decord", reason="decord is not installed; the PyAV path is tested instead")
    return backend


# ------------------------------------------------------------------------------------------------
# Videos: valid official calls give the official frames
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_segments,bound", [(8, None), (16, None), (32, None), (64, None), (96, None),
                                                (16, (1.0, 5.0)), (8, [0.5, 3.3]), (16, ())])
def test_official_calls_give_official_indices(clips, backend, num_segments, bound):
    backend_or_skip(backend)
    frames = M.load_video_frames(clips["long"], bound, num_segments, backend=backend)
    assert [frame_id(f) for f in frames] == reference_get_index(bound, 30, 199, num_segments)


def test_load_video_pixels_equal_the_official_pipeline(clips):
    decoded = decode_all(clips["long"])
    indices = reference_get_index(None, 30, 199, 96)
    expected = reference_pixels([Image.fromarray(decoded[i]) for i in indices], 24)
    pixels, patches = M.load_video(clips["long"], num_segments=96, input_size=24, backend="pyav")
    assert patches == [1] * 96
    assert np.abs(pixels.numpy() - expected).max() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_limits_of_num_segments(clips, backend):
    backend_or_skip(backend)
    frames = M.load_video_frames(clips["short"], None, 47, backend=backend)  # 47 = last - first: still distinct
    assert [frame_id(f) for f in frames] == list(range(47))
    assert [frame_id(f) for f in M.load_video_frames(clips["one"], None, 1, backend=backend)] == [0]
    one = M.load_video_frames(clips["long"], (0.5, 0.51), 1, backend=backend)  # frames 15..15
    assert [frame_id(f) for f in one] == [15]


def official_indices(bound, fps: float, max_frame: int, num_segments: int) -> list[int]:
    """The official InternVL / PVC `get_index`, written out (round() is Python's half-to-even)."""
    start, end = (bound[0], bound[1]) if bound else (-100000, 100000)
    start_idx = max(0, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    return [int(start_idx + seg_size / 2 + np.round(seg_size * k)) for k in range(num_segments)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_clip_repeats_frames_like_the_official_sampling(clips, backend):
    backend_or_skip(backend)
    expected = official_indices(None, 30, 23, 64)  # 24 frames, 64 segments
    assert len(set(expected)) == 24 and expected[:6] == [0, 0, 1, 1, 1, 2]  # seg_size = 23/64
    with CaptureLogger(M.logger) as captured:
        frames = M.load_video_frames(clips["clip24"], None, 64, backend=backend)
    assert len(frames) == 64 and [frame_id(f) for f in frames] == expected
    decoded = decode_all(clips["clip24"])
    assert all(np.array_equal(frame, decoded[i]) for frame, i in zip(frames, expected))
    assert captured.out.count("repeats frames") == 1
    assert "the whole video has 24 frames (0..23) and num_segments=64 repeats frames" in captured.out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clip,bound,num_segments,last", [
    ("short", None, 200, 47), ("short", None, 48, 47), ("one", None, 4, 0),
    ("long", (0.5, 0.51), 2, 199), ("long", (1.0, 2.0), 31, 199),
])
def test_too_many_segments_give_official_repeats(clips, backend, clip, bound, num_segments, last):
    backend_or_skip(backend)
    with CaptureLogger(M.logger) as captured:
        frames = M.load_video_frames(clips[clip], bound, num_segments, backend=backend)
    assert [frame_id(f) for f in frames] == official_indices(bound, 30, last, num_segments)
    assert captured.out.count(f"num_segments={num_segments} repeats frames") == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_distinct_frames_log_no_repeat_warning(clips, backend):
    backend_or_skip(backend)
    with CaptureLogger(M.logger) as captured:
        frames = M.load_video_frames(clips["short"], None, 47, backend=backend)
    assert [frame_id(f) for f in frames] == list(range(47)) and "repeats frames" not in captured.out


def test_numpy_bound_and_segments(clips):
    frames = M.load_video_frames(clips["long"], np.array([1.0, 5.0]), np.int64(16), backend="pyav")
    assert [frame_id(f) for f in frames] == reference_get_index((1.0, 5.0), 30, 199, 16)
    with CaptureLogger(M.logger) as captured:  # frames 30..33 for 16 segments: the official repeats
        frames = M.load_video_frames(clips["long"], np.array([1.0, 1.1]), 16, backend="pyav")
    assert [frame_id(f) for f in frames] == reference_get_index((1.0, 1.1), 30, 199, 16)
    assert "bound=(1.0, 1.1) has 4 frames (30..33) and num_segments=16 repeats frames" in captured.out


@pytest.mark.parametrize("backend", BACKENDS)
def test_bound_past_the_end_is_clipped_with_a_warning(clips, backend):
    backend_or_skip(backend)
    with CaptureLogger(M.logger) as captured:
        frames = M.load_video_frames(clips["short"], (1.0, 100.0), 8, backend=backend)
    assert [frame_id(f) for f in frames] == reference_get_index((1.0, 100.0), 30, 47, 8)
    assert "ends after the video (1.60 s at 30 fps)" in captured.out and "last frame 47" in captured.out
    with CaptureLogger(M.logger) as captured:
        M.load_video_frames(clips["short"], (0, 1.6), 8, backend=backend)  # ends exactly at the end: no warning
    assert "ends after" not in captured.out


def test_arguments_are_checked_before_decoding(clips, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("frames were decoded before the arguments were checked")

    monkeypatch.setattr(M, "load_video_frames", no_decoding)
    with pytest.raises(ValueError, match="input_size=0"):
        M.load_video(clips["long"], input_size=0)
    with pytest.raises(ValueError, match="use_thumbnail='yes'"):
        M.load_video(clips["long"], use_thumbnail="yes")
    with pytest.raises(ValueError, match="at most MAX_TILES=40 tiles, got max_num=1200"):
        M.load_video(clips["long"], max_num=1200)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="num_segments=0"):  # checked before the (missing) file
        M.load_video(clips["folder"] / "missing.mp4", num_segments=0)


# ------------------------------------------------------------------------------------------------
# Bad media: (name, call, exception, phrase)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("bad_images")
    good = folder / "good.png"
    Image.new("RGB", (40, 30), (9, 9, 9)).save(good)
    data = good.read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "garbage.png").write_bytes(b"this is not an image at all")
    (folder / "empty.png").write_bytes(b"")
    return {"dir": folder, "good": good}


def rgb(width: int = 8, height: int = 8) -> Image.Image:
    return Image.new("RGB", (width, height), (1, 2, 3))


def float_image(values) -> Image.Image:
    return Image.fromarray(np.array([values], dtype=np.float32))


IMAGE_CASES = [
    ("int", lambda f: M.load_image(123), "got int"),
    ("bytes", lambda f: M.load_image(b"\x89PNG"), "got bytes"),
    ("torch tensor", lambda f: M.load_image(torch.zeros(3, 8, 8)), "got torch.Tensor"),
    ("list", lambda f: M.load_image([rgb()]), "got list"),
    ("float array", lambda f: M.load_image(np.zeros((8, 8, 3), np.float32)), "dtype float32"),
    ("grey array", lambda f: M.load_image(np.zeros((8, 8), np.uint8)), "shape (8, 8)"),
    ("rgba array", lambda f: M.load_image(np.zeros((8, 8, 4), np.uint8)), "uint8 [H, W, 3]"),
    ("chw array", lambda f: M.load_image(np.zeros((3, 8, 8), np.uint8)), "shape (3, 8, 8)"),
    ("missing file", lambda f: M.load_image(f["dir"] / "nope.png"), "nope.png' does not exist"),
    ("directory", lambda f: M.load_image(f["dir"]), "is not a file"),
    ("garbage file", lambda f: M.load_image(f["dir"] / "garbage.png"), "cannot open image file"),
    ("empty file", lambda f: M.load_image(f["dir"] / "empty.png"), "empty.png"),
    ("truncated file", lambda f: M.load_image(f["dir"] / "truncated.png"), "truncated"),
    ("zero size", lambda f: M.load_image(rgb(0, 0)), "has zero size"),
    ("zero height", lambda f: M.load_image(rgb(5, 0)), "size 5x0) has zero size"),
    ("float above 1", lambda f: M.load_image(float_image([0.5, 2.0])), "0.0..1.0, but this image has values 0.5..2"),
    ("float nan", lambda f: M.load_image(float_image([0.5, math.nan])), "1 NaN or Inf pixels"),
    ("float inf", lambda f: M.load_image(float_image([math.inf, -math.inf])), "2 NaN or Inf pixels"),
    ("int negative", lambda f: M.load_image(Image.fromarray(np.array([[-1, 5]], np.int32))), "values -1..5"),
    ("int above 16 bit", lambda f: M.load_image(Image.fromarray(np.array([[70000]], np.int32))), "0..65535"),
    ("max_num 0", lambda f: M.load_image(rgb(), max_num=0), "max_num=0"),
    ("max_num float", lambda f: M.load_image(rgb(), max_num=2.5), "max_num=2.5"),
    ("max_num bool", lambda f: M.load_image(rgb(), max_num=True), "max_num=True"),
    ("min_num 0", lambda f: M.load_image(rgb(), min_num=0), "min_num=0"),
    ("min above max", lambda f: M.load_image(rgb(), min_num=3, max_num=2), "min_num=3, max_num=2"),
    ("input_size 0", lambda f: M.load_image(rgb(), input_size=0), "input_size=0"),
    ("input_size str", lambda f: M.load_image(rgb(), input_size="448"), "input_size='448'"),
    ("input_size float", lambda f: M.load_image(rgb(), input_size=448.0), "input_size=448.0"),
    ("use_thumbnail str", lambda f: M.load_image(rgb(), use_thumbnail="false"), "use_thumbnail='false'"),
    ("bad args before file", lambda f: M.load_image(f["dir"] / "nope.png", max_num=-1), "max_num=-1"),
    ("tiles of a path", lambda f: M.dynamic_preprocess(str(f["good"])), "must be a PIL.Image.Image, got str"),
    ("tensor size 0", lambda f: M.image_to_tensor(rgb(), 0), "image_size=0"),
    ("ratios max 0", lambda f: M.build_target_ratios(1, 0), "max_num=0"),
    ("max_num above limit", lambda f: M.load_image(rgb(), max_num=41), "at most MAX_TILES=40 tiles, got max_num=41"),
    ("max_num huge", lambda f: M.load_image(rgb(), max_num=10**6), "lower max_num"),
    ("ratios above limit", lambda f: M.build_target_ratios(1, 100), "MAX_TILES=40"),
    ("tiles above limit", lambda f: M.dynamic_preprocess(rgb(), max_num=41), "got max_num=41"),
    ("input_size above limit", lambda f: M.load_image(rgb(), input_size=1793),
     "MAX_INPUT_SIZE=1792 pixels, got input_size=1793"),
    ("image_size above limit", lambda f: M.dynamic_preprocess(rgb(), image_size=8960), "got image_size=8960"),
    ("tensor size above limit", lambda f: M.image_to_tensor(rgb(), 2000), "MAX_INPUT_SIZE=1792"),
]


@pytest.mark.parametrize("name,call,phrase", IMAGE_CASES, ids=[case[0] for case in IMAGE_CASES])
def test_bad_image_inputs(files, name, call, phrase):
    with pytest.raises(ValueError) as info:
        call(files)
    assert phrase in str(info.value)


VIDEO_CASES = [  # too many segments for the range are not an error: test_too_many_segments_give_official_repeats
    ("reversed bound", "long", dict(bound=(2.5, 0.5), num_segments=4), "start < end, got bound=(2.5, 0.5)"),
    ("empty bound", "long", dict(bound=(1.0, 1.0), num_segments=4), "is not reordered"),
    ("negative bound", "long", dict(bound=(-1.0, 2.0), num_segments=4), "at 0 seconds or later"),
    ("nan bound", "long", dict(bound=(math.nan, 2.0), num_segments=4), "finite seconds"),
    ("inf bound", "long", dict(bound=(0.0, math.inf), num_segments=4), "finite seconds"),
    ("bound after video", "short", dict(bound=(10, 20), num_segments=4), "starts at frame 300, after the last frame"),
    ("bound three values", "long", dict(bound=(0, 1, 2), num_segments=4), "got 3 values"),
    ("bound string", "long", dict(bound="0,1", num_segments=4), "bound must be None or (start_seconds"),
    ("bound number", "long", dict(bound=5, num_segments=4), "got int 5"),
    ("bound with text", "long", dict(bound=(0, "1"), num_segments=4), "two numbers of seconds"),
    ("bound with bool", "long", dict(bound=(False, 1), num_segments=4), "two numbers of seconds"),
    ("num_segments 0", "long", dict(num_segments=0), "num_segments=0"),
    ("num_segments float", "long", dict(num_segments=8.0), "num_segments=8.0"),
    ("num_segments str", "long", dict(num_segments="8"), "num_segments='8'"),
    ("max_num 0", "long", dict(num_segments=4, max_num=0), "max_num=0"),
    ("max_num above limit", "long", dict(num_segments=4, max_num=41), "at most MAX_TILES=40 tiles, got max_num=41"),
    ("input_size negative", "long", dict(num_segments=4, input_size=-3), "input_size=-3"),
    ("input_size above limit", "long", dict(num_segments=4, input_size=4096), "MAX_INPUT_SIZE=1792 pixels"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,clip,kwargs,phrase", VIDEO_CASES, ids=[case[0] for case in VIDEO_CASES])
def test_bad_video_requests(clips, backend, name, clip, kwargs, phrase):
    backend_or_skip(backend)
    kwargs = {"input_size": 16, **kwargs}
    with pytest.raises(ValueError) as info:
        M.load_video(clips[clip], backend=backend, **kwargs)
    assert phrase in str(info.value)


@pytest.mark.parametrize("video_path,phrase", [(123, "got int"), (None, "got NoneType"), (["a.mp4"], "got list")])
def test_bad_video_paths(video_path, phrase):
    with pytest.raises(ValueError, match="video_path must be a file path") as info:
        M.load_video(video_path)
    assert phrase in str(info.value)
