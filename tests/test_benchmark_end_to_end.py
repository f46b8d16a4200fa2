"""``benchmarks/run.py --end-to-end`` on tiny shapes: the clocks and the depth scaling, the prompt layout taken
from the package's processor, and the whole mode (time to first token by stage, several questions with identical
answers, the report). No timing is checked."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("av", reason="PyAV (av) is needed to write and read the benchmark's video")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import analysis  # noqa: E402
import end_to_end as E  # noqa: E402
import harness  # noqa: E402
import report  # noqa: E402

from tests.tiny import tiny_model  # noqa: E402

TINY_WIDTHS = dict(vision=dict(hidden_size=32, num_attention_heads=1, intermediate_size=64, time_embed_dim=16),
                   llm=dict(hidden_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                            intermediate_size=128))


def test_the_clocks_record_what_runs_inside():
    inner, outer = torch.nn.Linear(4, 4), torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    with E.clocking([inner], "cpu") as clock:
        for _ in range(3):
            inner(torch.ones(1, 4))
        outer(torch.ones(1, 4))  # not clocked
    assert len(clock.take()) == 3 and clock.take() == []
    inner(torch.ones(1, 4))
    assert clock.calls == []  # the hooks are gone

    class Owner:
        @staticmethod
        def work(seconds):
            time.sleep(seconds)
            return seconds

    with E.call_clock(Owner, "work") as seconds:
        assert Owner.work(0.01) == 0.01
    assert len(seconds) == 1 and seconds[0] >= 0.01
    assert Owner.work.__name__ == "work"  # restored
    assert E.scaled(2.0, 0.5, 24) == 2.0 + 23 * 0.5


def test_the_prompt_layout_is_the_processors():
    runs = harness.text_runs(12)
    assert len(runs) == 13
    layout = harness.video_prompt([64] * 12)
    assert layout.visual_tokens == 12 * 64 and layout.length == 12 * 64 + sum(runs)
    counts = [5, 0, 7] + [1] * 9
    merged = harness.video_prompt(counts)
    assert merged.visual_tokens == sum(counts) and merged.length == sum(counts) + sum(runs)
    mask = merged.visual_mask[0]
    assert not mask[: runs[0]].any() and mask[runs[0] : runs[0] + 5].all() and not mask[runs[0] + 5]
    # frames 1-9 and 10-12 differ by one digit token in their "Frame{i}:" line, as the tokenizer splits digits
    assert runs[9] == runs[1] + 1 and harness.prompt_summary(12)["between_frames_tokens"] == f"{runs[1]}-{runs[9]}"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path, meta = E.video_file("192x96", 0.2, tmp_path_factory.mktemp("videos"), log=lambda message: None)
    return path, meta


def test_the_mode_measures_every_stage_and_identical_answers(video, tmp_path):
    plan = E.Plan(frames=8, vision_frames=2, repeats=2, decode_steps=2, answer_tokens=3)
    widths = harness.BenchSpec(False, "cpu", torch.float32, None, TINY_WIDTHS["vision"], TINY_WIDTHS["llm"])

    def workload_models():
        model = tiny_model(pvc=True, temporal_random=True)
        return model, harness.chat_processor(model.config)

    section = E.run(plan, *video, widths, workload_models, log=lambda message: None)
    section["environment"] = {"command": "benchmarks/run.py --end-to-end", "date": "today", "wall_time_s": 1.0,
                              "device": "cpu", "cpu": "test", "threads": 1}
    samples = section["one_layer"]["samples"]
    counts = {(s["stage"], s["config"]): 0 for s in samples}
    for s in samples:
        counts[s["stage"], s["config"]] += 1
    assert counts == {("decode", "all"): 2, ("preprocess", "all"): 2, ("vision", "internvl2"): 2, ("vision", "pvc"): 2,
                      ("stage1", "pvc_prunevid"): 2, ("prefill", "internvl2"): 1, ("decode_step", "internvl2"): 2,
                      ("prefill", "pvc"): 2, ("decode_step", "pvc"): 4, ("prefill", "pvc_prunevid"): 2,
                      ("decode_step", "pvc_prunevid"): 4}
    depth = section["one_layer"]["models"]["real_depth"]
    assert depth == {"vision": 24, "llm": 32}  # config.json's
    for s in samples:
        if s["stage"] == "vision":  # 2 of 8 frames, one layer of 24
            assert math.isclose(s["estimate_s"], (s["seconds"] + 23 * s["layer_s"]) * 4)
        elif s["stage"] == "prefill" and s["config"] == "pvc_prunevid":  # layers 0..10 on the stage-1 prompt
            assert math.isclose(s["estimate_s"], s["seconds"] + 10 * s["layer_s"] + 21 * s["pruned_layer_s"])
            assert s["pruned_tokens"] < s["tokens"]
        elif s["layer_s"] is not None:
            assert math.isclose(s["estimate_s"], s["seconds"] + 31 * s["layer_s"]) and 0 < s["layer_s"] < s["seconds"]
    tokens = section["one_layer"]["models"]["tokens"]
    assert tokens["internvl2"]["visual"] == 8 * 256 and tokens["pvc"]["visual"] == 8 * 64
    assert tokens["pvc_prunevid"]["visual_after_stage2"] < tokens["pvc_prunevid"]["visual"] < 8 * 64

    work = section["workload"]["samples"]
    assert [w["order"] for w in work] == [["separate", "reuse"], ["reuse", "separate"]]
    for w in work:
        assert w["answers_identical"] == [True] * 3 and w["prompts_identical"] == [True] * 3
        calls, reused = w["separate"], w["reuse"]["questions"]
        assert len({c["prompt_tokens"] for c in calls}) == 3 and all(len(c["answer"]) == 3 for c in calls)
        assert all(c["vision_s"] > 0 for c in calls) and all(q["vision_s"] == 0 for q in reused)  # encoded once
    assert 0 < work[0]["reuse"]["prefix_tokens"] < min(c["prompt_tokens"] for c in work[0]["separate"])

    paths = report.write_reports({"end_to_end": section}, tmp_path / "results")
    assert [p.name for p in paths] == ["results.json", "results.md"]
    saved = json.loads(paths[0].read_text())
    summary = saved["end_to_end"]["summary"]
    rows = summary["ttft"]
    assert rows["pvc_prunevid"]["vision_s"] == rows["pvc"]["vision_s"] and rows["pvc"]["stage1_s"] == 0.0
    assert math.isclose(rows["pvc"]["ttft_s"], sum(rows["pvc"][f"{k}_s"] for k in analysis.TTFT_STAGES))
    workload = summary["workload"]
    assert workload["answers_identical"] and math.isclose(
        workload["ratio"], workload["reuse"]["total"] / workload["separate"]["total"])
    assert [t["target"][:2] for t in saved["targets"]] == ["6.", "7."] and saved["targets"][0]["status"] == "PASS"
    text = paths[1].read_text()
    for heading in ("### Time to first token at the 8B shapes", "### Several questions about one video",
                    "### Decode time against video length"):
        assert heading in text


@pytest.mark.parametrize("options,message", [
    (["--end-to-end", "--full-size", "--device", "cuda"], "--end-to-end measures the 8B widths one layer at a time"),
    (["--end-to-end", "--video-resolution", "100x50"], "at least 192x96"),
    (["--end-to-end", "--vision-frames", "0"], "argument --vision-frames: must be at least 1"),
])
def test_bad_options_are_one_error_line(options, message):
    done = subprocess.run([sys.executable, str(Path(harness.ROOT) / "benchmarks" / "run.py"), *options],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("run.py: error:")
