"""The seeking PyAV reader of media.py: the same frames as sequential decoding (and as decord) on every kind of
test video, the cost rule that chooses between seeking and decoding on, PyAV as the default backend and decord's
refusal of the videos it misreads."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from transformers.testing_utils import CaptureLogger

from pvc_internvl import media as M

av = pytest.importorskip("av", reason="PyAV (av) is needed to write and read the test videos")
from tests.videos import frame_id, make_test_videos  # noqa: E402  (needs av)

REQUESTS = [(4, None), (8, None), (16, None), (64, None), (4, (0.5, 1.5)), (8, (0.5, 1.5)), (16, (0.2, 1.9)),
            (64, (1.0, 1.8))]
SEEKABLE = ["cfr", "long_gop", "vfr", "rotated", "mkv", "count_high", "count_low"]
# decord 0.6.0 agrees bit for bit on MP4 and Matroska; on the rotated video it returns garbled [64, 48, 4] frames,
# and it places AVI frames wrongly (frame ids 3, 10, 6, 1, ... for 8 segments), so those are left out.
DECORD_AGREES = ["cfr", "long_gop", "vfr", "mkv"]
TRUE_COUNT = {"count_high": 60}  # the header claims 80: sampling is redone over the 60 frames the file holds
HEADER_COUNT = {"count_low": 40}  # the header claims 40 of 60: PyAV samples over the header's count


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    return make_test_videos(tmp_path_factory.mktemp("seek_videos"))


def read(path: Path, bound, num_segments: int, strategy: str) -> list[np.ndarray]:
    return M._read_frames_pyav(str(path), bound, num_segments, strategy=strategy)


def same_frames(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype == np.uint8 and np.array_equal(x, y) for x, y in zip(a, b))


def expected_ids(path: Path, name: str, bound, num_segments: int) -> list[int]:
    """The official indices over the frame count PyAV samples from, at the stream's average rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps, count = float(stream.average_rate), stream.frames
    count = TRUE_COUNT.get(name, HEADER_COUNT.get(name, count or 60))
    return M.get_index(bound, fps, count - 1, num_segments=num_segments).tolist()


@pytest.mark.parametrize("name", SEEKABLE)
@pytest.mark.parametrize("num_segments,bound", REQUESTS, ids=[f"{n}-{b}" for n, b in REQUESTS])
def test_seeking_gives_the_sequential_frames(videos, name, num_segments, bound):
    sequential = read(videos[name], bound, num_segments, "sequential")
    assert [frame_id(f) for f in sequential] == expected_ids(videos[name], name, bound, num_segments)
    assert same_frames(read(videos[name], bound, num_segments, "seek"), sequential)  # a miss would raise
    assert same_frames(read(videos[name], bound, num_segments, "auto"), sequential)
    if name in DECORD_AGREES:
        pytest.importorskip("decord", reason="decord is not installed; PyAV is compared with itself only")
        assert same_frames(M._read_frames_decord(str(videos[name]), bound, num_segments), sequential)


def test_test_videos_have_what_they_claim(videos):
    """B-frames (pts out of decode order), GOP lengths, irregular gaps, rotation metadata and header counts."""
    for name, keyframes in [("cfr", (0, 12, 24)), ("long_gop", (0, 50, 100)), ("vfr", (0, 12, 24))]:
        index = M._pyav_index(av, str(videos[name]))
        assert index.keyframes[:3] == keyframes
        with av.open(str(videos[name])) as container:
            pts = [p.pts for p in container.demux(video=0) if p.size]
        assert pts != sorted(pts), f"{name} has no B-frames"
    gaps = np.diff(M._pyav_index(av, str(videos["vfr"])).pts)
    assert len(set(gaps.tolist())) > 3
    with av.open(str(videos["rotated"])) as container:
        frame = next(container.decode(video=0))
    if hasattr(av.video.stream.VideoStream, "set_display_rotation"):  # else this PyAV could not write it
        assert frame.rotation == 90
    assert frame.to_ndarray(format="rgb24").shape == (48, 64, 3)
    assert read(videos["rotated"], None, 4, "seek")[0].shape == (48, 64, 3)  # pixels as stored, not rotated
    assert [M._pyav_stream_info(av, str(videos[n]))[0] for n in ("mkv", "count_high", "count_low")] == [60, 80, 40]


def test_header_count_too_high_resamples_over_the_frames_held(videos):
    with CaptureLogger(M.logger) as captured:
        frames = read(videos["count_high"], None, 8, "auto")
    assert "reports 80 frames but decodes 60" in captured.out
    assert [frame_id(f) for f in frames] == M.get_index(None, 30.0, 59, num_segments=8).tolist()


def test_decode_order_timestamps_fall_back_to_sequential(videos):
    # AVI stores no presentation times: with B-frames the packets' pts follow decode order, which the seeking
    # reader notices (the decoder's frames do not follow its index); 'auto' then decodes sequentially.
    sequential = read(videos["avi_bframes"], None, 16, "sequential")
    assert [frame_id(f) for f in sequential] == M.get_index(None, 30.0, 59, num_segments=16).tolist()
    with pytest.raises(M._SeekMiss, match="should have pts"):
        read(videos["avi_bframes"], None, 16, "seek")
    assert same_frames(read(videos["avi_bframes"], None, 16, "auto"), sequential)


def test_default_backend_is_pyav_even_with_decord_installed(videos, monkeypatch):
    def no_decord(*args, **kwargs):
        raise AssertionError("decord was used without backend='decord'")

    monkeypatch.setattr(M, "_read_frames_decord", no_decord)
    for name in ("cfr", "rotated", "count_high"):
        frames = M.load_video_frames(videos[name], None, 8)
        assert same_frames(frames, read(videos[name], None, 8, "sequential"))
    assert frames[0].shape == (48, 64, 3)


def rotation_written() -> bool:
    return hasattr(av.video.stream.VideoStream, "set_display_rotation")


@pytest.mark.parametrize("name,phrase", [("rotated", "90-degree display rotation"), ("count_high", "this is 'avi'"),
                                         ("avi_bframes", "wrong frames on AVI")])
def test_decord_refuses_what_it_misreads(videos, name, phrase):
    if name == "rotated" and not rotation_written():
        pytest.skip("this PyAV cannot write a display rotation")
    with pytest.raises(ValueError) as info:  # refused before decord is imported: runs without decord too
        M.load_video_frames(videos[name], None, 8, backend="decord")
    assert phrase in str(info.value) and str(videos[name]) in str(info.value)
    assert "backend=None or 'pyav'" in str(info.value)


@pytest.mark.parametrize("name", ["cfr", "mkv"])
def test_decord_reads_mp4_and_matroska_when_asked(videos, name):
    pytest.importorskip("decord", reason="decord is not installed")
    frames = M.load_video_frames(videos[name], None, 8, backend="decord")
    assert same_frames(frames, read(videos[name], None, 8, "sequential"))


def test_without_pyav_videos_are_refused_with_the_install_line(videos, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    for backend in (None, "pyav", "decord"):  # decord too: PyAV checks its input
        with pytest.raises(ImportError, match="pip install av"):
            M.load_video_frames(videos["cfr"], None, 8, backend=backend)


def test_unknown_strategy_is_refused(videos):
    with pytest.raises(ValueError, match="strategy='fast'"):
        read(videos["cfr"], None, 4, "fast")


# ------------------------------------------------------------------------------------------------
# The cost rule
# ------------------------------------------------------------------------------------------------


def distinct(indices: np.ndarray) -> list[int]:
    return sorted(set(indices.tolist()))


def seeks(targets: list[int], keyframes: list[int]) -> bool:
    """Whether 'auto' seeks at all for these targets (else it decodes sequentially)."""
    return any(key is not None for key in M._plan_seeks(targets, keyframes, M.SEEK_COST_FRAMES))


def test_long_sparse_request_seeks_short_dense_request_decodes_on():
    ten_minutes = distinct(M.get_index(None, 30.0, 17999, num_segments=64))  # gaps of ~281 frames
    assert seeks(ten_minutes, list(range(0, 18000, 250)))
    four_seconds = distinct(M.get_index(None, 30.0, 119, num_segments=64))  # gaps of ~2 frames
    assert not seeks(four_seconds, list(range(0, 120, 12)))
    sparse_short_gops = distinct(M.get_index(None, 30.0, 599, num_segments=16))  # gaps of 37 > GOP 12 + 16
    assert seeks(sparse_short_gops, list(range(0, 600, 12)))
    all_intra = distinct(M.get_index(None, 30.0, 599, num_segments=16))  # every frame a keyframe
    assert seeks(all_intra, list(range(600)))


def test_plan_seeks_only_when_the_keyframe_is_ahead():
    keyframes = [0, 250, 500]
    # 260 needs keyframe 250 (ahead of frame 0 by more than the seek cost); 270 and 300 lie in the same GOP
    assert M._plan_seeks([260, 270, 300], keyframes, seek_cost=16) == [250, None, None]
    # seek cost 0: seek whenever the keyframe is past the decoder; after 499 the decoder stands at keyframe 500
    assert M._plan_seeks([5, 260, 499, 510], keyframes, seek_cost=0) == [None, 250, None, None]
    assert M._plan_seeks([5, 260, 498, 510], keyframes, seek_cost=0) == [None, 250, None, 500]
    # keyframe 250 exactly seek_cost frames past the decoder (at 234): a tie decodes on
    assert M._plan_seeks([233, 260], keyframes, seek_cost=16) == [None, None]
    assert M._plan_seeks([232, 260], keyframes, seek_cost=16) == [None, 250]
