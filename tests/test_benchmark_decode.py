"""benchmarks/decode.py, the decode-time benchmark: its helpers on a tiny synthetic video (no timings checked).

Every reader gives the same frames at the official indices, a cached video is reused, the results JSON has
the documented structure, and the must-show targets are computed from the medians as stated.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("av", reason="PyAV (av) is needed to write and read the benchmark's videos")
from benchmarks import decode as D  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--lengths", "0.05", "--resolutions", "192x96", "--segments", "8", "--gop", "10", "--repeats", "2"]


def tiny_spec() -> D.VideoSpec:
    return D.video_spec("192x96", 192, 96, 0.05, fps=30, gop=10)  # 90 frames, keyframes every 10


def test_the_painted_frame_number_reads_back():
    painter = D.Painter(192, 96)
    for index in (0, 1, 15, 16, 255, 4097, 107999):
        yuv = painter.paint(index)
        grey = (yuv[:96].astype(float) - 16) * 255 / 219  # the luma as the RGB grey level of the code squares
        assert D.frame_number(grey) == index


def test_every_reader_gives_the_official_frames(tmp_path):
    spec = tiny_spec()
    path, seconds, cached = D.ensure_video(spec, tmp_path, log=lambda message: None)
    assert not cached and seconds > 0 and spec.frames == 90 and D.keyframe_count(path) == 9
    assert D.ensure_video(spec, tmp_path, log=lambda message: None) == (path, seconds, True)  # cached: reused
    readers = [r for r in D.READERS if r not in D.DECORD or D.decord_available()]
    samples, checks = D.measure([spec], {spec.name: path}, readers, segments=8, repeats=1, log=lambda message: None)
    assert [(s["reader"], s["repeat"]) for s in samples] == [(r, 0) for r in readers]
    assert len(checks) == len(readers)
    for check in checks:
        assert check["frames"] == 8 and check["shape"] == [96, 192, 3]
        assert check["identical_to_sequential"] and check["frame_numbers_ok"], check
    assert D.expected_indices(spec, 8) == [5, 16, 27, 38, 49, 61, 72, 83]  # half to even: 44.5 -> 44


def test_a_changed_parameter_encodes_again(tmp_path):
    spec = tiny_spec()
    path, _, _ = D.ensure_video(spec, tmp_path, log=lambda message: None)
    meta = path.with_name(path.name + ".json")
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "generator": -1}))
    assert D.ensure_video(spec, tmp_path, log=lambda message: None)[2] is False


def test_results_have_the_documented_structure(tmp_path):
    args = D.parse_args(["--out", str(tmp_path / "out"), "--videos", str(tmp_path / "videos"), *TINY])
    results = D.run(args, log=lambda message: None)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with_plot = False
    else:
        with_plot = True
    paths = D.write_reports(results, args.out, with_plot=with_plot)
    assert [p.name for p in paths] == ["results_decode.json", "results_decode.md", "results_decode.png"][: len(paths)]
    saved = json.loads(paths[0].read_text())
    assert set(saved) == {"parameters", "environment", "videos", "samples", "checks", "summary", "targets"}
    readers = saved["parameters"]["readers"]
    assert readers[0] == "pyav-sequential" and saved["parameters"]["segments"] == 8
    assert [v["name"] for v in saved["videos"]] == ["192x96_0.05min"] and saved["videos"][0]["keyframes"] == 9
    counts = saved["videos"][0]["decoded_frames"]  # sampled frames 5, 16, ..., 83 of 90; keyframes 0, 10, ..., 80
    assert counts["pyav-sequential"] == 84 and counts["pyav-seek seeks"] == 7
    assert counts["pyav-seek"] == 6 + 7 + 8 + 9 + 10 + 2 + 3 + 4  # from keyframe 0, 10, 20, 30, 40, 60, 70, 80
    assert len(saved["samples"]) == 2 * len(readers)
    for sample in saved["samples"]:
        assert set(sample) == {"video", "reader", "repeat", "seconds", "cpu_seconds"} and sample["seconds"] > 0
    assert all(c["identical_to_sequential"] and c["frame_numbers_ok"] for c in saved["checks"])
    assert [(row["reader"], row["n"]) for row in saved["summary"]] == [(r, 2) for r in readers]
    for row in saved["summary"]:
        assert row["min_s"] <= row["median_s"] <= row["max_s"]
    assert {t["status"] for t in saved["targets"]} == {"not measured"}  # no 10- or 60-minute video here
    text = paths[1].read_text()
    assert text.startswith("# Video decode time against video length") and "## Targets (issue 18)" in text
    assert "all identical, bit for bit, and all at the official indices" in text
    recorded = saved["videos"][0]["encode_s"]
    saved["videos"][0]["encode_s"] = None  # as in results from cached videos made before times were recorded
    assert D.fill_from_cache(saved, args.videos)["videos"][0]["encode_s"] == recorded > 0


def row(resolution: str, minutes: float, reader: str, median: float) -> dict:
    return {"resolution": resolution, "length_min": minutes, "reader": reader, "median_s": median}


def test_targets_follow_the_medians():
    summary = [row("480p", 60, "pyav-sequential", 100.0), row("480p", 60, "pyav-auto", 8.0),
               row("480p", 10, "pyav-auto", 6.0), row("480p", 60, "decord", 9.0), row("480p", 60, "decord-batch", 7.5)]
    found = {t["target"]: t for t in D.targets(summary, ["480p"], ["pyav-sequential", "pyav-auto", "decord",
                                                                    "decord-batch"])}
    speedup = found["480p: pyav-auto >= 10x faster than pyav-sequential at 60 min"]
    assert speedup["status"] == "PASS" and math.isclose(speedup["value"], 12.5)
    versus_decord = found["480p: pyav-auto no slower than decord at 60 min"]
    assert versus_decord["status"] == "MISS" and "decord-batch 7.50 s" in versus_decord["detail"]  # the faster one
    growth = found["480p: pyav-auto at 60 min <= 1.5x its 10-min time"]
    assert growth["status"] == "PASS" and math.isclose(growth["value"], 8 / 6)
    assert len(found) == 3  # pyav-seek was not timed


@pytest.mark.parametrize("option,message", [
    (["--lengths", "0,10"], "comma-separated minutes"),
    (["--resolutions", "100x50"], "at least 192x96"),
    (["--readers", "pyav-seek,fast"], "unknown reader 'fast'"),
    (["--readers", "pyav-seek"], "must include pyav-sequential"),
])
def test_bad_options_are_one_error_line(option, message):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "decode.py"), *option], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("decode.py: error:")
