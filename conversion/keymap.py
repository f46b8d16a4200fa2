"""Source tensor names -> target tensor names: the rules, the PVC guesses, the facts read from shapes, and
the full key plan that is checked before any tensor is loaded.

Rules are tried in order; a rule *applies* to a source key when its regex matches the whole key and
(for built-in rules) every target name it produces exists in the target model. User rules
(``--key-map``) come first and always apply when they match; a user rule may map to ``null`` to drop a
tensor on purpose.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from conversion.common import ConversionError, layer_ranges

COPY, SPLIT_QKV = "copy", "split_qkv"


@dataclass(frozen=True)
class TensorInfo:
    """One source tensor, from its safetensors header."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype string: "F32", "BF16", ...
    shard: str  # file name inside the source folder

    @property
    def nbytes(self) -> int:
        size = DTYPE_BYTES.get(self.dtype, 4)
        for dim in self.shape:
            size *= dim
        return size


DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class Rule:
    pattern: str
    replacement: str | None  # None: drop the tensor (user rules only)
    origin: str  # "key-map", "identity", "internlm2", "pvc-guess"
    op: str = COPY

    def match(self, key: str) -> re.Match | None:
        return re.fullmatch(self.pattern, key)

    def targets(self, match: re.Match) -> list[str]:
        try:
            name = match.expand(self.replacement)
        except (re.error, IndexError) as err:
            raise ConversionError(f"{self.origin} rule {self.pattern!r} -> {self.replacement!r} cannot build a target "
                                  f"name for {match.string}: {err}") from err
        if self.op == SPLIT_QKV:
            return [name.replace("{qkv}", part) for part in ("q_proj", "k_proj", "v_proj")]
        return [name]


# ------------------------------------------------------------------------------------------- rule sets
IDENTITY_VISION_RULES = (
    Rule(r"(?:vision_model|mlp1)\..+", r"\g<0>", "identity"),
)
NATIVE_LLM_RULES = (
    Rule(r"language_model\..+", r"\g<0>", "identity"),
)
_LM = r"language_model\.model\.layers\.(\d+)\."
INTERNLM2_RULES = (
    Rule(r"language_model\.model\.tok_embeddings\.weight", "language_model.model.embed_tokens.weight", "internlm2"),
    Rule(_LM + r"attention\.wqkv\.weight", r"language_model.model.layers.\1.self_attn.{qkv}.weight", "internlm2",
         SPLIT_QKV),
    Rule(_LM + r"attention\.wo\.weight", r"language_model.model.layers.\1.self_attn.o_proj.weight", "internlm2"),
    Rule(_LM + r"feed_forward\.w1\.weight", r"language_model.model.layers.\1.mlp.gate_proj.weight", "internlm2"),
    Rule(_LM + r"feed_forward\.w3\.weight", r"language_model.model.layers.\1.mlp.up_proj.weight", "internlm2"),
    Rule(_LM + r"feed_forward\.w2\.weight", r"language_model.model.layers.\1.mlp.down_proj.weight", "internlm2"),
    Rule(_LM + r"attention_norm\.weight", r"language_model.model.layers.\1.input_layernorm.weight", "internlm2"),
    Rule(_LM + r"ffn_norm\.weight", r"language_model.model.layers.\1.post_attention_layernorm.weight", "internlm2"),
    Rule(r"language_model\.model\.norm\.weight", "language_model.model.norm.weight", "internlm2"),
    Rule(r"language_model\.output\.weight", "language_model.lm_head.weight", "internlm2"),
)

# Rotary ``inv_freq`` buffers that some older checkpoints saved: recomputed from the config, never loaded.
BUFFER_DROP_RULES = (
    Rule(r"language_model\..*rotary_emb\.inv_freq", None, "drop-buffer"),
)

# PVC-specific tensors. THESE ARE GUESSES: the official PVC modeling code and weight index are not
# available (pvc.md section 0 / 8.3), so the upstream names below are plausible spellings only (DiT-style
# adaLN_modulation / t_embedder, torch.nn.MultiheadAttention in_proj/out_proj, common abbreviations). A
# guess only applies when its target exists in the model built from the config; anything else stays
# unmapped and the converter refuses -- run --inspect on the real checkpoint and pass --key-map.
_VL = r"vision_model\.encoder\.layers\.(\d+)\."
_TEMPORAL = r"(?:temporal_attn|temporal_attention|temporal_attn_layer|t_attn|attn_t|attn_temporal|tmha|t_mha|temporal_mha|temporal_self_attn)"
_ADALN = r"(?:adaLN_modulation|adaln_modulation|ada_ln_modulation|adaLN|adaln|ada_ln|modulation)"
_TIME = r"(?:time_embedder|t_embedder|timestep_embedder|time_embed|time_embedding|temporal_embedder|t_embed)"
PVC_GUESS_RULES = (
    Rule(_VL + _TEMPORAL + r"\.(qkv|proj)\.(weight|bias)", r"vision_model.encoder.layers.\1.temporal_attn.\2.\3",
         "pvc-guess"),
    Rule(_VL + _TEMPORAL + r"\.in_proj_(weight|bias)", r"vision_model.encoder.layers.\1.temporal_attn.qkv.\2",
         "pvc-guess"),
    Rule(_VL + _TEMPORAL + r"\.out_proj\.(weight|bias)", r"vision_model.encoder.layers.\1.temporal_attn.proj.\2",
         "pvc-guess"),
    Rule(_VL + _TEMPORAL + r"\.(?:norm|pre_norm|norm1)\.(weight|bias)",
         r"vision_model.encoder.layers.\1.temporal_attn.norm.\2", "pvc-guess"),
    Rule(_VL + r"(?:temporal_norm|norm_t|t_norm|temporal_attn_norm)\.(weight|bias)",
         r"vision_model.encoder.layers.\1.temporal_attn.norm.\2", "pvc-guess"),
    Rule(_VL + _ADALN + r"\.(?:1\.|linear\.|proj\.)?(weight|bias)", r"vision_model.encoder.layers.\1.adaLN_modulation.1.\2",
         "pvc-guess"),
    Rule(r"vision_model\.(?:embeddings\.|encoder\.)?" + _TIME + r"\.mlp\.(0|2)\.(weight|bias)",
         r"vision_model.time_embedder.mlp.\1.\2", "pvc-guess"),
    Rule(r"vision_model\.(?:embeddings\.|encoder\.)?" + _TIME + r"\.(?:linear_1|fc1|linear1)\.(weight|bias)",
         r"vision_model.time_embedder.mlp.0.\1", "pvc-guess"),
    Rule(r"vision_model\.(?:embeddings\.|encoder\.)?" + _TIME + r"\.(?:linear_2|fc2|linear2)\.(weight|bias)",
         r"vision_model.time_embedder.mlp.2.\1", "pvc-guess"),
)

# The package's own names of the PVC tensors (what the guesses produce).
CANONICAL_TEMPORAL = {
    "temporal_qkv": re.compile(r"vision_model\.encoder\.layers\.(\d+)\.temporal_attn\.qkv\.weight"),
    "temporal_norm": re.compile(r"vision_model\.encoder\.layers\.(\d+)\.temporal_attn\.norm\.weight"),
    "adaln": re.compile(r"vision_model\.encoder\.layers\.(\d+)\.adaLN_modulation\.1\.weight"),
    "time_in": re.compile(r"vision_model\.time_embedder\.mlp\.0\.weight"),
}


def load_user_rules(path: str | Path | None) -> list[Rule]:
    """``--key-map FILE``: a JSON object ``{regex: target-or-null}`` (``\\1`` / ``\\g<name>`` groups); these
    rules come first, a ``null`` target drops the tensor."""
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as handle:
            table = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise ConversionError(f"cannot read --key-map file {path}: {err}") from err
    if not isinstance(table, dict):
        raise ConversionError(f"--key-map file {path} must hold a JSON object {{regex: target name or null}}")
    rules = []
    for pattern, target in table.items():
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConversionError(f"--key-map file {path}: pattern {pattern!r} is not a valid regular expression: {err}") from err
        if target is not None and not isinstance(target, str):
            raise ConversionError(f"--key-map file {path}: the target of {pattern!r} must be a string or null, got {target!r}")
        rules.append(Rule(pattern, target, "key-map"))
    return rules


def make_rules(llm_kind: str, user_rules: list[Rule]) -> list[Rule]:
    llm_rules = INTERNLM2_RULES if llm_kind == "internlm2" else NATIVE_LLM_RULES
    return [*user_rules, *llm_rules, *IDENTITY_VISION_RULES, *PVC_GUESS_RULES, *BUFFER_DROP_RULES]


# ------------------------------------------------------------------------------------ facts from shapes
@dataclass
class TensorFacts:
    """What the tensor names and shapes say about the model."""

    temporal_layers: list[int] = field(default_factory=list)
    adaln_layers: list[int] = field(default_factory=list)
    adaln_widths: dict[int, int] = field(default_factory=dict)  # layer -> modulation rows
    temporal_norm: bool = False
    time_embed_dim: int | None = None
    mlp1_width: int | None = None

    @property
    def has_temporal(self) -> bool:
        return bool(self.temporal_layers or self.adaln_layers or self.time_embed_dim)


def canonical_name(key: str, rules: list[Rule]) -> str:
    """The package name a source key would get from the user / guess rules (no target check)."""
    for rule in rules:
        if rule.origin not in ("key-map", "pvc-guess") or rule.replacement is None:
            continue
        match = rule.match(key)
        if match:
            return rule.targets(match)[0]
    return key


def derive_facts(tensors: list[TensorInfo], rules: list[Rule]) -> TensorFacts:
    facts = TensorFacts()
    for tensor in tensors:
        name = canonical_name(tensor.name, rules)
        if match := CANONICAL_TEMPORAL["temporal_qkv"].fullmatch(name):
            facts.temporal_layers.append(int(match.group(1)))
        elif match := CANONICAL_TEMPORAL["temporal_norm"].fullmatch(name):
            facts.temporal_norm = True
        elif match := CANONICAL_TEMPORAL["adaln"].fullmatch(name):
            facts.adaln_layers.append(int(match.group(1)))
            facts.adaln_widths[int(match.group(1))] = tensor.shape[0]
        elif CANONICAL_TEMPORAL["time_in"].fullmatch(name) and len(tensor.shape) == 2:
            facts.time_embed_dim = tensor.shape[1]
        elif name == "mlp1.0.weight":
            facts.mlp1_width = tensor.shape[0]
    facts.temporal_layers.sort()
    facts.adaln_layers.sort()
    return facts


def apply_facts(kwargs: dict, facts: TensorFacts, problems: list[str]) -> list[str]:
    """Write the tensor-derived values into the config kwargs; return human-readable notes."""
    vision = kwargs["vision_config"]
    hidden = int(vision.get("hidden_size", 1024))
    notes = []
    if facts.mlp1_width:
        ratio = _downsample_ratio(facts.mlp1_width, hidden, problems)
        declared = kwargs.get("downsample_ratio")
        if ratio is not None:
            if declared is not None and abs(float(declared) - ratio) > 1e-9:
                problems.append(
                    f"config.json says downsample_ratio {declared}, but mlp1.0.weight has width {facts.mlp1_width} "
                    f"= {facts.mlp1_width // hidden} x {hidden}, i.e. downsample_ratio {ratio}"
                )
            kwargs.setdefault("downsample_ratio", ratio)
            notes.append(f"mlp1 width {facts.mlp1_width} -> downsample_ratio {ratio}")
    if not kwargs.get("use_temporal"):
        if facts.has_temporal:
            problems.append(
                "the checkpoint has PVC temporal tensors (layers "
                f"{layer_ranges(facts.temporal_layers + facts.adaln_layers)}) but config.json does not set use_temporal"
            )
        return notes
    if not facts.has_temporal:
        problems.append(
            "config.json sets use_temporal, but no source tensor maps to a PVC temporal module; run --inspect and "
            "map the temporal tensors with --key-map"
        )
        return notes
    widths = set(facts.adaln_widths.values())
    if len(widths) > 1:
        problems.append(f"AdaLN modulation widths differ between layers: {facts.adaln_widths}")
    elif widths:
        rows = widths.pop()
        if rows % hidden or rows // hidden not in (4, 6):
            problems.append(f"AdaLN modulation width {rows} is not 4C or 6C for C = {hidden}")
        else:
            _set_checked(vision, "adaln_num_modulations", rows // hidden, problems)
            notes.append(f"AdaLN modulation width {rows} = {rows // hidden}C")
    _set_checked(vision, "temporal_attn_layers", facts.temporal_layers, problems)
    _set_checked(vision, "adaln_layers", facts.adaln_layers, problems)
    _set_checked(vision, "temporal_attn_norm", facts.temporal_norm, problems)
    if facts.time_embed_dim:
        _set_checked(vision, "time_embed_dim", facts.time_embed_dim, problems)
    notes.append(
        f"temporal attention in layers [{layer_ranges(facts.temporal_layers)}], AdaLN in layers "
        f"[{layer_ranges(facts.adaln_layers)}], time embedding {facts.time_embed_dim}"
    )
    return notes


def _set_checked(vision: dict, key: str, value, problems: list[str]) -> None:
    declared = vision.get(key)
    if declared is None:
        vision[key] = value
        return
    num_layers = int(vision.get("num_hidden_layers", 24))
    normal = sorted({int(i) % num_layers for i in declared}) if isinstance(declared, list) else declared
    if normal != value:
        problems.append(f"vision_config.{key} is {declared} in config.json but the tensors say {value}")
    vision[key] = value


def _downsample_ratio(width: int, hidden: int, problems: list[str]) -> float | None:
    squared = width // hidden
    root = round(squared**0.5)
    if width % hidden or root * root != squared:
        problems.append(f"mlp1.0.weight width {width} is not k^2 x {hidden} for an integer k")
        return None
    return 1.0 / root


# -------------------------------------------------------------------------------------------- the plan
@dataclass
class PlanEntry:
    source: TensorInfo
    targets: list[tuple[str, tuple[int, ...]]]
    op: str
    rule: Rule
    out_dtype: str


@dataclass
class KeyPlan:
    entries: list[PlanEntry] = field(default_factory=list)
    dropped: list[tuple[TensorInfo, Rule]] = field(default_factory=list)
    unmapped: list[TensorInfo] = field(default_factory=list)
    bad_targets: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    shape_mismatches: list[str] = field(default_factory=list)
    dtype_mismatches: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = [f"unmapped source tensor {t.name} {list(t.shape)} {t.dtype} (no rule maps it)" for t in self.unmapped]
        out += self.bad_targets + self.duplicates + self.shape_mismatches + self.dtype_mismatches
        out += [f"target tensor {name} has no source tensor" for name in self.missing]
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for entry in self.entries:
            out[entry.rule.origin] += 1
        return dict(out)


@dataclass(frozen=True)
class Expected:
    """One tensor of the target model: its shape and whether it is floating point."""

    shape: tuple[int, ...]
    floating: bool


@dataclass(frozen=True)
class LLMShape:
    """What the ``wqkv`` split needs."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden: int


def split_qkv_shapes(shape: tuple[int, ...], llm: LLMShape) -> list[tuple[int, ...]] | str:
    """Target shapes of q/k/v for a ``wqkv`` of ``shape``, or an error message."""
    groups = llm.num_heads // llm.num_kv_heads
    rows = llm.num_kv_heads * (groups + 2) * llm.head_dim
    if len(shape) != 2 or shape[0] != rows or shape[1] != llm.hidden:
        return (
            f"has shape {list(shape)}, expected [{rows}, {llm.hidden}] = [{llm.num_kv_heads} kv heads x "
            f"({groups} q + k + v) x {llm.head_dim}, hidden {llm.hidden}]"
        )
    return [
        (llm.num_heads * llm.head_dim, llm.hidden),
        (llm.num_kv_heads * llm.head_dim, llm.hidden),
        (llm.num_kv_heads * llm.head_dim, llm.hidden),
    ]


def _resolve(tensor: TensorInfo, rules: list[Rule], expected: dict[str, Expected]):
    """``(rule, targets)`` for the first rule that applies, or ``(None, attempted_targets)``."""
    for rule in rules:
        match = rule.match(tensor.name)
        if not match:
            continue
        if rule.replacement is None:
            return rule, []
        targets = rule.targets(match)
        if rule.origin == "key-map" or all(t in expected for t in targets):
            return rule, targets
    return None, []


def build_plan(
    tensors: list[TensorInfo],
    rules: list[Rule],
    expected: dict[str, Expected],
    tied: dict[str, str],
    llm: LLMShape | None,
    out_dtype: str | None,
) -> KeyPlan:
    """Map every source tensor; check targets, shapes, duplicates and missing keys. Loads nothing."""
    plan = KeyPlan()
    produced: dict[str, str] = {}
    for tensor in tensors:
        rule, targets = _resolve(tensor, rules, expected)
        if rule is None:
            plan.unmapped.append(tensor)
            continue
        if rule.replacement is None:
            plan.dropped.append((tensor, rule))
            continue
        shapes = _target_shapes(tensor, rule, llm, plan)
        if shapes is None:
            continue
        entry = PlanEntry(tensor, list(zip(targets, shapes)), rule.op, rule, _out_dtype(tensor.dtype, out_dtype))
        for name, shape in entry.targets:
            if name not in expected:
                plan.bad_targets.append(
                    f"--key-map rule {rule.pattern!r} maps {tensor.name} to {name}, which the converted model does not have"
                )
            elif tuple(expected[name].shape) != tuple(shape):
                plan.shape_mismatches.append(
                    f"shape mismatch: {tensor.name} {list(tensor.shape)} -> {name} {list(shape)}, but the model "
                    f"expects {list(expected[name].shape)}"
                )
            elif expected[name].floating != (tensor.dtype in FLOAT_DTYPES):
                kind = "a floating-point" if expected[name].floating else "an integer"
                plan.dtype_mismatches.append(
                    f"dtype mismatch: {tensor.name} is {tensor.dtype} in {tensor.shard}, but {name} is {kind} tensor"
                )
            if name in produced:
                plan.duplicates.append(f"{name} would be written from both {produced[name]} and {tensor.name}")
            produced[name] = tensor.name
        plan.entries.append(entry)
    for name in expected:
        if name not in produced and not (name in tied and tied[name] in produced):
            plan.missing.append(name)
    if plan.dropped:
        plan.notes.append(f"dropped {len(plan.dropped)} source tensor(s): " + ", ".join(
            sorted({f"{group_pattern(t.name)} ({rule.origin})" for t, rule in plan.dropped})))
    for name, source in tied.items():
        if name in produced and source in produced:
            plan.notes.append(f"{name} is tied to {source}; the source's separate {name} is written but ignored at load")
    return plan


def _target_shapes(tensor: TensorInfo, rule: Rule, llm: LLMShape | None, plan: KeyPlan):
    if rule.op != SPLIT_QKV:
        return [tensor.shape]
    if llm is None:
        plan.shape_mismatches.append(f"{tensor.name} needs a wqkv split but the LLM shape is unknown")
        return None
    shapes = split_qkv_shapes(tensor.shape, llm)
    if isinstance(shapes, str):
        plan.shape_mismatches.append(f"shape mismatch: {tensor.name} {shapes}")
        return None
    return shapes


FLOAT_DTYPES = {"F32", "F16", "BF16", "F64"}
SAFETENSORS_DTYPE = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def _out_dtype(source: str, requested: str | None) -> str:
    if requested in (None, "auto") or source not in FLOAT_DTYPES:
        return source
    return SAFETENSORS_DTYPE[requested]


# ------------------------------------------------------------------------------------- grouping report
def group_pattern(name: str) -> str:
    """``vision_model.encoder.layers.7.x.weight`` -> ``vision_model.encoder.layers.N.x.weight``."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)", "N", name)


def group_tensors(tensors: list[TensorInfo]) -> dict[str, list[TensorInfo]]:
    groups: dict[str, list[TensorInfo]] = defaultdict(list)
    for tensor in tensors:
        groups[group_pattern(tensor.name)].append(tensor)
    return dict(groups)


def layer_indices(tensors: list[TensorInfo]) -> list[int]:
    out = []
    for tensor in tensors:
        match = re.search(r"\.layers\.(\d+)\.", tensor.name)
        if match:
            out.append(int(match.group(1)))
    return sorted(set(out))
