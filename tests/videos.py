"""Small synthetic test videos written with PyAV (no binary fixtures in the repository).

Frame i of every video carries its index as two solid grey blocks in the top half: the left block at level
STEP * (i % 32), the right one at STEP * (i // 32), so `frame_id` reads indices 0..1023 back after lossy
coding. Videos taller than 32 px also get a textured strip in the bottom third that moves by 3 px per frame,
so that P and B frames really predict from other frames. Importing this module needs `av`; callers skip
their tests first when it is missing.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

STEP = 8  # grey-level step of the frame-index code
TEXTURE_MIN_HEIGHT = 33  # videos at least this tall carry the moving texture
VFR_GAPS_MS = (33, 17, 50, 33, 100, 20, 41)  # frame gaps of the variable-frame-rate video, cycled


def paint(index: int, width: int, height: int) -> np.ndarray:
    """The RGB picture of frame `index`: uint8 [height, width, 3] (index code on top, texture below)."""
    picture = np.zeros((height, width, 3), dtype=np.uint8)
    picture[:, : width // 2] = STEP * (index % 32)
    picture[:, width // 2 :] = STEP * (index // 32)
    if height >= TEXTURE_MIN_HEIGHT:
        rows = height // 3
        texture = np.random.default_rng(7).integers(0, 256, (rows, 4 * width, 3), dtype=np.uint8)
        start = (3 * index) % (3 * width)
        picture[height - rows :] = texture[:, start : start + width]
    return picture


def frame_id(frame: np.ndarray) -> int:
    """The frame index painted by `paint`, read from the centres of the two blocks of a decoded [H, W, 3] frame."""
    height, width = frame.shape[:2]
    rows = slice(2, max(3, height // 2 - 2))
    left = frame[rows, 2 : width // 2 - 2].mean()
    right = frame[rows, width // 2 + 2 : width - 2].mean()
    low, high = round(left / STEP), round(right / STEP)
    if abs(left - low * STEP) >= 3 or abs(right - high * STEP) >= 3:
        raise ValueError(f"frame does not carry a readable index code: block means {left:.1f}, {right:.1f}")
    return low + 32 * high


def write_video(
    path: Path,
    num_frames: int,
    fps: int = 30,
    width: int = 64,
    height: int = 48,
    gop: int | None = None,
    b_frames: int | None = None,
    pts_ms: Sequence[int] | None = None,
    rotation: int | None = None,
    container_format: str | None = None,
) -> Path:
    """Write `num_frames` painted frames with libx264 (yuv420p) and return `path`.

    `gop`: keyframe interval (x264 keyint, no scene-cut keyframes); `b_frames`: consecutive B-frames;
    None keeps x264's defaults for both. `pts_ms`: presentation times in milliseconds (time base 1/1000,
    a variable frame rate); `rotation`: display-matrix rotation in degrees (stored as metadata only);
    `container_format`: e.g. "avi" when the suffix is not enough.
    """
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        params = [] if gop is None else [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0"]
        params += [] if b_frames is None else [f"bframes={b_frames}"]
        if params:  # x264's own settings: codec_context.gop_size / max_b_frames=0 made every frame a keyframe
            stream.codec_context.options = {"x264-params": ":".join(params)}
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:  # a PyAV without Stream.set_display_rotation writes no rotation
            getattr(stream, "set_display_rotation", lambda degrees: None)(rotation)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(paint(i, width, height), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = int(pts_ms[i]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def vfr_pts_ms(num_frames: int) -> list[int]:
    """Irregular presentation times in ms: 0, then the gaps of VFR_GAPS_MS, cycled."""
    gaps = [VFR_GAPS_MS[i % len(VFR_GAPS_MS)] for i in range(num_frames - 1)]
    return [0] + np.cumsum(gaps).tolist()


def patch_avi_frame_count(source: Path, target: Path, claimed: int) -> Path:
    """Copy the AVI `source` to `target` with its video stream header (strh dwLength) claiming `claimed` frames.

    The frames and the index stay untouched; FFmpeg then reports `stream.frames == claimed`.
    """
    data = bytearray(source.read_bytes())
    header = data.find(b"strh")  # chunk id, chunk size, then the header fields
    if header < 0 or data[header + 8 : header + 12] != b"vids":
        raise ValueError(f"{source} has no video stream header (strh vids) first")
    offset = header + 8 + 32  # fccType, fccHandler, dwFlags, wPriority+wLanguage, InitialFrames, Scale, Rate, Start
    data[offset : offset + 4] = struct.pack("<I", claimed)
    target.write_bytes(bytes(data))
    return target


def make_test_videos(folder: Path) -> dict[str, Path]:
    """The seek-test videos, written into `folder` (about 1 s on one core).

    - "cfr": 120 frames at 30 fps, H.264 with keyframes every 12 frames and 2 B-frames, MP4;
    - "long_gop": 120 frames, keyframes every 50 frames, 3 B-frames, MP4;
    - "vfr": 90 frames with irregular gaps (time base 1/1000), B-frames, MP4;
    - "rotated": the "cfr" layout with a 90-degree display matrix, MP4 (decoders return unrotated pixels);
    - "mkv": 60 frames in Matroska, whose header has no frame count (stream.frames == 0);
    - "count_high" / "count_low": a 60-frame AVI without B-frames whose header claims 80 / 40 frames;
    - "avi_bframes": a 60-frame AVI with B-frames, whose packets carry decode-order timestamps only.
    """
    paths = {
        "cfr": write_video(folder / "cfr.mp4", 120, gop=12, b_frames=2),
        "long_gop": write_video(folder / "long_gop.mp4", 120, gop=50, b_frames=3),
        "vfr": write_video(folder / "vfr.mp4", 90, gop=12, b_frames=2, pts_ms=vfr_pts_ms(90)),
        "rotated": write_video(folder / "rotated.mp4", 60, gop=12, b_frames=2, rotation=90),
        "mkv": write_video(folder / "clip.mkv", 60, gop=12, b_frames=2),
        "avi_bframes": write_video(folder / "bframes.avi", 60, gop=12, b_frames=2, container_format="avi"),
    }
    avi = write_video(folder / "plain.avi", 60, gop=12, b_frames=0, container_format="avi")
    paths["count_high"] = patch_avi_frame_count(avi, folder / "count_high.avi", 80)
    paths["count_low"] = patch_avi_frame_count(avi, folder / "count_low.avi", 40)
    return paths
