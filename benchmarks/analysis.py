"""Turn raw measurements into medians, ratios, FLOPs predictions and a CPU cost model (tables of the report)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

import harness  # noqa: F401  (registers the package ``pvc_internvl``)
from pvc_internvl.prunevid import llm_prefill_flops

BASE, PVC, PRUNEVID = "internvl2", "pvc", "pvc_prunevid"
LABELS = {BASE: "InternVL2 baseline", PVC: "PVC", PRUNEVID: "PVC + PruneVid"}
MB = 1e6


@dataclass(frozen=True)
class LLMShape:
    """LLM shapes: what the FastV formula needs (width, MLP width, depth) and the attention heads."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int


FULL_LLM = LLMShape(4096, 14336, 32, 32, 8, 128)  # InternVL2-8B / PVC-8B language model (config.json)


def median(values: list[float]) -> float:
    """Median (NaN for no values)."""
    return float(statistics.median(values)) if values else math.nan


def dense_flops(tokens: int, shape: LLMShape) -> float:
    """FastV prefill FLOPs of ``tokens`` through every layer: sum of 4nd^2 + 2n^2d + 2ndm."""
    return llm_prefill_flops([tokens] * shape.layers, shape.hidden, shape.intermediate)


def pruned_lengths(stage1_tokens: int, stage2_tokens: int, selected_layer: int, layers: int) -> list[int]:
    """PruneVid per-layer lengths: layers 0..M on the stage-1 length, the rest on the stage-2 length."""
    return [stage1_tokens] * (selected_layer + 1) + [stage2_tokens] * (layers - selected_layer - 1)


def pruned_flops(stage1_tokens: int, stage2_tokens: int, selected_layer: int, shape: LLMShape) -> float:
    """PruneVid prefill FLOPs: layers 0..M on the stage-1 length, the rest on the stage-2 length."""
    lengths = pruned_lengths(stage1_tokens, stage2_tokens, selected_layer, shape.layers)
    return llm_prefill_flops(lengths, shape.hidden, shape.intermediate)


def layer_terms(tokens: float, shape: LLMShape) -> tuple[float, float]:
    """Multiply-adds one Llama layer executes on ``tokens`` tokens, as (linear, attention): q/o projections on
    all heads and k/v on the KV heads (GQA), the 3-matrix SwiGLU MLP; causal attention, about n^2/2 scores,
    each a q.k and a p.v product over all heads."""
    d, m = shape.hidden, shape.intermediate
    width, kv_width = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    return tokens * d * (2 * width + 2 * kv_width) + 3 * tokens * d * m, tokens * tokens * width


def executed_macs(lengths: list[float], shape: LLMShape) -> float:
    """Multiply-adds of a prefill whose layers see ``lengths`` tokens (see ``layer_terms``)."""
    return float(sum(sum(layer_terms(n, shape)) for n in lengths))


@dataclass(frozen=True)
class CostModel:
    """Measured cost of a prefill: ``fixed + per_linear * linear MACs + per_attention * attention MACs``
    (executed multiply-adds summed over layers, ``layer_terms``). ``fixed`` is measured with a tiny prompt;
    the two rates are fitted to the dense prefills of every frame count."""

    fixed_s: float
    per_linear_s: float
    per_attention_s: float

    def seconds(self, lengths: list[float], shape: LLMShape, fixed: bool = True) -> float:
        """Predicted time of a prefill with per-layer token counts ``lengths``."""
        total = self.fixed_s if fixed else 0.0
        for n in lengths:
            linear, attention = layer_terms(n, shape)
            total += self.per_linear_s * linear + self.per_attention_s * attention
        return total


def fit_cost_model(points: list[tuple[int, float]], fixed_s: float, shape: LLMShape) -> CostModel:
    """Least-squares fit (relative error) of dense prefill times ``(tokens, seconds)`` to the cost model."""
    rows, targets = [], []
    for tokens, seconds in points:
        linear, attention = layer_terms(tokens, shape)
        rows.append([shape.layers * linear / seconds, shape.layers * attention / seconds])
        targets.append((seconds - fixed_s) / seconds)
    rows, targets = np.array(rows), np.array(targets)
    (per_linear, per_attention), *_ = np.linalg.lstsq(rows, targets, rcond=None)
    if per_linear < 0 or per_attention < 0:  # keep the rates physical: fit the better single term instead
        fits = [np.linalg.lstsq(rows[:, [i]], targets, rcond=None)[0][0] for i in (0, 1)]
        errors = [np.sum((rows[:, i] * max(f, 0.0) - targets) ** 2) for i, f in enumerate(fits)]
        best = int(np.argmin(errors))
        per_linear, per_attention = (max(fits[0], 0.0), 0.0) if best == 0 else (0.0, max(fits[1], 0.0))
    return CostModel(fixed_s, float(per_linear), float(per_attention))


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points."""
    xs, ys = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
    return float(np.polyfit(xs, ys, 1)[0]) if len(points) >= 2 else math.nan


def iqr(values: list[float]) -> float:
    """Interquartile range."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4)
    return float(q3 - q1)


def hidden_state_bytes(record: dict) -> float:
    """One hidden state of one frame: S * C * bytes."""
    return record["tokens_per_frame"] * record["vision_hidden"] * record["bytes_per_element"]


def kv_layer_bytes(record: dict) -> float:
    """Keys + values of one temporal layer for one frame: 2 * S' * C * bytes."""
    return 2 * record["temporal_tokens_per_frame"] * record["vision_hidden"] * record["bytes_per_element"]


def predicted_chunk_slope(record: dict) -> float:
    """Predicted per-frame memory of chunked (layer-by-layer) encoding: the residual stream of every frame
    plus, while a temporal layer runs, its keys/values of every frame (one store, reused by each layer);
    after the last layer the projected output takes the keys/values' place."""
    kv = kv_layer_bytes(record) if record["temporal_layers"] else 0.0
    return hidden_state_bytes(record) + max(kv, record["output_bytes_per_frame"])


def activation_units(bytes_per_frame: float, record: dict) -> float:
    """Bytes per frame expressed in S * C * bytes units (one hidden state of one frame)."""
    return bytes_per_frame / (record["tokens_per_frame"] * record["vision_hidden"] * record["bytes_per_element"])


class Samples:
    """Raw samples keyed by (family, configuration, frames)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str, int], list[float]] = {}

    def add(self, family: str, config: str, frames: int, value: float) -> None:
        """Append one sample."""
        self.data.setdefault((family, config, int(frames)), []).append(float(value))

    def extend(self, family: str, config: str, frames: int, values: list[float]) -> None:
        """Append several samples."""
        for value in values:
            self.add(family, config, frames, value)

    def get(self, family: str, config: str, frames: int) -> list[float]:
        """All samples of one key (empty if none)."""
        return self.data.get((family, config, int(frames)), [])

    def median(self, family: str, config: str, frames: int) -> float:
        """Median of one key's samples."""
        return median(self.get(family, config, frames))

    def records(self) -> list[dict]:
        """JSON-friendly list."""
        return [{"family": f, "config": c, "frames": n, "values": v} for (f, c, n), v in sorted(self.data.items())]

    @classmethod
    def from_records(cls, records: list[dict]) -> Samples:
        """Inverse of ``records``."""
        samples = cls()
        for record in records:
            samples.extend(record["family"], record["config"], record["frames"], record["values"])
        return samples


def llm_shape(results: dict) -> LLMShape:
    """The LLM shapes of a run."""
    llm = results["models"]["llm"]
    return LLMShape(llm["hidden_size"], llm["intermediate_size"], llm["num_hidden_layers"], llm["num_attention_heads"],
                    llm["num_key_value_heads"], llm["head_dim"])


def token_rows(results: dict) -> list[dict]:
    """Visual tokens and prompt lengths per frame count."""
    rows = []
    for frames in results["settings"]["frames"]:
        tok = results["tokens"].get(str(frames), {})
        if not tok:
            continue
        pvc_visual = tok.get(f"{PVC}_visual", math.nan)
        rows.append({
            "frames": frames,
            "baseline_visual": tok.get(f"{BASE}_visual", math.nan),
            "baseline_prompt": tok.get(f"{BASE}_prompt", math.nan),
            "pvc_visual": pvc_visual, "pvc_prompt": tok.get(f"{PVC}_prompt", math.nan),
            "stage1_visual": tok.get("pvc_prunevid_stage1_visual", math.nan),
            "stage1_prompt": tok.get("pvc_prunevid_stage1_prompt", math.nan),
            "stage2_visual": tok.get("pvc_prunevid_stage2_visual", math.nan),
            "stage2_prompt": tok.get("pvc_prunevid_stage2_prompt", math.nan),
            "stage1_kept_of_pvc": tok.get("pvc_prunevid_stage1_visual", math.nan) / pvc_visual,
            "stage2_kept_of_pvc": tok.get("pvc_prunevid_stage2_visual", math.nan) / pvc_visual,
            "segments": tok.get("stage1_segments"), "dpc_calls": tok.get("stage1_dpc_calls"),
        })
    return rows


def predicted_ratios(tokens: dict, shape: LLMShape, selected_layer: int) -> dict:
    """FLOPs-predicted prefill ratios (PVC / baseline, PVC + PruneVid / baseline) for one frame count."""
    base = dense_flops(tokens["baseline_prompt"], shape)
    pruned = pruned_flops(tokens["stage1_prompt"], tokens["stage2_prompt"], selected_layer, shape)
    return {"pvc": dense_flops(tokens["pvc_prompt"], shape) / base, "pvc_prunevid": pruned / base}


def executed_ratios(tokens: dict, shape: LLMShape, selected_layer: int) -> dict:
    """The same ratios from the multiply-adds the model executes (see ``executed_macs``)."""
    base = executed_macs([tokens["baseline_prompt"]] * shape.layers, shape)
    pvc = executed_macs([tokens["pvc_prompt"]] * shape.layers, shape)
    pruned = executed_macs(pruned_lengths(tokens["stage1_prompt"], tokens["stage2_prompt"], selected_layer,
                                          shape.layers), shape)
    return {"pvc": pvc / base, "pvc_prunevid": pruned / base}


def prefill_rows(results: dict, samples: Samples) -> list[dict]:
    """Median prefill times, measured and FLOPs-predicted ratios, peak memory."""
    shape, layer = llm_shape(results), results["models"]["prunevid"]["selected_layer"]
    rows = []
    for tok in token_rows(results):
        frames = tok["frames"]
        seconds = {c: samples.median("prefill_s", c, frames) for c in (BASE, PVC, PRUNEVID)}
        row = {"frames": frames, **{f"{c}_s": s for c, s in seconds.items()},
               **{f"{c}_n": len(samples.get("prefill_s", c, frames)) for c in (BASE, PVC, PRUNEVID)},
               **{f"{c}_kv_mb": kv_cache_bytes(n, results) / MB for c, n in
                  ((BASE, tok["baseline_prompt"]), (PVC, tok["pvc_prompt"]), (PRUNEVID, tok["stage2_prompt"]))},
               "ratio_pvc": seconds[PVC] / seconds[BASE], "ratio_pvc_prunevid": seconds[PRUNEVID] / seconds[BASE]}
        if not any(math.isnan(tok[k]) for k in ("baseline_prompt", "pvc_prompt", "stage1_prompt", "stage2_prompt")):
            row.update({f"predicted_{k}": v for k, v in predicted_ratios(tok, shape, layer).items()})
            row.update({f"predicted_8b_{k}": v for k, v in predicted_ratios(tok, FULL_LLM, layer).items()})
            row.update({f"executed_{k}": v for k, v in executed_ratios(tok, shape, layer).items()})
        rows.append(row)
    return rows


def kv_cache_bytes(tokens: float, results: dict) -> float:
    """KV cache after prefill: 2 * layers * kv heads * head dim * tokens * bytes per element."""
    llm = results["models"]["llm"]
    size = 2 if results["models"]["dtype"] in ("bfloat16", "float16") else 4
    return 2 * llm["num_hidden_layers"] * llm["num_key_value_heads"] * llm["head_dim"] * tokens * size


def cost_model(results: dict, samples: Samples) -> CostModel | None:
    """The CPU cost model fitted to every dense prefill median."""
    overhead = median(samples.get("overhead_s", BASE, results["settings"]["overhead_tokens"]))
    points = []
    for tok in token_rows(results):
        for config, key in ((BASE, "baseline_prompt"), (PVC, "pvc_prompt")):
            seconds = samples.median("prefill_s", config, tok["frames"])
            if not math.isnan(seconds):
                points.append((tok[key], seconds))
    if len(points) < 2 or math.isnan(overhead):
        return None
    return fit_cost_model(points, overhead, llm_shape(results))


def decode_rows(results: dict, samples: Samples) -> list[dict]:
    """Median decode step per configuration (and the same-loop PVC reference where measured)."""
    rows = []
    for frames in results["settings"]["frames"]:
        row = {"frames": frames}
        for config in (BASE, PVC, PRUNEVID):
            steps = samples.get("decode_step_s", config, frames)
            row[f"{config}_ms"], row[f"{config}_iqr_ms"] = median(steps) * 1e3, iqr(steps) * 1e3
        same = samples.get("decode_same_loop_step_s", PVC, frames)
        row["pvc_same_loop_ms"], row["pvc_same_loop_iqr_ms"] = median(same) * 1e3, iqr(same) * 1e3
        rows.append(row)
    return rows


def vision_rows(results: dict, samples: Samples) -> list[dict]:
    """Median vision-encoder time per configuration."""
    rows = []
    for frames in results["settings"]["frames"]:
        row = {"frames": frames}
        for config in (BASE, PVC):
            row[f"{config}_s"] = samples.median("vision_s", config, frames)
            row[f"{config}_n"] = len(samples.get("vision_s", config, frames))
            row[f"{config}_ms_per_frame"] = row[f"{config}_s"] / frames * 1e3
        row["pvc_chunked_s"] = samples.median("vision_chunked_s", PVC, frames)
        rows.append(row)
    return rows


def stage1_rows(results: dict, samples: Samples) -> list[dict]:
    """Median stage-1 time and its share of the PVC prefill."""
    tokens = {t["frames"]: t for t in token_rows(results)}
    rows = []
    for frames in results["settings"]["frames"]:
        seconds = samples.median("stage1_s", PRUNEVID, frames)
        tok = tokens.get(frames, {})
        rows.append({"frames": frames, "stage1_s": seconds, "n": len(samples.get("stage1_s", PRUNEVID, frames)),
                     "share_of_pvc_prefill": seconds / samples.median("prefill_s", PVC, frames),
                     "tokens_in": tok.get("pvc_visual"), "tokens_out": tok.get("stage1_visual"),
                     "segments": tok.get("segments"), "dpc_calls": tok.get("dpc_calls")})
    return rows


def memory_rows(records: list[dict]) -> list[dict]:
    """Per temporal-layer count L: chunked slope vs prediction, one-shot slope, and the peaks at 96 frames."""
    get = {(r["temporal_layers"], r["mode"], r["frames"]): r for r in records}
    rows = []
    for layers in sorted({r["temporal_layers"] for r in records if r["mode"] == "chunked"}, reverse=True):
        c16, c96 = get.get((layers, "chunked", 16)), get.get((layers, "chunked", 96))
        o16, o96 = get.get((layers, "oneshot", 16)), get.get((layers, "oneshot", 96))
        if not (c16 and c96 and o16 and o96):
            continue
        measured = (c96["peak_bytes"] - c16["peak_bytes"]) / 80
        oneshot_slope = (o96["peak_bytes"] - o16["peak_bytes"]) / 80
        rows.append({
            "temporal_layers": layers, "setting": c96.get("temporal_layers_setting"),
            "chunk_frames": c96["chunk_frames"],
            "chunked_16_mb": c16["peak_bytes"] / MB, "chunked_96_mb": c96["peak_bytes"] / MB,
            "slope_mb": measured / MB, "predicted_slope_mb": predicted_chunk_slope(c96) / MB,
            "slope_units": activation_units(measured, c96),
            "oneshot_16_mb": o16["peak_bytes"] / MB, "oneshot_96_mb": o96["peak_bytes"] / MB,
            "oneshot_slope_mb": oneshot_slope / MB, "oneshot_units": activation_units(oneshot_slope, o96),
            "reduction": o96["peak_bytes"] / c96["peak_bytes"], "slope_reduction": oneshot_slope / measured,
            "hidden_mb": hidden_state_bytes(c96) / MB, "kv_layer_mb": kv_layer_bytes(c96) / MB,
            "output_mb": c96["output_bytes_per_frame"] / MB,
            "chunk_transient_mb": (c96["peak_bytes"] - 96 * measured) / MB,
        })
    return rows


def extract_feature_row(records: list[dict]) -> dict | None:
    """``extract_feature`` against ``encode_clips`` (both chunked, same L): the per-frame cost of a pixel copy."""
    get = {(r["mode"], r["frames"]): r for r in records if r["temporal_layers_setting"] == "all"}
    e16, e96, c16, c96 = (get.get(k) for k in (("extract_chunked", 16), ("extract_chunked", 96), ("chunked", 16),
                                               ("chunked", 96)))
    if not (e16 and e96 and c16 and c96):
        return None
    extra = ((e96["peak_bytes"] - e16["peak_bytes"]) - (c96["peak_bytes"] - c16["peak_bytes"])) / 80
    return {"temporal_layers": e96["temporal_layers"], "extract_96_mb": e96["peak_bytes"] / MB,
            "encode_clips_96_mb": c96["peak_bytes"] / MB, "extra_per_frame_mb": extra / MB,
            "pixel_bytes_per_frame_mb": e96["pixel_bytes_per_frame"] / MB}


# ------------------------------------------------------------------------ end to end (run.py --end-to-end)
ALL = "all"  # configuration label of the stages every configuration shares (video decoding, preprocessing)
TTFT_STAGES = ("decode", "preprocess", "vision", "stage1", "prefill")  # time to first token, in order
VIDEO_WORK = ("decode", "preprocess", "vision", "prefill")  # what the several-questions target counts


def ttft_rows(section: dict) -> dict:
    """Per configuration: median seconds of every time-to-first-token stage at the 8B shapes (one-layer
    measurements scaled, see benchmarks/end_to_end.py), their sum and shares, and the decode step."""
    samples = section["one_layer"]["samples"]

    def estimates(stage: str, config: str) -> list[float]:
        return [s["estimate_s"] for s in samples if s["stage"] == stage and s["config"] == config]

    rows = {}
    for config in (BASE, PVC, PRUNEVID):
        source = {"decode": ALL, "preprocess": ALL, "vision": PVC if config == PRUNEVID else config,
                  "stage1": config, "prefill": config}
        stages = {stage: median(estimates(stage, source[stage])) if estimates(stage, source[stage]) else 0.0
                  for stage in TTFT_STAGES}
        total = sum(stages.values())
        rows[config] = {**{f"{k}_s": v for k, v in stages.items()}, "ttft_s": total,
                        "shares": {k: v / total for k, v in stages.items()},
                        "decode_step_s": median(estimates("decode_step", config)),
                        "runs": {k: len(estimates(k, source[k])) for k in TTFT_STAGES}}
    return rows


def _reuse_parts(record: dict) -> dict:
    """Seconds of the encode-once path of one repeat by stage (other: prompts, projection, cache copies, set-up)."""
    questions = record["questions"]
    prefill = record["prefill_s"] + sum(q["prefill_s"] for q in questions)
    once = ("decode_s", "preprocess_s", "prompts_s", "encode_s", "prefill_s")
    total = sum(record[k] for k in once) + sum(q["copy_s"] + q["ttft_s"] for q in questions)
    known = record["decode_s"] + record["preprocess_s"] + record["vision_s"] + prefill
    return {"decode": record["decode_s"], "preprocess": record["preprocess_s"], "vision": record["vision_s"],
            "prefill": prefill, "other": total - known, "total": total}


def _separate_parts(calls: list[dict]) -> dict:
    """Seconds of the separate calls of one repeat by stage (other: the generate set-up, projection, merging)."""
    parts = {stage: sum(c[f"{stage}_s"] for c in calls) for stage in VIDEO_WORK}
    total = sum(c["decode_s"] + c["preprocess_s"] + c["ttft_s"] for c in calls)
    return {**parts, "other": total - sum(parts.values()), "total": total}


def workload_rows(section: dict) -> dict:
    """Medians over the repeats of the several-questions workload: each path by stage, the ratio, the checks."""
    samples = section["workload"]["samples"]
    separate = [_separate_parts(s["separate"]) for s in samples]
    reuse = [_reuse_parts(s["reuse"]) for s in samples]
    keys = (*VIDEO_WORK, "other", "total")
    rows = {"separate": {k: median([p[k] for p in separate]) for k in keys},
            "reuse": {k: median([p[k] for p in reuse]) for k in keys}}
    return {**rows, "ratio": rows["reuse"]["total"] / rows["separate"]["total"],
            "ratios": [r["total"] / s["total"] for r, s in zip(reuse, separate)], "repeats": len(samples),
            "questions": len(section["workload"]["questions"]),
            "answers_identical": all(all(s["answers_identical"]) for s in samples),
            "prompts_identical": all(all(s["prompts_identical"]) for s in samples),
            "prefix_tokens": samples[0]["reuse"]["prefix_tokens"] if samples else None,
            "prompt_tokens": [c["prompt_tokens"] for c in samples[0]["separate"]] if samples else []}
