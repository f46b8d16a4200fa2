"""Video decode time against video length, for every reader of media.py (issue 18, "Must show").

    python benchmarks/decode.py                      # into the git-ignored scratch folder benchmarks/_work/
    python benchmarks/decode.py --out benchmarks     # replaces the committed benchmarks/results_decode.*
    python benchmarks/decode.py --lengths 1,10 --resolutions 480p --repeats 1   # a quick look
    python benchmarks/decode.py --from-json benchmarks/results_decode.json --out benchmarks   # re-render only

Makes synthetic H.264 MP4 videos itself (one per length and resolution, cached in --videos and reused while
their parameters match), then times the official sampling of --segments frames (`get_index`, segment
middles over the whole video) with each reader, as `load_video_frames` calls it:
  pyav-sequential  PyAV, decoding every frame up to the last sampled one (media.py, strategy="sequential")
  pyav-seek        PyAV, seeking to the keyframe before every sampled frame past the GOP being decoded
                   (strategy="seek": the seek cost taken as 0)
  pyav-auto        PyAV as `load_video` runs it: seeks where `_plan_seeks` says that is cheaper (strategy="auto")
  decord           the official reader: VideoReader(num_threads=1), vr[i] for every sampled index
  decord-batch     the same VideoReader, vr.get_batch(indices) (decord seeks inside both)
Each time includes opening the file (PyAV's packet index, decord's index) and the conversion to RGB. Runs
are interleaved (repeat-major, then video, then reader in a rotating order) and summarised by medians. The
first repeat of every reader is checked against pyav-sequential: bit-identical frames, and the frame
number painted into each frame equals the official index.

Writes results_decode.json (every sample, the checks, the summary and the targets), results_decode.md (the
table and the must-show targets with PASS/MISS) and results_decode.png (decode time vs. length) into --out.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import pathlib
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from scripts.cli import HelpFormatter, fail, positive_int  # noqa: E402

PROG = "decode.py"
SCRATCH = HERE / "_work"  # git-ignored (.gitignore: /benchmarks/_work/)
RESULTS_NAME = "results_decode"
RESOLUTIONS = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
READERS = ("pyav-sequential", "pyav-seek", "pyav-auto", "decord", "decord-batch")
REFERENCE = "pyav-sequential"
SEEKING = ("pyav-seek", "pyav-auto")  # the PyAV seeking reader, forced and as load_video runs it
DECORD = ("decord", "decord-batch")

# Must-show thresholds of issue 18.
SPEEDUP_AT_LONGEST = 10.0  # seeking >= 10x faster than sequential at 60 minutes
GROWTH_LIMIT = 1.5  # seeking at 60 minutes <= 1.5x its 10-minute time
TARGET_LONG, TARGET_SHORT = 60.0, 10.0  # minutes
FPS, GOP = 30, 250  # the videos' frame rate and keyframe interval (defaults of --fps and --gop)

# The synthetic videos. Bump GENERATOR when the pictures or the encoder settings change: cached videos made by
# another version are encoded again.
GENERATOR = 1
PRESET, CRF = "ultrafast", 28
CODE_DIGITS, CODE_BASE, CODE_BLOCK = 5, 16, 32  # frame number painted as 5 base-16 digits in 32x32 grey blocks
CODE_STEP = 14  # luma step per digit value: Y = 16 + 14 * digit (limited range), so RGB = 255/219 * 14 * digit
CODE_RGB_STEP = 255.0 / 219.0 * CODE_STEP
MIN_WIDTH, MIN_HEIGHT = CODE_DIGITS * CODE_BLOCK + 32, 96


# ----------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------


def positive_float(text: str) -> float:
    """A number > 0 (minutes may be fractional: 0.1 is six seconds)."""
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(text)
    return value


def lengths_list(text: str) -> list[float]:
    """argparse type: ``"1,10,30,60"`` -> [1.0, 10.0, 30.0, 60.0] minutes, each > 0, no repeats."""
    try:
        values = [positive_float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated minutes > 0 such as 1,10,30,60, got {text!r}") from None
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"lists a length twice: {text!r}")
    return values


def resolution(text: str) -> tuple[str, int, int]:
    """``"720p"`` -> ("720p", 1280, 720); ``"320x240"`` -> ("320x240", 320, 240) (even sizes, large enough)."""
    if text in RESOLUTIONS:
        return (text, *RESOLUTIONS[text])
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise ValueError(f"{text!r} is not one of {', '.join(RESOLUTIONS)} or WIDTHxHEIGHT")
    width, height = int(match[1]), int(match[2])
    if width % 2 or height % 2 or width < MIN_WIDTH or height < MIN_HEIGHT:
        raise ValueError(f"{text!r}: width and height must be even and at least {MIN_WIDTH}x{MIN_HEIGHT}")
    return text, width, height


def resolutions_list(text: str) -> list[tuple[str, int, int]]:
    """argparse type: ``"480p,720p"`` -> [("480p", 854, 480), ("720p", 1280, 720)]."""
    try:
        values = [resolution(part) for part in text.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if len({name for name, _, _ in values}) != len(values):
        raise argparse.ArgumentTypeError(f"lists a resolution twice: {text!r}")
    return values


def readers_list(text: str) -> list[str]:
    """argparse type: a comma-separated subset of READERS, kept in READERS order."""
    names = text.split(",")
    unknown = [name for name in names if name not in READERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown reader {unknown[0]!r}; choose from {','.join(READERS)}")
    return [name for name in READERS if name in names]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (nothing heavy is imported here, so ``--help`` answers at once)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=SCRATCH,
                        help=f"folder for {RESULTS_NAME}.md/.json/.png "
                             "(`--out benchmarks` replaces the committed ones)")
    parser.add_argument("--videos", type=pathlib.Path, default=SCRATCH / "videos",
                        help="cache folder of the synthetic videos (made when missing, reused while their "
                             "parameters match)")
    parser.add_argument("--lengths", type=lengths_list, default="1,10,30,60", help="video lengths in minutes")
    parser.add_argument("--resolutions", type=resolutions_list, default="480p,720p",
                        help=f"{', '.join(f'{k}={w}x{h}' for k, (w, h) in RESOLUTIONS.items())} or WIDTHxHEIGHT")
    parser.add_argument("--segments", type=positive_int, default=64, help="frames sampled per video (num_segments)")
    parser.add_argument("--gop", type=positive_int, default=GOP, help="keyframe interval of the videos, in frames")
    parser.add_argument("--fps", type=positive_int, default=FPS, help="frame rate of the videos")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs of every reader on every video")
    parser.add_argument("--readers", type=readers_list, default=",".join(READERS),
                        help="readers to time (the decord ones are left out when decord is not installed)")
    parser.add_argument("--from-json", type=pathlib.Path, default=None, metavar="JSON",
                        help="time nothing: re-render the reports from a saved results_decode.json into --out "
                             "(encode times it lacks are taken from the --videos cache)")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder")
    if args.videos.exists() and not args.videos.is_dir():
        parser.error(f"--videos {args.videos} is a file; give a folder")
    if args.from_json is not None and not args.from_json.is_file():
        parser.error(f"--from-json {args.from_json} is not a file")
    if REFERENCE not in args.readers:
        parser.error(f"--readers must include {REFERENCE}: the other readers' frames are checked against it")
    return args


# ----------------------------------------------------------------------------------------------------
# Synthetic videos
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoSpec:
    """One synthetic video: `frames` pictures of `width` x `height` at `fps`, a keyframe every `gop` frames."""

    resolution: str
    width: int
    height: int
    length_min: float
    frames: int
    fps: int
    gop: int

    @property
    def name(self) -> str:
        return f"{self.resolution}_{self.length_min:g}min"

    @property
    def file_name(self) -> str:
        return f"synthetic_{self.width}x{self.height}_{self.frames}f_{self.fps}fps_gop{self.gop}.mp4"

    def meta(self) -> dict[str, Any]:
        """What a cached file must have been made with to be reused."""
        return {"generator": GENERATOR, "width": self.width, "height": self.height, "frames": self.frames,
                "fps": self.fps, "gop": self.gop, "codec": "libx264", "preset": PRESET, "crf": CRF}


def video_spec(resolution_name: str, width: int, height: int, length_min: float, fps: int, gop: int) -> VideoSpec:
    """The spec of a `length_min`-minute video (at least one frame)."""
    return VideoSpec(resolution_name, width, height, length_min, max(1, round(length_min * 60 * fps)), fps, gop)


class Painter:
    """The pictures of a synthetic video, made straight in yuv420p (no colour conversion per frame).

    Frame i: a static background (smooth luma and chroma gradients with fixed noise, so keyframes cost what a
    textured picture costs), a textured luma block that moves 4 px per frame across the middle (so P-frames
    carry motion), and i painted top-left as CODE_DIGITS base-CODE_BASE digits in grey CODE_BLOCK-px squares
    (`frame_number` reads it back from a decoded RGB frame).
    """

    def __init__(self, width: int, height: int) -> None:
        import numpy as np

        self.np, self.width, self.height = np, width, height
        rng = np.random.default_rng(18)
        rows, cols = np.mgrid[0:height, 0:width]
        luma = 96 + 48 * np.sin(cols / 37.0) + 32 * np.cos(rows / 23.0) + rng.integers(-12, 13, (height, width))
        half_rows, half_cols = np.mgrid[0 : height // 2, 0 : width // 2]
        u = 128 + 40 * np.sin(half_cols / 29.0 + half_rows / 41.0)
        v = 128 + 40 * np.cos(half_rows / 17.0 - half_cols / 53.0)
        code_rows, code_cols = CODE_BLOCK // 2, CODE_DIGITS * CODE_BLOCK // 2
        u[:code_rows, :code_cols] = v[:code_rows, :code_cols] = 128  # grey code squares
        self.background = np.clip(luma, 16, 235).astype(np.uint8)
        self.block = int(min(96, height // 4)) // 2 * 2
        self.block_pixels = rng.integers(16, 236, (self.block, self.block)).astype(np.uint8)
        self.band = slice(height // 2, height // 2 + self.block)
        self.buffer = np.empty((height * 3 // 2, width), dtype=np.uint8)  # the yuv420p layout of PyAV
        self.buffer[:height] = self.background
        self.buffer[height:] = np.concatenate([u.reshape(-1), v.reshape(-1)]).clip(16, 240).astype(np.uint8).reshape(
            height // 2, width)

    def paint(self, index: int):
        """The yuv420p picture of frame `index` as a [height * 3 / 2, width] uint8 array (reused buffer)."""
        buffer, block = self.buffer, self.block
        buffer[self.band] = self.background[self.band]
        left = (4 * index) % (self.width - block)
        buffer[self.band, left : left + block] = self.block_pixels
        for digit in range(CODE_DIGITS):
            value = (index // CODE_BASE**digit) % CODE_BASE
            buffer[:CODE_BLOCK, digit * CODE_BLOCK : (digit + 1) * CODE_BLOCK] = 16 + CODE_STEP * value
        return buffer


def frame_number(frame) -> int:
    """The frame index `Painter.paint` wrote into a decoded RGB [H, W, 3] frame; -1 when it is unreadable."""
    number, inner = 0, slice(CODE_BLOCK // 4, CODE_BLOCK * 3 // 4)
    for digit in range(CODE_DIGITS):
        square = frame[inner, digit * CODE_BLOCK + CODE_BLOCK // 4 : digit * CODE_BLOCK + CODE_BLOCK * 3 // 4]
        level = float(square.mean()) / CODE_RGB_STEP
        value = round(level)
        if abs(level - value) > 0.3 or not 0 <= value < CODE_BASE:
            return -1
        number += value * CODE_BASE**digit
    return number


def write_video(spec: VideoSpec, path: pathlib.Path) -> None:
    """Encode `spec` with libx264 (PRESET, CRF, keyframes exactly every gop frames, no scene-cut keyframes)."""
    import av

    painter = Painter(spec.width, spec.height)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.codec_context.options = {
            "preset": PRESET, "crf": str(CRF),
            "x264-params": f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0",
        }
        for index in range(spec.frames):
            frame = av.VideoFrame.from_ndarray(painter.paint(index), format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def sidecar(spec: VideoSpec, folder: pathlib.Path) -> pathlib.Path:
    """The JSON file next to a cached video: its `VideoSpec.meta()` and the seconds its encoding took."""
    return folder / (spec.file_name + ".json")


def cached_encode_seconds(spec: VideoSpec, folder: pathlib.Path) -> tuple[bool, float | None]:
    """(whether `folder` holds a video made with `spec`'s parameters, the encode seconds its sidecar recorded)."""
    path, meta_path = folder / spec.file_name, sidecar(spec, folder)
    if not (path.is_file() and meta_path.is_file()):
        return False, None
    try:
        saved = json.loads(meta_path.read_text())
    except ValueError:
        return False, None
    meta = spec.meta()
    if not isinstance(saved, dict) or {key: saved.get(key) for key in meta} != meta:
        return False, None
    return True, saved.get("encode_s")


def ensure_video(spec: VideoSpec, folder: pathlib.Path,
                 log: Callable[[str], None] = print) -> tuple[pathlib.Path, float | None, bool]:
    """The cached video of `spec` in `folder`, encoded first when missing or made with other parameters.

    Returns (path, seconds its encoding took, whether the cached file was reused); a reused file reports the
    seconds recorded when it was encoded (None if not recorded). The file is written under a temporary name and
    renamed, so an interrupted encode is never reused.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.file_name
    reusable, recorded = cached_encode_seconds(spec, folder)
    if reusable:
        return path, recorded, True
    log(f"encoding {spec.name}: {spec.frames} frames {spec.width}x{spec.height} -> {path}")
    partial = folder / (spec.file_name + ".partial.mp4")
    start = time.perf_counter()
    write_video(spec, partial)
    seconds = time.perf_counter() - start
    os.replace(partial, path)
    sidecar(spec, folder).write_text(json.dumps({**spec.meta(), "encode_s": seconds}) + "\n")
    log(f"  encoded in {seconds:.0f} s ({spec.frames / seconds:.0f} frames/s)")
    return path, seconds, False


def keyframe_count(path: pathlib.Path) -> int:
    """Keyframes of the first video stream (by demuxing; no decoding)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(video=0) if packet.size and packet.is_keyframe)


def warm_page_cache(path: pathlib.Path) -> None:
    """Read the file once, so that no reader pays the first read from disk."""
    with open(path, "rb") as handle:
        while handle.read(16 << 20):
            pass


# ----------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------


def media_module():
    """media.py imported as ``pvc_internvl.media`` (the package shim of conversion/package.py)."""
    from conversion.package import remote_module

    return remote_module("media")


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def reader_functions(segments: int) -> dict[str, Callable[[str], list]]:
    """{reader name: function(path) -> the `segments` sampled RGB frames [H, W, 3] uint8, in time order}."""
    media = media_module()

    def decord_batch(path: str) -> list:
        import decord

        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)  # the official reader's settings
        indices = media.get_index(None, float(reader.get_avg_fps()), len(reader) - 1, num_segments=segments)
        return list(reader.get_batch([int(i) for i in indices]).asnumpy())

    return {
        "pyav-sequential": lambda path: media._read_frames_pyav(path, None, segments, strategy="sequential"),
        "pyav-seek": lambda path: media._read_frames_pyav(path, None, segments, strategy="seek"),
        "pyav-auto": lambda path: media._read_frames_pyav(path, None, segments, strategy="auto"),
        "decord": lambda path: media._read_frames_decord(path, None, segments),
        "decord-batch": decord_batch,
    }


def expected_indices(spec: VideoSpec, segments: int) -> list[int]:
    """The official frame indices of `segments` segments over the whole video."""
    return [int(i) for i in media_module().get_index(None, float(spec.fps), spec.frames - 1, num_segments=segments)]


def decoded_frames(path: pathlib.Path, segments: int) -> dict[str, int]:
    """Frames each PyAV strategy decodes for the official sampling of the whole video, and the seeks it makes.

    From media.py's own packet index and `_plan_seeks` (no decoding): sequential decodes up to the last sampled
    frame; a seek restarts decoding at its keyframe. The ratio of these counts bounds the speed-up of seeking
    (a seek costs more than one decoded frame, so the measured ratio is lower).
    """
    import av

    media = media_module()
    index = media._pyav_index(av, str(path))
    num_frames, fps = media._pyav_stream_info(av, str(path))  # the real fps: the whole-video bound is +-1e5 s
    targets = sorted({int(i) for i in media.get_index(None, fps, num_frames - 1, num_segments=segments)})
    counts = {"pyav-sequential": targets[-1] + 1}
    for reader, cost in (("pyav-seek", 0), ("pyav-auto", media.SEEK_COST_FRAMES)):
        plan = media._plan_seeks(targets, index.keyframes, cost)
        decoded, nxt = 0, 0
        for target, key in zip(targets, plan):
            decoded += target - (nxt if key is None else key) + 1
            nxt = target + 1
        counts[reader] = decoded
        counts[f"{reader} seeks"] = sum(key is not None for key in plan)
    return counts


def frame_digests(frames: list) -> list[str]:
    """A short hash of every frame (shape, dtype and pixels), to compare readers without keeping the frames."""
    import numpy as np

    digests = []
    for frame in frames:
        array = np.ascontiguousarray(frame)
        digest = hashlib.blake2b(f"{array.shape}{array.dtype}".encode(), digest_size=12)
        digest.update(memoryview(array).cast("B"))
        digests.append(digest.hexdigest())
    return digests


def timed(read: Callable[[str], list], path: str) -> tuple[list, float, float]:
    """(frames, wall seconds, CPU seconds of this process, all threads) of one call."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    frames = read(path)
    return frames, time.perf_counter() - wall, time.process_time() - cpu


# ----------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------


def cpu_ticks() -> tuple[int, int]:
    """(total, idle + iowait) jiffies of the whole machine from /proc/stat; (0, 0) where there is none."""
    try:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    except OSError:
        return 0, 0
    return sum(fields), fields[3] + fields[4]


def measure(specs: list[VideoSpec], paths: dict[str, pathlib.Path], readers: list[str], segments: int,
            repeats: int, log: Callable[[str], None] = print) -> tuple[list[dict], list[dict]]:
    """Time every reader on every video `repeats` times; check the first repeat's frames.

    Returns (samples, checks): one sample per call {video, reader, repeat, seconds, cpu_seconds}, one check per
    (video, reader) {identical_to_sequential, frame_numbers_ok, ...}.
    """
    functions = reader_functions(segments)
    samples, first = [], {}
    for repeat in range(repeats):
        shift = repeat % len(readers)
        order = readers[shift:] + readers[:shift]  # no reader always runs right after the same one
        for spec in specs:
            for reader in order:
                frames, seconds, cpu = timed(functions[reader], str(paths[spec.name]))
                samples.append({"video": spec.name, "reader": reader, "repeat": repeat, "seconds": seconds,
                                "cpu_seconds": cpu})
                log(f"repeat {repeat + 1}/{repeats} {spec.name:>12} {reader:<16} {seconds:8.3f} s")
                if repeat == 0:
                    first[spec.name, reader] = (frame_digests(frames), [frame_number(f) for f in frames],
                                                tuple(frames[0].shape) if frames else None)
                del frames
    checks = []
    for spec in specs:
        expected = expected_indices(spec, segments)
        reference = first[spec.name, REFERENCE][0]
        for reader in readers:
            digests, numbers, shape = first[spec.name, reader]
            wrong = [i for i, (a, b) in enumerate(zip(numbers, expected)) if a != b]
            if len(numbers) != len(expected):
                wrong.append(min(len(numbers), len(expected)))
            checks.append({"video": spec.name, "reader": reader, "frames": len(digests),
                           "shape": list(shape) if shape else None, "identical_to_sequential": digests == reference,
                           "frame_numbers_ok": numbers == expected, "first_wrong_frame": wrong[0] if wrong else None})
    return samples, checks


def summarize(samples: list[dict], videos: list[dict], readers: list[str]) -> list[dict]:
    """One row per (video, reader) that has samples: median, min and max wall seconds, median CPU seconds."""
    rows = []
    for video in videos:
        for reader in readers:
            own = [s for s in samples if s["video"] == video["name"] and s["reader"] == reader]
            if not own:
                continue
            seconds = [s["seconds"] for s in own]
            rows.append({"video": video["name"], "resolution": video["resolution"], "length_min": video["length_min"],
                         "frames": video["frames"], "reader": reader, "n": len(own),
                         "median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
                         "median_cpu_s": statistics.median(s["cpu_seconds"] for s in own)})
    return rows


def _median(summary: list[dict], resolution_name: str, length_min: float, reader: str) -> float | None:
    for row in summary:
        if row["resolution"] == resolution_name and row["length_min"] == length_min and row["reader"] == reader:
            return row["median_s"]
    return None


def targets(summary: list[dict], resolutions: list[str], readers: list[str]) -> list[dict]:
    """The must-show decode targets of issue 18, for each resolution and each seeking reader (forced and auto).

    1. at 60 minutes the seeking reader is >= 10x faster than pyav-sequential;
    2. at 60 minutes it is no slower than decord (the faster of the decord readers timed);
    3. its 60-minute time is <= 1.5x its 10-minute time (it grows with the sampled frames, not the length).
    A target whose inputs were not measured is "not measured", with the reason.
    """
    rows = []
    decords = [r for r in DECORD if r in readers]
    for res in resolutions:
        for reader in (r for r in SEEKING if r in readers):
            seek60, seek10 = _median(summary, res, TARGET_LONG, reader), _median(summary, res, TARGET_SHORT, reader)
            seq60 = _median(summary, res, TARGET_LONG, REFERENCE)
            speedup = seq60 / seek60 if seek60 and seq60 else None
            rows.append(_target(
                f"{res}: {reader} >= {SPEEDUP_AT_LONGEST:g}x faster than {REFERENCE} at {TARGET_LONG:g} min",
                speedup, speedup is not None and speedup >= SPEEDUP_AT_LONGEST,
                f"{REFERENCE} {seq60:.2f} s / {reader} {seek60:.2f} s = {speedup:.1f}x" if speedup else
                f"needs {reader} and {REFERENCE} on a {TARGET_LONG:g}-minute video"))
            timed_decord = [(d, _median(summary, res, TARGET_LONG, d)) for d in decords]
            timed_decord = [(d, t) for d, t in timed_decord if t is not None]
            if seek60 is not None and timed_decord:
                best, best_s = min(timed_decord, key=lambda item: item[1])
                rows.append(_target(f"{res}: {reader} no slower than decord at {TARGET_LONG:g} min", seek60 / best_s,
                                    seek60 <= best_s, f"{reader} {seek60:.2f} s vs {best} {best_s:.2f} s "
                                                      f"(the faster decord reader) = {seek60 / best_s:.2f}x"))
            else:
                rows.append(_target(f"{res}: {reader} no slower than decord at {TARGET_LONG:g} min", None, False,
                                    "decord is not installed or not timed" if not decords else
                                    f"needs {reader} and decord on a {TARGET_LONG:g}-minute video"))
            growth = seek60 / seek10 if seek60 and seek10 else None
            rows.append(_target(
                f"{res}: {reader} at {TARGET_LONG:g} min <= {GROWTH_LIMIT:g}x its {TARGET_SHORT:g}-min time",
                growth, growth is not None and growth <= GROWTH_LIMIT,
                f"{seek60:.2f} s / {seek10:.2f} s = {growth:.2f}x" if growth else
                f"needs {reader} on {TARGET_SHORT:g}- and {TARGET_LONG:g}-minute videos"))
    return rows


def _target(name: str, value: float | None, passed: bool, detail: str) -> dict:
    status = "not measured" if value is None else "PASS" if passed else "MISS"
    return {"target": name, "value": value, "status": status, "detail": detail}


def environment(wall_s: float, load_at_start: float, other_share: float | None, encode_s: float) -> dict:
    """Versions, machine and load."""
    import av
    import numpy as np

    env = {"command": " ".join(["benchmarks/decode.py", *sys.argv[1:]]) if sys.argv[0].endswith("decode.py") else "",
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
           "platform": platform.platform(), "cpu_count": os.cpu_count(), "av": av.__version__,
           "libavcodec": ".".join(str(v) for v in av.library_versions.get("libavcodec", ())),
           "numpy": np.__version__, "decord": None, "wall_time_s": wall_s, "encode_time_s": encode_s,
           "other_processes_cpu_share_at_start": load_at_start, "other_processes_cpu_share": other_share}
    if decord_available():
        import decord

        env["decord"] = decord.__version__
    return env


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """Make the videos, time the readers, and return the results dict (without summary and targets)."""
    start = time.perf_counter()
    readers = [r for r in args.readers if r not in DECORD or decord_available()]
    left_out = [r for r in args.readers if r not in readers]
    if left_out:
        log(f"decord is not installed: leaving out {', '.join(left_out)}")
    specs = [video_spec(name, width, height, length, args.fps, args.gop)
             for name, width, height in args.resolutions for length in args.lengths]
    paths, videos, encode_s = {}, [], 0.0
    for spec in specs:
        path, seconds, cached = ensure_video(spec, args.videos, log)
        paths[spec.name] = path
        encode_s += 0.0 if cached else seconds
        videos.append({**asdict(spec), "name": spec.name, "file": path.name, "size_bytes": path.stat().st_size,
                       "keyframes": keyframe_count(path), "encode_s": seconds, "cached": cached,
                       "decoded_frames": decoded_frames(path, args.segments)})
        warm_page_cache(path)
    log(f"videos ready ({encode_s:.0f} s encoding); timing {len(readers)} readers x {len(specs)} videos "
        f"x {args.repeats} repeats")
    load_at_start = busy_share()
    total0, idle0 = cpu_ticks()
    own0 = time.process_time()
    timing_start = time.perf_counter()
    samples, checks = measure(specs, paths, readers, args.segments, args.repeats, log)
    timing_s = time.perf_counter() - timing_start
    total1, idle1 = cpu_ticks()
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = (total1 - total0) - (idle1 - idle0)
    other = None if total1 == total0 else max(0.0, (busy - (time.process_time() - own0) * ticks) / (total1 - total0))
    env = environment(time.perf_counter() - start, load_at_start, other, encode_s)
    env["timing_time_s"] = timing_s
    return {"parameters": {"lengths_min": list(args.lengths),
                           "resolutions": {n: [w, h] for n, w, h in args.resolutions},
                           "segments": args.segments, "gop": args.gop, "fps": args.fps, "repeats": args.repeats,
                           "readers": readers, "readers_left_out": left_out, "codec": "libx264", "preset": PRESET,
                           "crf": CRF, "generator": GENERATOR},
            "environment": env, "videos": videos, "samples": samples, "checks": checks}


def busy_share() -> float:
    """Other processes' share of the machine's CPU time over one second (benchmarks/run.py measures it so)."""
    from benchmarks.run import busy_share as measure_busy

    return measure_busy(1.0)


# ----------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def markdown(results: dict) -> str:
    """The whole results_decode.md."""
    params, env, summary = results["parameters"], results["environment"], results["summary"]
    readers, lengths = params["readers"], params["lengths_min"]
    share = env.get("other_processes_cpu_share")
    load = "" if share is None else (f" Other processes used {share:.0%} of the machine's CPU time while the readers "
                                     "were timed.")
    lines = [
        "# Video decode time against video length", "",
        f"Generated by `python {env['command'] or 'benchmarks/decode.py'}` on {env['date']} in "
        f"{env['wall_time_s']:.0f} s "
        f"({env['encode_time_s']:.0f} s of it encoding videos, {env['timing_time_s']:.0f} s timing the readers); "
        f"{env['cpu_count']} CPU cores, PyAV {env['av']} (libavcodec {env['libavcodec']}), "
        f"decord {env['decord'] or 'not installed'}."
        + load, "",
        f"Each cell: median seconds of {params['repeats']} interleaved runs (min–max) to read the official "
        f"{params['segments']} segment-middle frames of the whole video as RGB arrays, opening the file included. "
        f"Synthetic H.264 videos at {params['fps']} fps with a keyframe every {params['gop']} frames. The machine is "
        "shared and has few cores, so single runs are noisy: compare medians, and expect some spread.", "",
        "## Targets (issue 18)", "",
        *table(["target", "status", "measured"], [[t["target"], f"**{t['status']}**", t["detail"]]
                                                   for t in results["targets"]]),
        "## Decode time (seconds)", "",
    ]
    rows = []
    for res in params["resolutions"]:
        for length in lengths:
            cells = {r["reader"]: r for r in summary if r["resolution"] == res and r["length_min"] == length}
            if not cells:
                continue
            frames = next(iter(cells.values()))["frames"]
            row = [res, f"{length:g}", f"{frames:,}"]
            row += [f"{cells[r]['median_s']:.2f} ({cells[r]['min_s']:.2f}–{cells[r]['max_s']:.2f})" for r in readers]
            seq, auto = cells.get(REFERENCE), cells.get("pyav-auto")
            row.append(f"{seq['median_s'] / auto['median_s']:.1f}x" if seq and auto else "–")
            rows.append(row)
    lines += table(["resolution", "minutes", "frames", *readers, "sequential / auto"], rows)
    lines += ["CPU seconds (all threads of the process, median) show the work apart from the waiting on a busy "
              "machine:", ""]
    cpu_rows = []
    for res in params["resolutions"]:
        for length in lengths:
            cells = {r["reader"]: r for r in summary if r["resolution"] == res and r["length_min"] == length}
            if cells:
                cpu_rows.append([res, f"{length:g}", *(f"{cells[r]['median_cpu_s']:.2f}" for r in readers)])
    lines += table(["resolution", "minutes", *readers], cpu_rows)
    counted = [v for v in results["videos"] if v.get("decoded_frames")]
    if counted:
        lines += ["Frames each PyAV strategy decodes (from media.py's packet index and `_plan_seeks`, no timing): "
                  "their ratio bounds the speed-up of seeking, and the measured ratio usually stays below it because "
                  "a seek also costs a flush and a keyframe (a textured keyframe costs as much as many of these mostly "
                  "static P-frames), and opening demuxes every packet to build the index.", ""]
        count_rows = []
        for video in counted:
            counts = video["decoded_frames"]
            medians = {r["reader"]: r["median_s"] for r in summary if r["video"] == video["name"]}
            ratio = (f"{medians[REFERENCE] / medians['pyav-seek']:.1f}x"
                     if medians.get(REFERENCE) and medians.get("pyav-seek") else "–")
            count_rows.append([video["name"], f"{counts['pyav-sequential']:,}",
                               f"{counts['pyav-seek']:,} ({counts['pyav-seek seeks']})",
                               f"{counts['pyav-auto']:,} ({counts['pyav-auto seeks']})",
                               f"{counts['pyav-sequential'] / counts['pyav-seek']:.1f}x", ratio])
        lines += table(["video", "sequential", "seek (seeks)", "auto (seeks)", "frame ratio sequential / seek",
                        "time ratio sequential / seek"], count_rows)
    bad = [c for c in results["checks"] if not (c["identical_to_sequential"] and c["frame_numbers_ok"])]
    lines += ["## Frames", "",
              f"Every reader's frames of the first run were compared with {REFERENCE}'s and the frame number painted "
              "into each picture was read back and compared with the official index: "
              + ("all identical, bit for bit, and all at the official indices." if not bad else
                 f"{len(bad)} (video, reader) pairs differ: "
                 + "; ".join(f"{c['video']} {c['reader']} (identical {c['identical_to_sequential']}, numbers "
                             f"{c['frame_numbers_ok']}, first wrong frame {c['first_wrong_frame']})" for c in bad)),
              ""]
    lines += ["## Readers", "",
              "- `pyav-sequential`: media.py's PyAV reader with `strategy=\"sequential\"`: decodes every frame up to "
              "the last sampled one (frame threads on).",
              "- `pyav-seek`: `strategy=\"seek\"`: seeks to the keyframe at or before every sampled frame unless it "
              "lies in the GOP being decoded, then decodes forward to it (the `_plan_seeks` rule with seek cost 0).",
              "- `pyav-auto`: `strategy=\"auto\"`, what `load_video` runs: seeks only where `_plan_seeks` (seek cost "
              "16 frames) says that is cheaper, else decodes on; both include demuxing the packets once to build the "
              "keyframe index, the part that grows with the length.",
              "- `decord`: the official InternVL reader (`VideoReader(path, ctx=cpu(0), num_threads=1)`, then "
              "`vr[i].asnumpy()` per index, as media.py's `_read_frames_decord`). decord seeks by itself: for each "
              "index it seeks to the previous keyframe unless the frame lies ahead in the GOP being decoded, and it "
              "reads the whole packet index when the reader is opened.",
              "- `decord-batch`: the same reader with `vr.get_batch(indices)` (one call, the same seeks inside).", ""]
    lines += ["## Videos", "",
              "Made by this command with PyAV/libx264 (preset `ultrafast`, CRF 28, `keyint=min-keyint=gop`, "
              "`scenecut=0`, no B-frames at this preset, yuv420p, MP4), cached in the scratch folder and reused. To "
              "keep encoding an hour of 720p affordable on 2 cores the pictures are cheap to encode: a static textured "
              "background (gradients plus fixed noise, so a keyframe costs what a textured picture costs), one "
              "textured block moving 4 px per frame through the middle, and the frame number painted top-left as "
              "grey squares (read back by the frame check). Most of a P-frame is therefore skipped blocks: P-frames "
              "decode faster than in camera footage, while the textured keyframes cost more like real ones. "
              "Sequential decoding pays for every P-frame, a seeking reader for one keyframe and on average half a "
              "GOP per sampled frame; on camera footage all times grow, and since P-frames then weigh more against "
              "the per-seek cost, the time ratio of sequential to seeking should move toward the frame ratio "
              "above (an expectation, not measured here).", ""]
    video_rows = [[v["name"], f"{v['width']}x{v['height']}", f"{v['frames']:,}", str(v["keyframes"]),
                   f"{v['size_bytes'] / 1e6:.1f}",
                   "–" if v["encode_s"] is None else f"{v['encode_s']:.0f}" + (" (cached)" if v["cached"] else ""),
                   "–" if v["encode_s"] is None else f"{v['frames'] / v['encode_s']:.0f}"]
                  for v in results["videos"]]
    known = [v["encode_s"] for v in results["videos"] if v["encode_s"] is not None]
    if known:
        lines += [f"Encoding {'all ' if len(known) == len(video_rows) else ''}{len(known)} of these videos took "
                  f"{sum(known):.0f} s on this machine (\"(cached)\": the time recorded when the cached file was "
                  "made, by an earlier run of this command).", ""]
    lines += table(["video", "size", "frames", "keyframes", "MB", "encode s", "encoded frames/s"], video_rows)
    env_rows = [[k, "–" if v is None else f"{v:.1%}" if "share" in k else f"{v:.0f} s" if k.endswith("_s")
                 else str(v)] for k, v in env.items()]
    lines += ["## Environment", "", *table(["", ""], env_rows)]
    return "\n".join(lines)


STYLES = {"pyav-sequential": ("tab:red", "o"), "pyav-seek": ("tab:blue", "s"), "pyav-auto": ("tab:green", "^"),
          "decord": ("tab:purple", "D"), "decord-batch": ("tab:gray", "v")}
DASHES = ["-", "--", ":", "-."]


def plot(results: dict, path: pathlib.Path) -> None:
    """Decode time vs. video length (log-log), one line per reader and resolution, min–max as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    params, summary = results["parameters"], results["summary"]
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    for number, res in enumerate(params["resolutions"]):
        for reader in params["readers"]:
            rows = sorted((r for r in summary if r["resolution"] == res and r["reader"] == reader),
                          key=lambda r: r["length_min"])
            if not rows:
                continue
            xs, ys = [r["length_min"] for r in rows], [r["median_s"] for r in rows]
            spread = [[y - r["min_s"] for y, r in zip(ys, rows)], [r["max_s"] - y for y, r in zip(ys, rows)]]
            color, marker = STYLES[reader]
            ax.errorbar(xs, ys, yerr=spread, color=color, marker=marker, linestyle=DASHES[number % len(DASHES)],
                        capsize=2, label=f"{reader}, {res}")
    ax.set(xscale="log", yscale="log", xlabel="video length (minutes)", ylabel="seconds (median)",
           title=f"Decode time of {params['segments']} sampled frames vs. video length\n"
                 f"(synthetic H.264, GOP {params['gop']}, {params['fps']} fps; medians, min-max bars)")
    ax.set_xticks(params["lengths_min"])
    ax.set_xticklabels([f"{v:g}" for v in params["lengths_min"]])
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(results: dict, folder: pathlib.Path, with_plot: bool = True) -> list[pathlib.Path]:
    """Add the summary and the targets to `results`, write results_decode.json / .md (/ .png) into `folder`."""
    params = results["parameters"]
    summary = summarize(results["samples"], results["videos"], params["readers"])
    results["summary"] = summary
    results["targets"] = targets(summary, list(params["resolutions"]), params["readers"])
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / RESULTS_NAME
    paths = [base.with_suffix(".json"), base.with_suffix(".md")]
    paths[0].write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    paths[1].write_text(markdown(results) + "\n")
    if with_plot:
        paths.append(base.with_suffix(".png"))
        plot(results, paths[2])
    return paths


def fill_from_cache(results: dict, folder: pathlib.Path) -> dict:
    """`results` with what a video entry lacks (its encode time, its decoded-frame counts) taken from the cached
    video in `folder` when that was made with the same parameters: results of an older version re-render fully."""
    for video in results["videos"]:
        spec = VideoSpec(*(video[key] for key in ("resolution", "width", "height", "length_min", "frames", "fps",
                                                  "gop")))
        reusable, recorded = cached_encode_seconds(spec, folder)
        if video.get("encode_s") is None and reusable:
            video["encode_s"] = recorded
        if "decoded_frames" not in video and reusable:
            video["decoded_frames"] = decoded_frames(folder / spec.file_name, results["parameters"]["segments"])
    return results


def main(argv: list[str] | None = None) -> None:
    """Parse, check the decoders, run, write the reports into --out."""
    args = parse_args(argv)
    try:
        import av  # noqa: F401
    except ImportError:
        fail(PROG, "needs the av (PyAV) package to write and read the videos: pip install av")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        fail(PROG, "needs matplotlib for results_decode.png: pip install matplotlib")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.from_json is not None:
        results = fill_from_cache(json.loads(args.from_json.read_text()), args.videos)
        print(f"wrote {', '.join(str(p) for p in write_reports(results, args.out))}")
        return
    results = run(args, log)
    paths = write_reports(results, args.out)
    print(f"wrote {', '.join(str(p) for p in paths)} in {results['environment']['wall_time_s']:.0f} s")


if __name__ == "__main__":
    main()
