"""Write the benchmark results: ``results.json`` (raw + summary), ``results.md`` (tables) and ``results.png``
(the suite's figures; ``run.py --end-to-end`` adds the section ``end_to_end`` to the first two).

``python benchmarks/report.py benchmarks/results.json`` re-renders the Markdown and the plot from a saved
JSON file.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import analysis as A  # noqa: E402
import targets as T  # noqa: E402

COLORS = {A.BASE: "tab:gray", A.PVC: "tab:blue", A.PRUNEVID: "tab:orange"}


def summarize(results: dict) -> dict:
    """All derived tables."""
    samples = A.Samples.from_records(results["samples"])
    model = A.cost_model(results, samples)
    return {
        "tokens": A.token_rows(results),
        "prefill": A.prefill_rows(results, samples),
        "decode": A.decode_rows(results, samples),
        "vision_time": A.vision_rows(results, samples),
        "stage1": A.stage1_rows(results, samples),
        "vision_memory": A.memory_rows(results["vision_memory"]),
        "extract_feature_memory": A.extract_feature_row(results["vision_memory"]) if results["vision_memory"] else None,
        "cost_model": None if model is None else vars(model),
    }


def fmt(value, spec: str = ".3f") -> str:
    """Format a number; '-' for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def setup_section(results: dict) -> list[str]:
    """The shapes, configurations, inputs and method."""
    models, settings = results["models"], results["settings"]
    vision, llm, prompt = models["vision"], models["llm"], models["prompt"]
    size = "full size (8B shapes)" if models["full_size"] else "reduced widths, real token and layer counts"
    return [
        "## Set-up", "",
        f"- **Shapes: {size}, {models['dtype']}.** Vision: InternViT with {vision['num_hidden_layers']} layers, hidden "
        f"{vision['hidden_size']}, {vision['num_attention_heads']} head(s), MLP {vision['intermediate_size']}, "
        f"{vision['image_size']} px / patch {vision['patch_size']} = 1025 tokens per frame; PVC temporal attention in "
        f"{models['temporal_layers']} layers, AdaLN in all. LLM: Llama with {llm['num_hidden_layers']} layers, hidden "
        f"{llm['hidden_size']}, {llm['num_attention_heads']} heads / {llm['num_key_value_heads']} KV heads of "
        f"{llm['head_dim']}, MLP {llm['intermediate_size']}, vocabulary {llm['vocab_size']}; SDPA attention.",
        f"- **Configurations (same random weights).** InternVL2 baseline: {models['tokens_per_frame']['internvl2']} "
        f"tokens per frame, `use_temporal=False`, `downsample_ratio=0.5`, `video_repeat_time=1`. PVC: "
        f"{models['tokens_per_frame']['pvc']} tokens per frame, `use_temporal=True`, `downsample_ratio=0.25`, the "
        f"zero-initialised temporal weights set to N(0, {models['temporal_weight_std']}²). PVC + PruneVid: "
        + ", ".join(f"{k} {v}" for k, v in models["prunevid"].items() if k not in ("enable_stage1", "enable_stage2"))
        + ". The baseline and PVC share the ViT blocks and the very same language model; only `mlp1` differs.",
        "- **Inputs.** A synthetic video (smooth static background, two textured squares moving over it, light noise) "
        "encoded by each configuration's vision model; the projected tokens it gives are the visual tokens of the LLM "
        "timings and the input of PruneVid stage 1 (so segmentation and merging do real work). Text embeddings are "
        "random (the LLM cost does not depend on values); " + prompt_text(prompt) + ".",
        f"- **Method.** Every measurement is repeated {settings['repeats']} times "
        f"({settings['large_repeats']} for the costliest, the baseline prefill at {max(settings['frames'])} frames; "
        "the PVC and PVC + PruneVid prefills run twice per repeat, before and after the baseline prefill), "
        "interleaved (repeat, then frames, then configuration) after one warm-up "
        "pass; tables show medians. Prefill = time to first token: `language_model(inputs_embeds=…, use_cache=True, "
        "logits_to_keep=1)` for the dense models, `pruned_generate(…, max_new_tokens=1)` for PVC + PruneVid (stage 2 "
        "included, stage 1 timed separately). Decode = median over all greedy steps of all runs "
        f"({settings['decode_steps']} steps per run). Peak memory is measured for the vision encoder, in fresh "
        "processes (see below).",
        "",
    ]


def prompt_text(prompt: dict) -> str:
    """How the prompt's text tokens were counted (runs before this version assumed the counts)."""
    if "prefix_tokens" in prompt:
        return (f"{prompt['prefix_tokens']} tokens before the video (template + system message, assumed), "
                f"{prompt['suffix_tokens']} after it (question, options, assistant turn) and "
                f"{prompt['frame_wrapper_tokens']} per frame for each frame's line and image tokens")
    return (f"the text is the package's chat prompt for a multiple-choice question (`harness.QUESTION`), tokenized by "
            f"the repository's tiny tokenizer: at {prompt['frames']} frames {prompt['before_video_tokens']} tokens "
            f"before the first frame's visual tokens (template, system message, the first frame's line), "
            f"{prompt['between_frames_tokens']} between two frames and {prompt['after_video_tokens']} after the last")


def targets_section(rows: list[dict]) -> list[str]:
    """The must-show targets and the reasons for each MISS."""
    body = [[r["target"], r["goal"], r["measured"], f"**{r['status']}**"] for r in rows]
    lines = ["## Targets", "", *table(["target", "goal", "measured", "status"], body)]
    misses = [r for r in rows if r["reason"]]
    if misses:
        lines += ["Why each MISS happens (computed from the measurements):", ""]
        lines += [f"- **{r['target']}**: {r['reason']}" for r in misses] + [""]
    return lines


def tokens_section(summary: dict) -> list[str]:
    """Visual tokens and prompt lengths per frame count."""
    body = [[str(r["frames"]), fmt(r["baseline_visual"], "d"), fmt(r["pvc_visual"], "d"), fmt(r["stage1_visual"], "d"),
             fmt(r["stage2_visual"], "d"), fmt(r["stage1_kept_of_pvc"], ".1%"), fmt(r["stage2_kept_of_pvc"], ".1%"),
             f"{fmt(r['baseline_prompt'], 'd')} / {fmt(r['pvc_prompt'], 'd')} / {fmt(r['stage1_prompt'], 'd')} → "
             f"{fmt(r['stage2_prompt'], 'd')}", fmt(r["segments"], "d")] for r in summary["tokens"]]
    return ["## Visual tokens", "",
            *table(["frames", "InternVL2", "PVC", "PruneVid stage 1", "PruneVid stage 2 (kept)", "stage 1 / PVC",
                    "stage 2 / PVC", "prompt tokens: InternVL2 / PVC / PruneVid (layers 0–M → after M)",
                    "segments"], body)]


def prefill_section(summary: dict) -> list[str]:
    """Prefill times, measured and predicted ratios."""
    body = [[str(r["frames"]), fmt(r["internvl2_s"], ".3f"), fmt(r["pvc_s"], ".3f"), fmt(r["pvc_prunevid_s"], ".4f"),
             fmt(r["ratio_pvc"], ".4f"), fmt(r.get("executed_pvc"), ".4f"), fmt(r.get("predicted_pvc"), ".4f"),
             fmt(r.get("predicted_8b_pvc"), ".4f"), fmt(r["ratio_pvc_prunevid"], ".4f"),
             fmt(r.get("executed_pvc_prunevid"), ".4f"), fmt(r.get("predicted_pvc_prunevid"), ".4f"),
             fmt(r.get("predicted_8b_pvc_prunevid"), ".4f"),
             f"{fmt(r['internvl2_kv_mb'], '.0f')} / {fmt(r['pvc_kv_mb'], '.0f')} / "
             f"{fmt(r['pvc_prunevid_kv_mb'], '.0f')}",
             f"{r['internvl2_n']}/{r['pvc_n']}/{r['pvc_prunevid_n']}"] for r in summary["prefill"]]
    lines = ["## LLM prefill (time to first token)", "",
             "Ratios are over the InternVL2 baseline, LLM prefill only (PruneVid: layers 0..M on the stage-1 "
             "length, the rest on the stage-2 length). *FLOPs* = the FLOPs-predicted ratio of target 1: the "
             "multiply-adds this Llama executes with this run's widths (q/o projections on all heads, k/v on the KV "
             "heads, the 3-matrix SwiGLU MLP, causal attention ≈ n²/2 scores per head). *FastV* = the estimate "
             "Σ_layers 4nd² + 2n²d + 2ndm the PruneVid paper's FLOPs follow (multi-head k/v, 2-matrix MLP, full "
             "attention), same widths; *FastV 8B* = that estimate for the same token counts at the 8B widths "
             "(d 4096, m 14336). KV cache = 2 · layers · KV heads · head dim · tokens · bytes after prefill "
             "(PruneVid: the pruned cache).", "",
             *table(["frames", "InternVL2 s", "PVC s", "PVC+PruneVid s", "PVC ratio", "FLOPs", "FastV", "FastV 8B",
                     "PruneVid ratio", "FLOPs", "FastV", "FastV 8B", "KV cache MB (base/PVC/PV)", "runs"], body)]
    model = summary["cost_model"]
    if model:
        lines += [f"Cost model fitted to the dense prefills (used to explain deviations): fixed "
                  f"{model['fixed_s'] * 1e3:.1f} ms per call (16-token prompt), {model['per_linear_s'] * 1e12:.2f} ps "
                  f"per linear multiply-add, {model['per_attention_s'] * 1e12:.2f} ps per attention multiply-add.", ""]
    return lines


def decode_section(summary: dict) -> list[str]:
    """Decode time per token."""
    body = [[str(r["frames"]), fmt(r["internvl2_ms"], ".2f"), fmt(r["pvc_ms"], ".2f"), fmt(r["pvc_prunevid_ms"], ".2f"),
             fmt(r["pvc_same_loop_ms"], ".2f")] for r in summary["decode"]]
    return ["## Decode time per token (ms, median step)", "",
            "InternVL2 and PVC decode on the cache of the timed prefill with a loop doing the same per-step work as "
            "`pruned_generate`; PVC + PruneVid decodes in `pruned_generate` (pruned cache). *PVC, same loop* runs PVC "
            "through `pruned_generate` with alpha = 1 (every token kept): the like-for-like reference of target 4.", "",
            *table(["frames", "InternVL2", "PVC", "PVC+PruneVid", "PVC, same loop"], body)]


def vision_section(results: dict, summary: dict) -> list[str]:
    """Vision-encoder time."""
    chunk = results["settings"]["chunk_frames"]
    body = [[str(r["frames"]), fmt(r["internvl2_s"], ".2f"), fmt(r["pvc_s"], ".2f"),
             fmt(r["internvl2_ms_per_frame"], ".0f"), fmt(r["pvc_ms_per_frame"], ".0f"),
             fmt(r["pvc_chunked_s"], ".2f"), f"{r['internvl2_n']}/{r['pvc_n']}"] for r in summary["vision_time"]]
    return ["## Vision encoder time (incl. pixel shuffle + mlp1)", "",
            f"All frames in one pass; *PVC chunked* = `chunk_frames={chunk}` (the memory-bounded setting of the "
            "memory benchmark below), measured at the target frame count only.", "",
            *table(["frames", "InternVL2 s", "PVC s", "InternVL2 ms/frame", "PVC ms/frame", "PVC chunked s", "runs"],
                   body)]


def memory_section(results: dict, summary: dict) -> list[str]:
    """Vision-encoder peak memory and the package notes."""
    rows = summary["vision_memory"]
    if not rows:
        return ["## Vision encoder peak memory", "", "Not measured (--skip-memory).", ""]
    body = [[str(r["temporal_layers"]) + (" (8B default)" if r["setting"] == "all" else ""),
             fmt(r["chunked_16_mb"], ".1f"), fmt(r["chunked_96_mb"], ".1f"), fmt(r["slope_mb"], ".3f"),
             fmt(r["predicted_slope_mb"], ".3f"), fmt(r["slope_units"], ".2f"),
             fmt(r["oneshot_16_mb"], ".1f"), fmt(r["oneshot_96_mb"], ".1f"), fmt(r["oneshot_slope_mb"], ".3f"),
             fmt(r["oneshot_units"], ".1f"), fmt(r["reduction"], ".2f"), fmt(r["slope_reduction"], ".2f")]
            for r in rows]
    record = results["vision_memory"][0]
    size = record["bytes_per_element"]
    chunk = results["settings"]["chunk_frames"]
    lines = ["## Vision encoder peak memory (PVC, fresh process per measurement)", "",
             "Peak rise of the resident set during encoding over the resident set just before it (after model "
             "construction, video creation and a one-frame warm-up), VmHWM reset through `/proc/self/clear_refs`, "
             "with `MALLOC_MMAP_THRESHOLD_=65536` so freed tensors leave the resident set. Slope = (peak at 96 − "
             "peak at 16 frames) / 80. "
             f"Chunked = `encode_clips(video, T, chunk_frames={chunk})`: the blocks run one after the other, each "
             f"over {chunk} frames at a time in time order; a temporal layer writes each chunk's keys/values into a "
             "store sized for the clip, which the later chunks read, and the next temporal layer reuses the store. "
             "One-shot = `encode_clips(video, T)`: every block on all frames at once (no store). "
             "Predicted slope = residual stream + one temporal layer's keys/values = S · C · bytes + 2 · S' · C · "
             f"bytes = {record['tokens_per_frame']} · {record['vision_hidden']} · {size} B + 2 · "
             f"{record['temporal_tokens_per_frame']} · {record['vision_hidden']} · {size} B per frame (S' = "
             "temporal tokens per frame; the projected output, "
             f"{record['output_bytes_per_frame'] / 1e3:.1f} kB per frame, is written after the store is freed). "
             "*Hidden states / frame* = slope / (S · C · bytes).", "",
             *table(["L", "chunked 16 fr. MB", "chunked 96 fr. MB", "slope MB/frame", "predicted",
                     "hidden states / frame", "one-shot 16 fr. MB", "one-shot 96 fr. MB", "one-shot slope",
                     "one-shot hidden states / frame", "one-shot / chunked at 96", "one-shot / chunked slope"], body),
             "One-shot encoding holds the activations of a whole block for every frame at its peak (norm outputs, "
             "qkv, the MLP intermediate and its GELU, …), chunked encoding only for the frames of one chunk, plus "
             "the residual stream and one layer's temporal keys/values for every frame. The slope does not depend "
             "on the number of temporal layers L, because the layers run one after the other and share the store.",
             ""]
    extract = summary["extract_feature_memory"]
    if extract and extract["extra_per_frame_mb"] > 0.1 * extract["pixel_bytes_per_frame_mb"]:
        lines += [f"**Package note.** The public `extract_feature(…, chunk_frames={chunk})` peaks at "
                  f"{extract['extract_96_mb']:.0f} MB for 96 frames (L = {extract['temporal_layers']}) where "
                  f"`encode_clips` peaks at {extract['encode_clips_96_mb']:.0f} MB: "
                  f"{extract['extra_per_frame_mb']:.2f} MB more per frame, the size of one input frame "
                  f"({extract['pixel_bytes_per_frame_mb']:.2f} MB): "
                  "the frames are copied before encoding.", ""]
    return lines


def stage1_section(summary: dict) -> list[str]:
    """PruneVid stage-1 time."""
    body = [[str(r["frames"]), fmt(r["stage1_s"] * 1e3, ".2f"), fmt(r["share_of_pvc_prefill"], ".2%"),
             fmt(r["tokens_in"], "d"), fmt(r["tokens_out"], "d"), fmt(r["segments"], "d"), fmt(r["dpc_calls"], "d"),
             str(r["n"])] for r in summary["stage1"]]
    return ["## PruneVid stage 1 (`merge_video_tokens` on the projected PVC tokens)", "",
            *table(["frames", "ms", "share of PVC prefill", "tokens in", "tokens out", "segments", "DPC calls", "runs"],
                   body)]


def conversion_section(conversion: dict) -> list[str]:
    """The conversion memory benchmark, quoted."""
    lines = ["## Conversion memory (`benchmarks/conversion_memory.py`)", ""]
    if conversion.get("status") != "ok":
        detail = conversion.get("reason", "")
        return lines + [f"**{conversion.get('status', 'skipped')}**: {detail}", ""]
    data = conversion["results"]
    scalars = {k: v for k, v in data.items() if not isinstance(v, (dict, list))} if isinstance(data, dict) else {}
    if scalars:
        lines += table(["key", "value"], [[k, str(v)] for k, v in scalars.items()])
    lines += [f"Ran in {conversion['seconds']:.0f} s (exit code {conversion['exit_code']}; its own verdict: "
              f"`{conversion['stdout_tail'].strip().splitlines()[-1] if conversion['stdout_tail'].strip() else '-'}`). "
              "Its JSON, quoted:", "", "```json",
              json.dumps(data, indent=1, ensure_ascii=False)[:6000], "```", ""]
    return lines


def environment_section(env: dict) -> list[str]:
    """Versions, hardware, invocation, machine load."""
    rows = [[k, f"{v:.1%}" if k.endswith("cpu_share") or k.endswith("cpu_share_at_start") else
             f"{v:.0f} s" if k == "wall_time_s" else str(v)] for k, v in env.items()]
    return ["## Environment", "", *table(["", ""], rows)]


def provenance(env: dict) -> str:
    """Which command made the figures, when, where, and how busy the machine was."""
    device = env["gpu"] if env["device"].startswith("cuda") else (
        f"CPU ({env['cpu']}, {env['threads']} threads) — no GPU in this run, so the `--device cuda --full-size` "
        "path (8B shapes, bf16) was not run")
    share = env.get("other_processes_cpu_share")
    load = "" if share is None else (f" Other processes used {share:.0%} of the machine's CPU time during the run "
                                     "(timings are medians of interleaved repeats to soften that).")
    made = f"Generated by `python {env['command']}` on {env['date']} in {env['wall_time_s']:.0f} s."
    return f"{made} Device: {device}.{load}"


def markdown(results: dict) -> str:
    """The whole ``results.md``: the suite's sections and/or the end-to-end section, whichever the results hold."""
    lines = ["# PVC-InternVL benchmark results", ""]
    if "samples" in results:
        env, summary = results["environment"], results["summary"]
        lines += [provenance(env), "", *targets_section(results["targets"]), *setup_section(results),
                  *tokens_section(summary), *prefill_section(summary), *decode_section(summary),
                  *vision_section(results, summary), *memory_section(results, summary), *stage1_section(summary),
                  *conversion_section(results["conversion_memory"]), *environment_section(env)]
    else:
        lines += targets_section(results["targets"])
    if "end_to_end" in results:
        lines += end_to_end_section(results["end_to_end"])
    return "\n".join(lines)


def ttft_table(rows: dict, models: dict) -> list[str]:
    """The time-to-first-token stages per configuration, in seconds, and the tokens behind them."""
    configs = (A.BASE, A.PVC, A.PRUNEVID)
    depth, tokens = models["real_depth"], models["tokens"]
    labels = {"decode": "video decoding (PyAV, `load_video`)", "preprocess": "preprocessing (frames → pixel values)",
              "vision": f"vision encoder ({depth['vision']} layers, scaled)", "stage1": "PruneVid stage 1",
              "prefill": f"LLM prefill ({depth['llm']} layers, scaled)"}
    body = [[labels[stage], *(fmt(rows[c][f"{stage}_s"], ".2f") if rows[c][f"{stage}_s"] else "–" for c in configs)]
            for stage in A.TTFT_STAGES]
    body.append(["**time to first token**", *(f"**{fmt(rows[c]['ttft_s'], '.1f')}**" for c in configs)])
    body.append(["decoding + preprocessing + vision, share",
                 *(fmt(sum(rows[c]["shares"][k] for k in ("decode", "preprocess", "vision")), ".0%") for c in configs)])
    body.append(["decode, per new token (scaled)", *(fmt(rows[c]["decode_step_s"], ".2f") for c in configs)])
    pruned = tokens[A.PRUNEVID]
    body.append(["visual tokens into the LLM", fmt(tokens[A.BASE]["visual"], ",d"), fmt(tokens[A.PVC]["visual"], ",d"),
                 f"{pruned['visual']:,} (stage 1), {pruned['visual_after_stage2']:,} (stage 2)"])
    body.append(["prompt tokens", fmt(tokens[A.BASE]["prompt"], ",d"), fmt(tokens[A.PVC]["prompt"], ",d"),
                 f"{pruned['prompt']:,} → {pruned['prompt_after_stage2']:,} after layer {models['selected_layer']}"])
    return table(["64-frame video, seconds", *(A.LABELS[c] for c in configs)], body)


def end_to_end_section(section: dict) -> list[str]:
    """``run.py --end-to-end``: time to first token by stage, several questions, decode time against length."""
    env, plan, video, models = section["environment"], section["plan"], section["video"], section["one_layer"]["models"]
    rows, work = section["summary"]["ttft"], section["summary"]["workload"]
    vision, llm, check = models["vision"], models["llm"], models["frame_scaling_check"]
    samples = section["one_layer"]["samples"]
    scaled = next(s["estimate_s"] for s in samples if s["stage"] == "vision" and s["config"] == A.PVC)
    costliest = A.median([s["layer_s"] for s in samples if s["stage"] == "prefill" and s["config"] == A.BASE])
    lines = ["## End to end: time to first token by stage, several questions about one video", "", provenance(env), "",
             f"The video: synthetic H.264, {video['resolution']} ({video['width']}x{video['height']}), "
             f"{video['minutes']:g} minutes at {video['fps']} fps, a keyframe every {video['gop']} frames "
             f"(`benchmarks/decode.py` makes it); {plan['frames']} frames sampled as the official `get_index` does "
             "and read by the package's `load_video` (PyAV, seeking where that is cheaper).", "",
             "### Time to first token at the 8B shapes", "",
             "Each model stage runs at its real width (vision: hidden "
             f"{vision['hidden_size']}, {vision['num_attention_heads']} heads, MLP {vision['intermediate_size']}; LLM: "
             f"hidden {llm['hidden_size']}, {llm['num_attention_heads']} heads / {llm['num_key_value_heads']} KV "
             f"heads, MLP {llm['intermediate_size']}; fp32) with one layer, and is scaled to the real depth with the "
             "time measured inside that layer: total + (depth − 1) × layer. The vision encoder runs "
             f"{plan['vision_frames']} of the {plan['frames']} frames, scaled to all of them (per-frame work; "
             f"checked once on all {check['frames']} frames for PVC: {check['estimate_s']:.1f} s scaled against "
             f"{scaled:.1f} s from {plan['vision_frames']} frames in the first repeat). The LLM runs the real prompt "
             "lengths (the package's chat prompt, `harness.video_prompt`) on random text embeddings; PVC's visual "
             "tokens are those of the video, which PruneVid stage 1 merges (its real width); PruneVid prunes after "
             f"the one layer, which stands for layers 0..{models['selected_layer']}, the rest scaled from a layer on "
             "the pruned prompt. Decoding and preprocessing are measured as they are. Medians of "
             f"{plan['repeats']} interleaved repeats ({plan['large_repeats']} for the InternVL2 prefill: "
             f"{costliest:.0f} s for its one layer here); a decode step is the median of {plan['decode_steps']} "
             "steps per repeat. On a GPU every model stage shrinks by orders of magnitude while decoding and "
             "preprocessing stay on the CPU, so their share grows.", "", *ttft_table(rows, models)]
    parts = ("decode", "preprocess", "vision", "prefill", "other", "total")
    names = {"decode": "video decoding", "preprocess": "preprocessing (+ prompts)", "vision": "vision encoder",
             "prefill": "LLM prefill", "other": "other (projection, cache copies, generate set-up)",
             "total": "**decode + vision + prefill**"}
    body = [[names[k], fmt(work["separate"][k], ".2f"), fmt(work["reuse"][k], ".2f"),
             fmt(work["reuse"][k] / work["separate"][k], ".2f") if work["separate"][k] > 0.01 else "–"] for k in parts]
    lines += ["### Several questions about one video", "",
              f"PVC at the reduced widths of the suite (real token and layer counts), {work['questions']} questions "
              f"about the {plan['frames']}-frame video ({', '.join(str(n) for n in work['prompt_tokens'])} prompt "
              f"tokens), greedy answers of {plan['answer_tokens']} tokens. *Separate*: "
              "`model.generate(**processor.apply_chat_template(...))` per question, each decoding and encoding the "
              "video. *Encode once*: `processor(videos=...)` and `model.encode_media(...)` once, "
              f"`model.prefill(...)` of the {work['prefix_tokens']} prompt tokens all questions share (system prompt "
              "+ video) once, then `model.generate(..., visual_features=media, past_key_values=copy.deepcopy(cache))` "
              "per question. Seconds up to each answer's first token, summed over the questions; medians of "
              f"{work['repeats']} repeats (the order of the two paths alternating). Answers "
              + ("identical" if work["answers_identical"] else "**DIFFERENT**") + " in every repeat; prompts "
              + ("identical." if work["prompts_identical"] else "**DIFFERENT**."), "",
              *table(["seconds", "separate calls", "encode once", "ratio"], body)]
    return lines + decode_length_section(section["decode_vs_length"])


def decode_length_section(quoted: dict) -> list[str]:
    """The decode-time-against-length medians of results_decode.json, quoted."""
    lines = ["### Decode time against video length", ""]
    if "rows" not in quoted:
        return lines + [f"`{quoted['source']}`: {quoted['status']}.", ""]
    readers = [r for r in ("pyav-sequential", "pyav-auto", "decord") if any(x["reader"] == r for x in quoted["rows"])]
    cells = {(r["resolution"], r["length_min"], r["reader"]): r["median_s"] for r in quoted["rows"]}
    keys = sorted({(r["resolution"], r["length_min"], r["frames"]) for r in quoted["rows"]})
    body = [[res, f"{minutes:g}", f"{frames:,}", *(fmt(cells.get((res, minutes, r)), ".2f") for r in readers)]
            for res, minutes, frames in keys]
    passed = sum(t["status"] == "PASS" for t in quoted["targets"])
    return lines + [f"Seconds to read {quoted['segments']} frames, medians, quoted from `{quoted['source']}` "
                    f"(`python {quoted['command']}`, {quoted['date']}; {passed} of {len(quoted['targets'])} targets "
                    "pass; plot `benchmarks/results_decode.png`).", "",
                    *table(["resolution", "minutes", "frames", *readers], body)]


def plot(results: dict, path: pathlib.Path) -> None:
    """Time (prefill, vision) and LLM tokens vs. frames for each configuration."""
    summary = results["summary"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    frames = [r["frames"] for r in summary["prefill"]]
    for config in (A.BASE, A.PVC, A.PRUNEVID):
        axes[0].plot(frames, [r[f"{config}_s"] for r in summary["prefill"]], "o-", color=COLORS[config],
                     label=A.LABELS[config])
    axes[0].set(title="LLM prefill (time to first token)", ylabel="seconds", yscale="log")
    vision = summary["vision_time"]
    for config in (A.BASE, A.PVC):
        axes[1].plot([r["frames"] for r in vision], [r[f"{config}_s"] for r in vision], "o-", color=COLORS[config],
                     label=A.LABELS[config])
    axes[1].set(title="Vision encoder", ylabel="seconds")
    tokens = summary["tokens"]
    xs = [r["frames"] for r in tokens]
    axes[2].plot(xs, [r["baseline_prompt"] for r in tokens], "o-", color=COLORS[A.BASE], label=A.LABELS[A.BASE])
    axes[2].plot(xs, [r["pvc_prompt"] for r in tokens], "o-", color=COLORS[A.PVC], label=A.LABELS[A.PVC])
    axes[2].plot(xs, [r["stage1_prompt"] for r in tokens], "o--", color=COLORS[A.PRUNEVID],
                 label="PVC + PruneVid, layers 0..M")
    axes[2].plot(xs, [r["stage2_prompt"] for r in tokens], "o-", color=COLORS[A.PRUNEVID],
                 label="PVC + PruneVid, after layer M")
    axes[2].set(title="LLM prompt tokens", ylabel="tokens", yscale="log")
    shapes = "8B shapes" if results["models"]["full_size"] else "reduced widths"
    for ax in axes:
        ax.set_xlabel("frames")
        ax.set_xticks(frames)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    device = results["environment"]["gpu"] if results["models"]["device"] != "cpu" else "CPU"
    fig.suptitle(f"PVC-InternVL, {shapes}, {device} (medians)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _finite(value):
    """NaN -> None, recursively, so the JSON file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_reports(results: dict, base: pathlib.Path) -> list[pathlib.Path]:
    """Add the summary and targets to ``results`` and write ``base``.json / .md / .png."""
    if "samples" in results:
        results["summary"] = summarize(results)
    if "end_to_end" in results:
        section = results["end_to_end"]
        section["summary"] = {"ttft": A.ttft_rows(section), "workload": A.workload_rows(section)}
    results["targets"] = T.targets(results)
    paths = [base.with_suffix(".json"), base.with_suffix(".md")]
    base.parent.mkdir(parents=True, exist_ok=True)
    paths[0].write_text(json.dumps(_finite(results), indent=1, default=float, allow_nan=False) + "\n")
    paths[1].write_text(markdown(results) + "\n")
    if "samples" in results:  # the plot shows the suite's figures
        paths.append(base.with_suffix(".png"))
        plot(results, paths[2])
    return paths


if __name__ == "__main__":
    saved = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).with_name("results.json"))
    write_reports(json.loads(saved.read_text()), saved.with_suffix(""))
