"""End-to-end timing (issue 18): time to first token of a 64-frame video split into stages, and several
questions about one video. ``python benchmarks/run.py --end-to-end`` runs both and adds the section
``end_to_end`` to results.json / results.md in ``--out``.

Both parts read one synthetic H.264 video (made and cached by ``decode.py``) with the package's reader
(``load_video``: PyAV, seeking where that is cheaper), timing its decoding apart from the preprocessing.

* **Time to first token at the 8B shapes** (InternVL2 at 256 tokens per frame, PVC at 64, PVC + PruneVid): the
  8B model does not fit this CPU's time budget, so every model stage runs at its real width with one layer, and
  the time spent inside that layer (:class:`ModuleClock`) scales it to the real depth: ``total + (depth - 1) x
  layer`` (PruneVid: its first layer on the stage-1 prompt, the rest on the pruned one). The vision encoder runs
  ``vision_frames`` frames and is scaled to all frames (its per-frame work does not depend on the other frames
  but for temporal attention, a small term); one pass over all frames checks that scaling and gives the tokens
  PruneVid stage 1 merges. The LLM runs the real prompt lengths (see ``harness.video_prompt``).
* **Several questions about one video** at the reduced widths of ``run.py`` (real token and layer counts): three
  separate ``generate(**processor.apply_chat_template(...))`` calls, each decoding and encoding the video, against
  one ``encode_media``, one ``prefill`` of the shared prefix (system prompt + video) and three ``generate`` calls
  on copies of its cache. The answers must be identical.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import json
import pathlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace

import torch

import decode
import harness
import measure
import pvc_internvl.media as media
from analysis import ALL, BASE, PRUNEVID, PVC
from pvc_internvl.prunevid import CACHE_ARG

HERE = pathlib.Path(__file__).resolve().parent
QUESTIONS = (harness.QUESTION, "What color is the background of the video?\nA. red\nB. green\nC. blue\nD. grey",
             "How many squares move in the video?\nA. none\nB. one\nC. two\nD. three")


@dataclass(frozen=True)
class Plan:
    """What the end-to-end mode measures."""

    frames: int = 64
    vision_frames: int = 8  # frames the one-layer 8B vision encoder runs per measurement
    repeats: int = 3
    large_repeats: int = 1  # repeats of the InternVL2 8B prefill (one layer on ~17k tokens: 1-2 minutes here)
    decode_steps: int = 6
    answer_tokens: int = 8


# ------------------------------------------------------------------------------------------------ clocks
class ModuleClock:
    """Seconds spent inside ``modules`` per call (forward pre- and post-hooks, device synchronised)."""

    def __init__(self, modules: list[torch.nn.Module], device: str) -> None:
        self.calls: list[float] = []
        self.device, self._start = device, 0.0
        self._hooks = [h for m in modules for h in (m.register_forward_pre_hook(self._enter),
                                                     m.register_forward_hook(self._leave))]

    def _enter(self, *_) -> None:
        harness.sync(self.device)
        self._start = time.perf_counter()

    def _leave(self, *_) -> None:
        harness.sync(self.device)
        self.calls.append(time.perf_counter() - self._start)

    def take(self) -> list[float]:
        """The calls recorded since the last ``take``."""
        calls, self.calls = self.calls, []
        return calls

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()


@contextlib.contextmanager
def clocking(modules: list[torch.nn.Module], device: str) -> Iterator[ModuleClock]:
    clock = ModuleClock(modules, device)
    try:
        yield clock
    finally:
        clock.close()


@contextlib.contextmanager
def call_clock(owner: object, name: str) -> Iterator[list[float]]:
    """Record the seconds of every call of ``owner.name`` (a module-level function) while the block runs."""
    original, seconds = getattr(owner, name), []

    def timed_call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    setattr(owner, name, timed_call)
    try:
        yield seconds
    finally:
        setattr(owner, name, original)


class FirstToken:
    """A ``generate`` streamer that notes when the first new token arrives (the prompt arrives first, whole)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def put(self, ids: torch.Tensor) -> None:
        if self.at is None and ids.numel() == 1:
            self.at = time.perf_counter()

    def end(self) -> None:
        """Nothing to do."""


def scaled(total_s: float, layer_s: float, depth: int) -> float:
    """A one-layer time scaled to ``depth`` layers: the other ``depth - 1`` layers cost what the measured one did."""
    return total_s + (depth - 1) * layer_s


def load_video(path: pathlib.Path, frames: int) -> tuple[torch.Tensor, float, float]:
    """``media.load_video`` of ``frames`` frames: (pixel values, seconds decoding, seconds preprocessing)."""
    with call_clock(media, "load_video_frames") as decoding:
        start = time.perf_counter()
        pixels, _ = media.load_video(str(path), num_segments=frames)
        total = time.perf_counter() - start
    return pixels, decoding[0], total - decoding[0]


# ------------------------------------------------------------------------------------ 8B shapes, one layer
class OneLayer:
    """The 8B-shape models with one vision and one LLM layer (real widths, fp32) and their measurements."""

    def __init__(self, plan: Plan, video: pathlib.Path, spec: harness.BenchSpec) -> None:
        """``spec``: the widths (its defaults: config.json's, the 8B ones); the depths are config.json's too."""
        self.plan, self.device, self.video = plan, spec.device, video
        full = json.loads(harness.FULL_CONFIG.read_text())
        self.depth = {"vision": full["vision_config"]["num_hidden_layers"],
                      "llm": full["llm_config"]["num_hidden_layers"]}
        spec = replace(spec, vision={**spec.vision, "num_hidden_layers": 1}, llm={**spec.llm, "num_hidden_layers": 1})
        self.pvc = harness.build_pvc(spec)
        self.models = {BASE: harness.build_baseline(spec, self.pvc), PVC: self.pvc}
        self.lm = self.pvc  # as a causal LM: the calls below give it embeddings, no media
        self.settings = harness.prunevid_settings()
        self.one_layer_settings = self.settings.merged({"selected_layer": 0}, 1)
        self.samples: list[dict] = []
        self.tokens: dict = {}
        self.check: dict = {}

    def add(self, stage: str, config: str, repeat: int, seconds: float, layer_s: float | None, estimate_s: float,
            **extra) -> None:
        self.samples.append({"stage": stage, "config": config, "repeat": repeat, "seconds": seconds,
                             "layer_s": layer_s, "estimate_s": estimate_s, **extra})

    def vision(self, config: str, pixels: torch.Tensor, repeat: int) -> None:
        """The one-layer encoder on ``pixels`` (scaled to the real depth and to ``plan.frames`` frames)."""
        model = self.models[config]
        with clocking([model.vision_model.encoder.layers[0]], self.device) as layer:
            seconds, _ = measure.time_vision(model, pixels, self.device)
        layer_s = sum(layer.take())
        estimate = scaled(seconds, layer_s, self.depth["vision"]) * self.plan.frames / pixels.shape[0]
        self.add("vision", config, repeat, seconds, layer_s, estimate, frames=pixels.shape[0])

    def dense(self, config: str, layout: harness.PromptLayout, visual: torch.Tensor, repeat: int) -> None:
        """Prefill and decode steps of one LLM layer at the real prompt length, scaled to the real depth."""
        hidden, depth = self.lm.config.llm_config.hidden_size, self.depth["llm"]
        embeds = measure.prompt_embeds(layout, visual, hidden, torch.float32, self.device)
        with clocking([self.lm.get_decoder().layers[0]], self.device) as layer:
            result = measure.time_dense_prefill(self.lm, embeds, self.device)
            prefill_layer = layer.take()[0]
            steps = measure.dense_decode_steps(self.lm, result, layout.length, self.plan.decode_steps, self.device)
            step_layers = layer.take()
        self.add("prefill", config, repeat, result.seconds, prefill_layer, scaled(result.seconds, prefill_layer, depth),
                 tokens=layout.length)
        for step, step_layer in zip(steps, step_layers):
            self.add("decode_step", config, repeat, step, step_layer, scaled(step, step_layer, depth))

    def pruned(self, stage1, repeat: int) -> None:
        """PruneVid stage 2 with the one layer as its selected layer: layers 0..M run the stage-1 prompt (the one
        measured, M more scaled), the rest the pruned prompt (a dense layer at that length scaled)."""
        layout = harness.video_prompt(stage1.frame_token_counts)
        hidden, depth, chosen = self.lm.config.llm_config.hidden_size, self.depth["llm"], self.settings.selected_layer
        embeds = measure.prompt_embeds(layout, stage1.features, hidden, torch.float32, self.device)
        groups, settings = stage1.group_sizes, self.one_layer_settings
        with clocking([self.lm.get_decoder().layers[0]], self.device) as layer:
            result = measure.time_pruned_prefill(self.lm, embeds, layout, groups, settings, self.device)
            first_layer = layer.take()[0]
            kept = result.stats["prefill_len_pruned"][0]
            short = torch.randn(1, kept, hidden, generator=torch.Generator().manual_seed(repeat)).to(self.device)
            measure.time_dense_prefill(self.lm, short, self.device)  # a layer after M, on the pruned length
            after_layer = layer.take()[0]
            steps = measure.pruned_decode_steps(self.lm, embeds, layout, groups, settings, self.plan.decode_steps,
                                                self.device)
            step_layers = layer.take()[1:]  # the first call is the prefill
        estimate = result.seconds + chosen * first_layer + (depth - chosen - 1) * after_layer
        self.add("prefill", PRUNEVID, repeat, result.seconds, first_layer, estimate, tokens=layout.length,
                 pruned_tokens=kept, pruned_layer_s=after_layer)
        for step, step_layer in zip(steps, step_layers):
            self.add("decode_step", PRUNEVID, repeat, step, step_layer, scaled(step, step_layer, depth))
        self.tokens[PRUNEVID] = {"visual": layout.visual_tokens, "prompt": layout.length, "prompt_after_stage2": kept,
                                 "visual_after_stage2": result.stats["visual_tokens_kept"][0]}

    def warm_up(self) -> tuple[torch.Tensor, torch.Tensor, object]:
        """Untimed passes (reader, kernels, allocator); then the one pass over all frames that checks the frame
        scaling and gives stage 1 its tokens. Returns the pixels, PVC's tokens of all frames and stage 1's result."""
        pixels, _, _ = load_video(self.video, self.plan.frames)
        for config in self.models:
            measure.time_vision(self.models[config], pixels[:1], self.device)
        measure.time_dense_prefill(self.lm, torch.randn(1, 16, self.lm.config.llm_config.hidden_size), self.device)
        with clocking([self.pvc.vision_model.encoder.layers[0]], self.device) as layer:
            seconds, features = measure.time_vision(self.pvc, pixels, self.device)
        self.check = {"frames": self.plan.frames, "seconds": seconds, "layer_s": sum(layer.take())}
        self.check["estimate_s"] = scaled(seconds, self.check["layer_s"], self.depth["vision"])
        _, stage1 = measure.time_stage1(features, self.settings, self.device)
        return pixels, features, stage1

    def run(self, log: Callable[[str], None]) -> None:
        """Every measurement, repeat-major and interleaved, after the warm-up."""
        _, features, stage1 = self.warm_up()
        per_frame = {c: self.models[c].config.num_image_token for c in self.models}
        layouts = {c: harness.video_prompt([per_frame[c]] * self.plan.frames) for c in self.models}
        generator = torch.Generator().manual_seed(0)
        visual = {BASE: torch.randn(layouts[BASE].visual_tokens, self.lm.config.llm_config.hidden_size, generator=generator),
                  PVC: features}
        self.tokens.update({c: {"visual": layouts[c].visual_tokens, "prompt": layouts[c].length} for c in self.models})
        for repeat in range(self.plan.repeats):
            pixels, decoding, preprocessing = load_video(self.video, self.plan.frames)
            self.add("decode", ALL, repeat, decoding, None, decoding)
            self.add("preprocess", ALL, repeat, preprocessing, None, preprocessing)
            for config in self.models:
                self.vision(config, pixels[: self.plan.vision_frames], repeat)
            seconds, stage1 = measure.time_stage1(features, self.settings, self.device)
            self.add("stage1", PRUNEVID, repeat, seconds, None, seconds)
            if repeat < self.plan.large_repeats:
                log(f"repeat {repeat + 1}: InternVL2 prefill, one 8B layer on {layouts[BASE].length} tokens")
                self.dense(BASE, layouts[BASE], visual[BASE], repeat)
            self.dense(PVC, layouts[PVC], visual[PVC], repeat)
            self.pruned(stage1, repeat)
            log(f"repeat {repeat + 1}/{self.plan.repeats} of the 8B-shape stages done")
            gc.collect()

    def describe(self) -> dict:
        """The shapes, the real depths they are scaled to, the token counts and the frame-scaling check."""
        vision, llm = self.pvc.config.vision_config, self.lm.config.llm_config
        return {"vision": {k: getattr(vision, k) for k in ("hidden_size", "num_attention_heads", "intermediate_size",
                                                           "image_size", "patch_size")},
                "llm": {k: getattr(llm, k) for k in ("hidden_size", "num_attention_heads", "num_key_value_heads",
                                                     "head_dim", "intermediate_size", "vocab_size")},
                "real_depth": self.depth, "selected_layer": self.settings.selected_layer, "dtype": "float32",
                "tokens_per_frame": {c: m.config.num_image_token for c, m in self.models.items()},
                "tokens": self.tokens, "frame_scaling_check": self.check}


# ------------------------------------------------------------------------------------ several questions
def workload_model(device: str):
    """PVC at the reduced widths of run.py (real token and layer counts) and the package's processor for it."""
    model = harness.build_pvc(harness.make_spec(False, device))
    processor = harness.chat_processor(model.config)
    model.img_context_token_id = processor.tokenizer.convert_tokens_to_ids(harness.IMG_CONTEXT_TOKEN)
    return model, processor


def _shared_prefix(rows: list[torch.Tensor]) -> int:
    """Length of the prefix all ``rows`` (1-D ids) share."""
    width = min(len(row) for row in rows)
    same = torch.stack([row[:width] == rows[0][:width] for row in rows]).all(dim=0)
    return int(same.long().cumprod(0).sum())


class Workload:
    """Three questions about one video: separate calls against the encoded video and the prefilled prefix."""

    def __init__(self, model, processor, video: pathlib.Path, plan: Plan, device: str,
                 questions: tuple[str, ...] = QUESTIONS) -> None:
        self.model, self.processor, self.video, self.plan = model, processor, video, plan
        self.device, self.questions = device, questions
        vision = model.vision_model
        self.vision_modules = [vision.embeddings, *vision.encoder.layers, model.mlp1]
        self.generation = dict(max_new_tokens=plan.answer_tokens, do_sample=False)

    def _generate(self, inputs: dict, **extra) -> dict:
        """One ``generate`` call: seconds to its first new token, the vision encoder's and the LLM prefill's part
        of them, and the answer's ids."""
        first = FirstToken()
        with clocking(self.vision_modules, self.device) as vision, clocking([self.model.language_model],
                                                                             self.device) as llm:
            start = time.perf_counter()
            out = self.model.generate(**inputs, **extra, **self.generation, streamer=first)
        prompt = inputs["input_ids"].shape[1]
        return {"ttft_s": first.at - start, "vision_s": sum(vision.calls), "prefill_s": llm.calls[0],
                "prompt_tokens": prompt, "answer": out[0, prompt:].tolist()}

    def _load(self, load: Callable[[], dict]) -> tuple[dict, dict]:
        with call_clock(media, "load_video_frames") as decoding:
            seconds, inputs = measure.timed(load, self.device)
        return inputs, {"decode_s": decoding[0], "preprocess_s": seconds - decoding[0]}

    def separate(self) -> list[dict]:
        """Each question as its own call: ``generate(**processor.apply_chat_template(...))``."""
        calls = []
        for question in self.questions:
            messages = [{"role": "user", "content": [
                {"type": "video", "path": str(self.video), "num_frames": self.plan.frames},
                {"type": "text", "text": question}]}]
            inputs, record = self._load(lambda messages=messages: self.processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"))
            calls.append({**record, **self._generate(inputs), "prompt": inputs["input_ids"][0].tolist()})
        return calls

    def reuse(self) -> dict:
        """The video decoded and encoded once, the shared prefix prefilled once, each question on a copy of it."""
        video, record = self._load(lambda: self.processor(videos=str(self.video), num_segments=self.plan.frames))
        layout = {k: video[k] for k in ("data_flag", "split_sizes", "num_patches_list")}
        record["prompts_s"], prompts = measure.timed(lambda: [
            self.processor.chat_inputs([q], video["pixel_values"], **layout)[0] for q in self.questions], self.device)
        with clocking(self.vision_modules, self.device) as vision:
            record["encode_s"], encoded = measure.timed(
                lambda: self.model.encode_media(video["pixel_values"], **layout), self.device)
        record["vision_s"] = sum(vision.calls)
        prefix = _shared_prefix([p["input_ids"][0] for p in prompts])
        record["prefix_tokens"] = prefix
        record["prefill_s"], cache = measure.timed(
            lambda: self.model.prefill(prompts[0]["input_ids"][:, :prefix], visual_features=encoded), self.device)
        record["questions"] = []
        for inputs in prompts:
            copy_s, own = measure.timed(lambda: copy.deepcopy(cache), self.device)
            call = self._generate({"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]},
                                  visual_features=encoded, **{CACHE_ARG: own})
            record["questions"].append({"copy_s": copy_s, **call, "prompt": inputs["input_ids"][0].tolist()})
        return record

    def run(self, log: Callable[[str], None]) -> list[dict]:
        """One untimed pass of the reuse path, then ``plan.repeats`` repeats of both paths (their order
        alternating)."""
        self.reuse()
        samples = []
        for repeat in range(self.plan.repeats):
            order = ("separate", "reuse") if repeat % 2 == 0 else ("reuse", "separate")
            done = {path: getattr(self, path)() for path in order}
            separate, reused = done["separate"], done["reuse"]["questions"]
            checks = {"prompts_identical": [a.pop("prompt") == b.pop("prompt") for a, b in zip(separate, reused)],
                      "answers_identical": [a["answer"] == b["answer"] for a, b in zip(separate, reused)]}
            samples.append({"repeat": repeat, "order": list(order), **done, **checks})
            log(f"repeat {repeat + 1}/{self.plan.repeats} of the several-questions workload done")
            gc.collect()
        return samples


# ------------------------------------------------------------------------------------------------ the run
def decode_vs_length(path: pathlib.Path = HERE / "results_decode.json") -> dict:
    """The decode-time-against-length figures of ``decode.py`` (medians per reader), quoted from its results."""
    if not path.is_file():
        return {"source": str(path.relative_to(harness.ROOT)), "status": "missing: run benchmarks/decode.py"}
    saved = json.loads(path.read_text())
    keep = ("resolution", "length_min", "frames", "reader", "median_s")
    return {"source": str(path.relative_to(harness.ROOT)), "date": saved["environment"]["date"],
            "command": saved["environment"]["command"], "segments": saved["parameters"]["segments"],
            "rows": [{k: row[k] for k in keep} for row in saved["summary"]],
            "targets": [{k: t[k] for k in ("target", "status", "detail")} for t in saved["targets"]]}


def video_file(resolution: str, minutes: float, folder: pathlib.Path, log: Callable[[str], None]) -> tuple[
        pathlib.Path, dict]:
    """The synthetic test video of decode.py (encoded on first use, then cached in ``folder``)."""
    name, width, height = decode.resolution(resolution)
    spec = decode.video_spec(name, width, height, minutes, decode.FPS, decode.GOP)
    path, _, _ = decode.ensure_video(spec, folder, log)
    return path, {**spec.meta(), "resolution": name, "minutes": minutes, "file": path.name}


def run_mode(args, scratch: pathlib.Path, timing_malloc: list[str], load_at_start: float) -> dict:
    """``run.py --end-to-end``: both parts with ``args``' settings, and the environment they ran in."""
    import suite  # the environment and load reports of run.py's suite

    start, start_cpu = time.perf_counter(), suite.cpu_seconds()
    torch.set_num_threads(args.threads)
    plan = Plan(repeats=args.repeats, large_repeats=args.large_repeats or 1, vision_frames=args.vision_frames)
    log = functools.partial(print, flush=True)
    video, meta = video_file(args.video_resolution, args.video_minutes, scratch / "videos", log)
    widths = harness.BenchSpec(False, args.device, torch.float32)  # config.json's: the 8B widths
    section = run(plan, video, meta, widths, lambda: workload_model(args.device), log)
    env = suite.environment(harness.make_spec(False, args.device), timing_malloc, load_at_start)
    env["wall_time_s"] = time.perf_counter() - start
    return {**section, "environment": {**env, **suite.load_report(start_cpu, env["wall_time_s"])}}


def run(plan: Plan, video: pathlib.Path, video_meta: dict, widths: harness.BenchSpec,
        workload_models: Callable[[], tuple], log: Callable[[str], None]) -> dict:
    """Both parts: the one-layer models at ``widths``, then the workload on ``workload_models()`` (a model and its
    processor). Returns the raw section ``end_to_end`` of results.json (analysis.py makes the medians)."""
    log(f"building the one-layer models ({widths.device})")
    bench = OneLayer(plan, video, widths)
    bench.run(log)
    one_layer = {"samples": bench.samples, "models": bench.describe()}
    del bench
    gc.collect()
    log("building the model of the several-questions workload")
    model, processor = workload_models()
    workload = Workload(model, processor, video, plan, widths.device)
    samples = workload.run(log)
    shapes = {part: {k: getattr(config, k) for k in ("hidden_size", "num_hidden_layers")}
              for part, config in (("vision", model.config.vision_config), ("llm", model.config.llm_config))}
    return {"plan": asdict(plan), "video": video_meta, "one_layer": one_layer,
            "workload": {"samples": samples, "questions": list(workload.questions), "model": shapes},
            "decode_vs_length": decode_vs_length()}
