"""lmms-eval 0.7.3 on the demo checkpoint and the local task (three image questions incl. a two-image prompt,
three questions about one video, a text-only question), offline on CPU:

1. lmms-eval's generic ``huggingface`` model, batch size 1 and 2: answers equal apply_chat_template + generate;
2. the plugin model ``pvc_internvl``: answers equal the project's own path, stats in the sample log;
3. a 2-process torchrun run whose merged results equal the 1-process run;
4. a run killed after two samples that resumes with ``--use_cache`` and computes only the rest.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import (
    NUM_FRAMES,
    Reference,
    kill_group,
    lmms_command,
    lmms_env,
    read_samples,
    run_lmms,
    start_lmms,
    task_docs,
    wait_for,
)

DOCS = len(task_docs())
KINDS = {0: "image", 1: "image", 2: "image", 3: "video", 4: "text", 5: "video", 6: "video"}  # the task's docs
STAT_KEYS = ("visual_tokens", "visual_tokens_after_stage1", "visual_tokens_after_stage2", "prefill_flops", "data_flag")


def chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def plugin_batches(batch_size: int) -> list[list[int]]:
    """The plugin batches requests of the same kind (image / text), in request order; the questions about one
    video are answered one at a time (from the video's shared encoding and prefill)."""
    out = []
    for kind in ("image", "video", "text"):
        out += chunks([i for i in range(DOCS) if KINDS[i] == kind], 1 if kind == "video" else batch_size)
    return out


def test_task_covers_the_input_kinds():
    docs = task_docs()
    assert [len(d["images"]) for d in docs] == [1, 1, 2, 0, 0, 0, 0]
    assert [d["video"] for d in docs] == [None, None, None, "red-panda.mp4", None, "red-panda.mp4", "red-panda.mp4"]
    for doc in docs:
        for name in doc["images"] + ([doc["video"]] if doc["video"] else []):
            assert (Path(__file__).resolve().parents[1] / "tasks" / "pvc_local" / "media" / name).is_file()


def test_plugin_is_registered_through_the_entry_point():
    from lmms_eval.models import get_model, get_model_manifest

    manifest = get_model_manifest("pvc_internvl")
    assert manifest.chat_class_path == "lmms_eval_pvc.model.PVCInternVL"
    assert get_model("pvc_internvl").__name__ == "PVCInternVL"


# ------------------------------------------------------------------------------------------ 1. generic model
@pytest.fixture(scope="module")
def bf16_reference(checkpoint):
    return Reference(checkpoint, torch.bfloat16)  # lmms-eval's huggingface model loads bfloat16 weights


@pytest.mark.parametrize("batch_size", [1, 2])
def test_generic_huggingface_model(checkpoint, bf16_reference, tmp_path, batch_size):
    samples, _ = run_lmms(tmp_path, "huggingface", f"pretrained={checkpoint},trust_remote_code=True,device=cpu,device_map=cpu",
                          batch_size)
    # the generic model batches documents in order, mixing kinds; videos get the processor's default frame count
    expected, _ = bf16_reference.answers(chunks(list(range(DOCS)), batch_size), num_frames=None, decode="batch_decode")
    for doc_id, sample in samples.items():
        answer = sample["filtered_resps"] if isinstance(sample["filtered_resps"], str) else sample["filtered_resps"][0]
        assert answer.strip(), f"doc {doc_id}: empty answer"
        assert answer == expected[doc_id], f"doc {doc_id} ({KINDS[doc_id]}): {answer!r} != {expected[doc_id]!r}"


# ------------------------------------------------------------------------------------------ 2. plugin
@pytest.fixture(scope="module")
def fp32_reference(checkpoint):
    return Reference(checkpoint, torch.float32)


@pytest.fixture(scope="module")
def plugin_runs(checkpoint, tmp_path_factory):
    """Plugin runs shared by several tests: {(batch_size, prunevid): (samples, log)}."""
    runs = {}

    def get(batch_size: int, prunevid: bool):
        if (batch_size, prunevid) not in runs:
            tmp = tmp_path_factory.mktemp(f"plugin_b{batch_size}_p{int(prunevid)}")
            runs[(batch_size, prunevid)] = run_lmms(
                tmp, "pvc_internvl", f"pretrained={checkpoint},num_frames={NUM_FRAMES},prunevid={prunevid}", batch_size
            )
        return runs[(batch_size, prunevid)]

    return get


def answer_of(sample: dict) -> str:
    return sample["filtered_resps"] if isinstance(sample["filtered_resps"], str) else sample["filtered_resps"][0]


@pytest.mark.parametrize("batch_size,prunevid", [(1, False), (2, False), (2, True)])
def test_plugin_matches_the_project_path(fp32_reference, plugin_runs, batch_size, prunevid):
    samples, log = plugin_runs(batch_size, prunevid)
    assert f"prunevid={prunevid}" in log and f"num_frames={NUM_FRAMES}" in log
    expected, _ = fp32_reference.answers(plugin_batches(batch_size), prunevid=prunevid)
    single, single_stats = fp32_reference.answers([[i] for i in range(DOCS)], prunevid=prunevid)
    for doc_id, sample in samples.items():
        answer = answer_of(sample)
        assert answer, f"doc {doc_id}: empty answer"
        assert answer == expected[doc_id], f"doc {doc_id} ({KINDS[doc_id]}): {answer!r} != {expected[doc_id]!r}"
        # visual tokens / FLOPs of the sample, as generate(return_stats=True) gives them for the sample alone
        counts = sample["token_counts"][0]
        stats = single_stats[doc_id]["stats"]
        has_media = KINDS[doc_id] != "text"
        for key in STAT_KEYS:
            assert key in counts, f"doc {doc_id}: token_counts lacks {key}: {counts}"
            want = (stats[key][0] if has_media else 0) if key != "prefill_flops" else stats[key][0]
            assert counts[key] == pytest.approx(int(want) if key == "data_flag" else want), (doc_id, key, counts)
        assert counts["data_flag"] == {"image": 1 if doc_id < 2 else 2, "video": 3, "text": 0}[KINDS[doc_id]]
        assert counts["input_tokens"] > counts["visual_tokens"] >= counts["visual_tokens_after_stage2"]
        assert 0 < counts["output_tokens"] <= 16
        if KINDS[doc_id] == "video":
            assert counts["frames"] == NUM_FRAMES
            if prunevid:  # stage 1 merges redundant tokens of the video
                assert counts["visual_tokens_after_stage1"] < counts["visual_tokens"]
        assert counts["prefill_flops"] > 0
        assert single[doc_id], doc_id


# ------------------------------------------------------------------------------------------ 3. data parallel
def test_two_processes_equal_one(checkpoint, plugin_runs, tmp_path):
    one, _ = plugin_runs(1, False)
    two, log = run_lmms(tmp_path, "pvc_internvl", f"pretrained={checkpoint},num_frames={NUM_FRAMES},prunevid=False", 1,
                        nproc=2, timeout=400)
    ranks = set(re.findall(r"pvc_internvl: rank (\d) answers (\d+) request", log))
    assert {rank for rank, _ in ranks} == {"0", "1"}, f"expected both ranks to answer requests: {ranks}"
    assert sum(int(n) for _, n in ranks) >= DOCS  # lmms-eval may pad the shorter rank with a duplicate
    for doc_id in range(DOCS):
        assert answer_of(two[doc_id]) == answer_of(one[doc_id]), doc_id
        assert two[doc_id]["token_counts"] == one[doc_id]["token_counts"], doc_id
        assert two[doc_id]["answered"] == one[doc_id]["answered"]


# ------------------------------------------------------------------------------------------ 4. resume
def test_killed_run_resumes_from_the_cache(checkpoint, plugin_runs, tmp_path):
    cache = tmp_path / "cache"
    env = lmms_env(tmp_path, LMMS_CACHE_RUN_ID="pvc-resume-test")  # the same run id lets lmms-eval reopen the run
    model_args = f"pretrained={checkpoint},num_frames={NUM_FRAMES},prunevid=False"
    audit = cache / "runs" / "pvc-resume-test" / "rank_0.audit.jsonl"

    def finished() -> int:
        if not audit.exists():
            return 0
        return len([line for line in audit.read_text(encoding="utf-8").splitlines() if line.strip()])

    first = start_lmms(tmp_path / "first", "pvc_internvl", model_args, 1, "--use_cache", str(cache), env=env)
    try:
        wait_for(lambda: finished() >= 2, 240, first, "two cached answers")
    finally:
        kill_group(first)
    cached = {json.loads(line)["doc_id"] for line in audit.read_text(encoding="utf-8").splitlines() if line.strip()}
    assert 2 <= len(cached) < DOCS, f"killed after {len(cached)} answers; the test needs an unfinished run"
    assert not list((tmp_path / "first").rglob("*samples_*.jsonl")), "the first run was meant to be killed before the end"

    samples, log = run_lmms(tmp_path / "second", "pvc_internvl", model_args, 1, "--use_cache", str(cache), env=env)
    assert f"ResponseCache: {len(cached)}/{DOCS} cache hits" in log, log[-4000:]
    assert f"pvc_internvl: rank 0 answers {DOCS - len(cached)} request(s)" in log, log[-4000:]
    one, _ = plugin_runs(1, False)
    for doc_id in range(DOCS):
        assert answer_of(samples[doc_id]) == answer_of(one[doc_id]), doc_id
        # answers served from the cache carry no stats (lmms-eval caches the text only); the rest were computed now
        counts = samples[doc_id]["token_counts"][0]
        assert (counts is None) == (doc_id in cached), (doc_id, counts)

    third, log = run_lmms(tmp_path / "third", "pvc_internvl", model_args, 1, "--use_cache", str(cache), env=env)
    assert f"all {DOCS} requests served from cache" in log, log[-4000:]
    assert {d: answer_of(s) for d, s in third.items()} == {d: answer_of(s) for d, s in samples.items()}


def test_unknown_model_args_are_refused(checkpoint, tmp_path):
    done = subprocess.run(lmms_command("pvc_internvl", f"pretrained={checkpoint},num_frame=8", 1, tmp_path / "out"),
                          env=lmms_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "unknown model_args ['num_frame']" in done.stdout + done.stderr
    assert not list(tmp_path.rglob("*samples_*.jsonl"))
