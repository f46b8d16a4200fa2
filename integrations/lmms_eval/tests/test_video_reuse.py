"""Several questions about one video (as in Video-MME): the plugin decodes and encodes each video once and, with
PruneVid stage 2 off, prefills the shared prompt prefix once, with the answers and statistics of answering every
request on its own. The model runs in this process (``PVCInternVL.generate_until`` on hand-made requests, as
lmms-eval calls it), so that the test can count the decoder, the vision encoder and the prefill calls.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import NUM_FRAMES, TASKS

TASK, SPLIT = "video_questions", "test"
GEN_KWARGS = {"max_new_tokens": 12, "temperature": 0, "do_sample": False, "num_beams": 1}
QUESTIONS = ["What happens in the video?", "What colour is the animal?", "Which way does it move?"]


def write_second_video(path: Path) -> None:
    """A 2-second clip unlike the task's red-panda.mp4: a white square falling on a dark blue ground."""
    import av
    import numpy as np

    width, height, frames = 96, 64, 48
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1  # reproducible frames
        for index in range(frames):
            frame = np.zeros((height, width, 3), dtype=np.uint8)
            frame[...] = (20, 30, 110)
            top = index * (height - 12) // (frames - 1)
            frame[top : top + 12, 42:54] = (245, 245, 245)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> list[dict]:
    """Three questions about each of two videos, interleaved, with a text-only question among them."""
    folder = tmp_path_factory.mktemp("videos")
    panda, square = str(TASKS / "pvc_local" / "media" / "red-panda.mp4"), str(folder / "square.mp4")
    write_second_video(Path(square))
    order = [(panda, 0), (square, 0), (panda, 1), (None, 0), (square, 1), (panda, 2), (square, 2)]
    return [{"video": video, "question": QUESTIONS[q] if video else "What is the capital of France?"}
            for video, q in order]


def video_first(doc: dict) -> list[dict]:
    content = ([{"type": "video", "url": doc["video"]}] if doc["video"] else []) + [{"type": "text", "text": doc["question"]}]
    return [{"role": "user", "content": content}]


def question_first(doc: dict) -> list[dict]:
    """The question before the video: the prompts of one video differ before the video, so no prefix is shared."""
    return [{"role": "user", "content": [{"type": "text", "text": doc["question"]}, {"type": "video", "url": doc["video"]}]}]


def requests_for(docs: list[dict], doc_to_messages=video_first, gen_kwargs: dict | None = None) -> list:
    from lmms_eval.api.instance import Instance

    return [
        Instance(request_type="generate_until", idx=0, metadata={"task": TASK, "doc_id": i, "repeats": 1},
                 arguments=("", doc_to_messages, dict(gen_kwargs or GEN_KWARGS), i, TASK, SPLIT))
        for i in range(len(docs))
    ]


@pytest.fixture(scope="module")
def stage1_only(checkpoint, tmp_path_factory) -> Path:
    """The demo checkpoint with PruneVid stage 2 switched off in its config (stage 1 alone)."""
    folder = tmp_path_factory.mktemp("stage1") / "ckpt"
    shutil.copytree(checkpoint, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["prunevid"]["enable_stage2"] = False
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


class Counted:
    """Runs the plugin on the requests and records what the model does: videos decoded (the processor's
    ``load_video``), ``encode_media``, ``prefill`` and ``generate`` calls, frames through the vision encoder's
    embeddings, and per ``generate`` call the next-token logits of its steps (the language model's output layer)."""

    def __init__(self, lm, monkeypatch):
        self.lm = lm
        self.counts = {"decoded": 0, "encode_media": 0, "prefill": 0, "generate": 0, "encoded_frames": 0}
        self.steps: list[list[torch.Tensor]] = []  # per generate call, in call order
        self.active = False  # the processor's module is shared by every model: record during run() only
        for module, name, key in ((lm._prompt_module, "load_video", "decoded"), (lm.model, "encode_media", "encode_media"),
                                  (lm.model, "prefill", "prefill"), (lm.model, "generate", "generate")):
            monkeypatch.setattr(module, name, self._counting(getattr(module, name), key))
        self.hooks = [lm.model.vision_model.embeddings.register_forward_hook(self._frames),
                      lm.model.get_output_embeddings().register_forward_hook(self._next_token)]

    def _counting(self, function, key):
        def wrapper(*args, **kwargs):
            self.counts[key] += int(self.active)
            if key in ("generate", "prefill") and self.active:
                self.steps.append([])  # a prefill's logits land in a list of their own, dropped below
            try:
                return function(*args, **kwargs)
            finally:
                if key == "prefill" and self.active:
                    self.steps.pop()

        return wrapper

    def _frames(self, module, inputs, output):
        self.counts["encoded_frames"] += int(inputs[0].shape[0]) * int(self.active)

    def _next_token(self, module, inputs, output):
        if self.active:
            self.steps[-1].append(output[:, -1].detach().clone())

    def run(self, requests) -> list:
        self.active = True
        try:
            return self.lm.generate_until(requests)
        finally:
            self.active = False
            for hook in self.hooks:
                hook.remove()


def assert_same_steps(got: Counted, got_order: list[int], expected: Counted, expected_order: list[int]) -> None:
    """Every request went through the same generation steps with the same next-token logits (fp32; a shared
    prefix changes only the order of floating-point sums, far less than a wrong token or position anywhere in
    the prompt would). ``*_order``: the requests in the order of the run's ``generate`` calls, one each."""
    assert got.counts["generate"] == len(got_order) and expected.counts["generate"] == len(expected_order)
    got_steps, expected_steps = dict(zip(got_order, got.steps)), dict(zip(expected_order, expected.steps))
    for request in expected_order:
        assert len(got_steps[request]) == len(expected_steps[request]), request
        for step, (a, b) in enumerate(zip(got_steps[request], expected_steps[request])):
            assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-5), (request, step, (a - b).abs().max())


def make_lm(checkpoint: Path, docs: list[dict], **model_args):
    from lmms_eval_pvc.model import PVCInternVL

    lm = PVCInternVL(pretrained=str(checkpoint), num_frames=NUM_FRAMES, device="cpu", **model_args)
    lm.task_dict = {TASK: {SPLIT: docs}}
    return lm


def logged(run) -> tuple[object, list[str]]:
    """The result of ``run()`` and the plugin's log lines meanwhile."""
    from loguru import logger

    lines: list[str] = []
    handler = logger.add(lambda message: lines.append(str(message)), level="INFO")
    try:
        return run(), [line for line in lines if "pvc_internvl:" in line]
    finally:
        logger.remove(handler)


def table(results) -> list[tuple[str, dict]]:
    return [(result.text, result.token_counts.to_dict()) for result in results]


@pytest.mark.parametrize("setting", ["off", "prunevid", "stage1-only"])
def test_three_questions_per_video_answer_as_separate_requests(checkpoint, stage1_only, docs, monkeypatch, setting):
    """Two videos, three questions each, interleaved with a text question: one decode, one encode and (stage 2
    off) one prefill per video; answers and statistics equal those of the same requests answered one by one."""
    folder = stage1_only if setting == "stage1-only" else checkpoint
    prunevid = setting != "off"
    separate = Counted(make_lm(folder, docs, prunevid=prunevid, reuse_video=False), monkeypatch)
    expected = table(separate.run(requests_for(docs)))
    shared = Counted(make_lm(folder, docs, prunevid=prunevid), monkeypatch)
    got, log = logged(lambda: table(shared.run(requests_for(docs))))

    assert [text for text, _ in got] == [text for text, _ in expected]
    assert [counts for _, counts in got] == [counts for _, counts in expected]
    # reuse: the panda's questions (0, 2, 5), the square's (1, 4, 6), then the text; without: by kind, in order
    assert_same_steps(shared, [0, 2, 5, 1, 4, 6, 3], separate, [0, 1, 2, 4, 5, 6, 3])
    assert all(text for text, _ in got)
    videos, frames_per_video = 2, NUM_FRAMES * shared.lm.model.config.video_repeat_time
    assert (separate.counts["decoded"], separate.counts["encode_media"]) == (6, 0)  # each request on its own
    assert shared.counts["decoded"] == shared.counts["encode_media"] == videos
    assert shared.counts["encoded_frames"] == videos * frames_per_video
    assert separate.counts["encoded_frames"] == 6 * frames_per_video
    stage2 = setting == "prunevid"
    assert shared.counts["prefill"] == (0 if stage2 else videos)
    assert sum("PruneVid stage 2 prunes" in line for line in log) == (1 if stage2 else 0), log
    if prunevid:  # stage 1 merged the video's tokens before they were shared
        assert all(counts["visual_tokens_after_stage1"] < counts["visual_tokens"] for _, counts in got if counts["frames"])
    # the test can tell the videos apart: some question gets another answer about the other video
    assert any(got[panda][0] != got[square][0] for panda, square in ((0, 1), (2, 4), (5, 6))), got


def test_reuse_is_on_by_default_and_its_absence_is_logged_once(checkpoint, docs):
    _, log = logged(lambda: make_lm(checkpoint, docs, reuse_video=False, batch_size=2))
    assert sum("reuse_video=False: every video request decodes" in line for line in log) == 1, log
    default = make_lm(checkpoint, docs)
    assert default.reuse_video is True
    _, log = logged(lambda: make_lm(checkpoint, docs, batch_size=2))
    assert sum("answered one at a time" in line for line in log) == 1, log
    with pytest.raises(ValueError, match="reuse_video must be True or False"):
        make_lm(checkpoint, docs, reuse_video="sometimes")


@pytest.mark.parametrize("case", ["beams", "question-first"])
def test_settings_that_stop_sharing_the_prefill_say_so_once(checkpoint, docs, monkeypatch, case):
    """Beam search, and prompts whose questions come before the video, share the encoding but not the prefill:
    the log says why once, however many videos; the answers still equal separate requests."""
    gen_kwargs = {**GEN_KWARGS, "num_beams": 2} if case == "beams" else GEN_KWARGS
    doc_to_messages = question_first if case == "question-first" else video_first
    video_docs = [doc for doc in docs if doc["video"]]
    separate = Counted(make_lm(checkpoint, video_docs, reuse_video=False), monkeypatch)
    expected = table(separate.run(requests_for(video_docs, doc_to_messages, gen_kwargs)))
    shared = Counted(make_lm(checkpoint, video_docs), monkeypatch)
    got, log = logged(lambda: table(shared.run(requests_for(video_docs, doc_to_messages, gen_kwargs))))
    assert got == expected
    assert_same_steps(shared, [0, 2, 4, 1, 3, 5], separate, [0, 1, 2, 3, 4, 5])
    assert shared.counts["encode_media"] == 2 and shared.counts["prefill"] == 0
    reason = "num_beams > 1" if case == "beams" else "differ before the video ends"
    assert sum(reason in line for line in log) == 1, log


def test_one_question_per_video_needs_no_prefill(checkpoint, docs, monkeypatch):
    """A video asked about once is encoded through encode_media and answered without a prefix cache."""
    single = [docs[0], docs[1], docs[3]]
    shared = Counted(make_lm(checkpoint, single), monkeypatch)
    got = table(shared.run(requests_for(single)))
    separate = Counted(make_lm(checkpoint, single, reuse_video=False), monkeypatch)
    assert got == table(separate.run(requests_for(single)))
    assert_same_steps(shared, [0, 1, 2], separate, [0, 1, 2])
    assert shared.counts["encode_media"] == 2 and shared.counts["prefill"] == 0
