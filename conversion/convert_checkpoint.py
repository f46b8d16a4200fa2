#!/usr/bin/env python
"""Convert an official InternVL2 (``internvl_chat``) or PVC (``pvc_internvl``) checkpoint into a
self-contained PVC-InternVL checkpoint (remote code; transformers 5.x and 4.57).

Run from the repository root::

    python conversion/convert_checkpoint.py --src DIR_OR_REPO_ID --dst DST_DIR [--revision REV]
        [--dtype auto|float32|bfloat16|float16] [--img-context-token-id N] [--key-map FILE] [--config-map FILE]
        [--set KEY=JSON ...] [--max-shard-size 5GB] [--overwrite] [--license ID] [--base-model REPO_ID]
        [--push-to-hub REPO_ID [--push-revision BRANCH] [--create-pr] [--commit-message TEXT] [--private]]
    python conversion/convert_checkpoint.py --inspect DIR_OR_REPO_ID [--revision REV] [--key-map FILE] ...

What it does:

1. Reads ``SRC/config.json`` and builds the new :class:`PVCInternVLConfig` (InternLM2 becomes a native
   Llama config; Qwen2 / Phi-3 / Llama stay native). Unknown config keys make it refuse.
2. Reads only the safetensors headers and builds the full key plan (source -> target name, shape,
   dtype), checked against a ``PVCInternVLChatModel`` instantiated on the meta device. Any unmapped source
   tensor, any target tensor without a source and any shape mismatch makes it refuse -- listing them all.
3. Converts one source shard at a time (InternLM2 ``wqkv`` is split into q/k/v) into a temporary folder
   next to DST, writes config, generation config, tokenizer, processor config, the remote-code files
   and a model card, and renames the folder into place only at the very end. On any failure nothing is
   left at DST.

``--inspect`` reads only the safetensors headers (for a Hub repo id through ``get_safetensors_metadata``, no
weight download) and prints the source tensors no rule maps (grouped by layer pattern, with shapes, dtypes
and layer ranges), the config fields still to settle, what the shapes reveal (temporal layers, AdaLN width,
pixel-shuffle ratio) and the verdict, then exits without writing anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

_SCRIPT_DIR = Path(__file__).resolve().parent
_ROOT = _SCRIPT_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _SCRIPT_DIR]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from huggingface_hub.errors import StrictDataclassError  # noqa: E402  (a transformers-5 LLM config's field check)

from conversion import configs, destination, hub, keymap, model_card, weights, writer  # noqa: E402
from conversion import tokenizer as tokenizers_io  # noqa: E402
from conversion.common import (  # noqa: E402
    ConversionError, format_bytes, layer_ranges, logger, parse_size, read_json, read_json_object, setup_logging,
)
from conversion.package import remote_module  # noqa: E402



# ================================================================================================ inputs
@dataclass
class Source:
    folder: Path
    config: dict
    tensors: list[keymap.TensorInfo]
    shards: list[str]
    tokenizer: tokenizers_io.SourceTokenizer
    generation: dict | None
    repo_id: str | None = None  # the Hub repo the source came from


@dataclass
class Prepared:
    """Everything decided before any tensor is loaded."""

    config: Any
    config_plan: configs.ConfigPlan
    plan: keymap.KeyPlan
    facts: keymap.TensorFacts
    llm_shape: keymap.LLMShape | None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


_WARNED: set[str] = set()


def warn(message: str) -> None:
    """Log a warning once (the same text is not repeated in the closing summary)."""
    _WARNED.add(message)
    logger.warning(message)


def load_source(folder: Path, tensors: list[keymap.TensorInfo] | None = None, repo_id: str | None = None) -> Source:
    """The source checkpoint in ``folder``; ``tensors`` (from remote headers) replaces reading local shards."""
    if not (folder / "config.json").is_file():
        raise ConversionError(f"{repo_id or folder} has no config.json")
    config = configs.check_source_config(read_json(folder / "config.json"), folder / "config.json")
    generation_path = folder / "generation_config.json"
    generation = None
    if generation_path.is_file():
        generation = read_json_object(generation_path, "fix generation_config.json or delete it (it is optional)")
    return Source(
        folder=folder,
        config=config,
        tensors=weights.read_headers(folder) if tensors is None else tensors,
        shards=weights.source_shards(folder) if tensors is None else list(dict.fromkeys(t.shard for t in tensors)),
        tokenizer=tokenizers_io.read_source_tokenizer(folder),
        generation=generation,
        repo_id=repo_id,
    )


def source_card(folder: Path) -> dict:
    """The metadata of the source's model card (license, ...), {} without one."""
    from huggingface_hub import ModelCard

    if not (folder / "README.md").is_file():
        return {}
    try:
        return ModelCard.load(folder / "README.md").data.to_dict()
    except Exception as err:  # a card without valid metadata only loses the license hint
        warn(f"the source model card {folder / 'README.md'} has no readable metadata ({err})")
        return {}


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set KEY=JSON`` (a value that is not valid JSON is taken as a string)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConversionError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


# ============================================================================================== planning
def resolve_img_context_id(source: Source, cli_value: int | None, config_value: int | None) -> tuple[int | None, str]:
    context_token = remote_module("conversation").IMG_CONTEXT_TOKEN
    candidates = {
        "--img-context-token-id": cli_value,
        "the source tokenizer": source.tokenizer.token_id(context_token),
        "config.json": config_value,
    }
    given = {origin: value for origin, value in candidates.items() if value is not None}
    if len(set(given.values())) > 1:
        raise ConversionError(f"conflicting {context_token} token ids: {given}")
    if not given:
        return None, (
            f"img_context_token_id is not known (no tokenizer with {context_token}, no --img-context-token-id): left "
            "None; set model.img_context_token_id (or config.img_context_token_id) after loading"
        )
    origin, value = next(iter(given.items()))
    return int(value), f"img_context_token_id = {value} (from {origin})"


def expected_tensors(config: Any) -> tuple[dict[str, keymap.Expected], dict[str, str]]:
    """Target names (the official checkpoint names the model saves under), shapes and dtype kinds from a
    ``PVCInternVLChatModel`` built on the meta device (no memory), and its tied weights ``{target: source}``.
    Non-persistent buffers (rotary ``inv_freq``) are not listed."""
    import torch

    modeling = remote_module("modeling_pvc_internvl")
    with torch.device("meta"):
        model = modeling.PVCInternVLChatModel(config)
    named = modeling.checkpoint_name
    expected = {named(name): keymap.Expected(tuple(t.shape), t.is_floating_point()) for name, t in model.state_dict().items()}
    tied = {named(k): named(v) for k, v in (getattr(model, "all_tied_weights_keys", None) or {}).items()}  # transformers 5
    if not tied:  # transformers 4: tied parameters are one shared object
        model.tie_weights()
        first_name: dict[int, str] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            if id(param) in first_name:
                tied[named(name)] = first_name[id(param)]
            else:
                first_name[id(param)] = named(name)
    return expected, tied


def make_config(kwargs: dict, overrides: Sequence[str] | None = None) -> Any:
    """``PVCInternVLConfig(**kwargs)`` (which validates every field, the native LLM config's included); its
    error, on one line, names ``--set`` when given."""
    config_module = remote_module("configuration_pvc_internvl")
    try:
        config = config_module.PVCInternVLConfig(**kwargs)
    except (ValueError, TypeError, KeyError, StrictDataclassError) as err:
        hint = f" (check the --set values {list(overrides)})" if overrides else ""
        message = " ".join(str(err).split())  # one line (transformers 5 spreads a field error over several)
        raise ConversionError(f"the config built from config.json is not valid{hint}: {message}") from err
    return writer.finish_config(config)


def llm_shape(llm: dict) -> keymap.LLMShape:
    return keymap.LLMShape(
        num_heads=int(llm["num_attention_heads"]),
        num_kv_heads=int(llm["num_key_value_heads"]),
        head_dim=int(llm["head_dim"]),
        hidden=int(llm["hidden_size"]),
    )


def read_config_map(path: str | None) -> dict:
    if not path:
        return {}
    return read_json_object(Path(path), 'a --config-map file holds {"[vision_config.]key": "package field" or null, '
                                        '...}')


def _config_stage(source: Source, args: argparse.Namespace, strict: bool) -> tuple[configs.ConfigPlan, list[keymap.Rule], keymap.TensorFacts, list[str], list[str]]:
    """Config kwargs with the tensor-derived facts applied; returns (plan, rules, facts, notes, problems)."""
    config_module = remote_module("configuration_pvc_internvl")
    config_plan = configs.build_config_plan(
        source.config,
        config_class=config_module.PVCInternVLConfig,
        vision_class=config_module.PVCInternVisionConfig,
        mapping=read_config_map(args.config_map),
        overrides=parse_overrides(args.set),
        dtype=args.dtype,
        strict=strict,
    )
    problems = list(config_plan.problems)
    context_id, context_note = resolve_img_context_id(
        source, args.img_context_token_id, config_plan.kwargs.get("img_context_token_id")
    )
    if context_id is None:
        warn(context_note)
    config_plan.kwargs["img_context_token_id"] = context_id
    rules = keymap.make_rules(config_plan.llm_kind, keymap.load_user_rules(args.key_map))
    facts = keymap.derive_facts(source.tensors, rules)
    notes = config_plan.notes + keymap.apply_facts(config_plan.kwargs, facts, problems) + [context_note]
    return config_plan, rules, facts, notes, problems


def prepare(source: Source, args: argparse.Namespace, strict: bool = True) -> Prepared:
    """Config + key plan. Config / tensor-fact problems are collected in ``Prepared.problems``; with
    ``strict=False`` (``--inspect``) unknown config keys are collected too instead of raising."""
    config_plan, rules, facts, notes, problems = _config_stage(source, args, strict)
    try:
        config = make_config(config_plan.kwargs, args.set)
    except ConversionError as err:
        raise ConversionError(err.summary, problems + err.problems) from err
    context_id, vocab = config.img_context_token_id, config.llm_config.vocab_size
    if context_id is not None and not 0 <= context_id < vocab:
        raise ConversionError(f"img_context_token_id {context_id} is outside the vocabulary (size {vocab})")
    expected, tied = expected_tensors(config)
    shape = llm_shape(config_plan.llm) if config_plan.llm_kind == "internlm2" else None
    plan = keymap.build_plan(source.tensors, rules, expected, tied, shape, args.dtype)
    return Prepared(config, config_plan, plan, facts, shape, notes + plan.notes, problems)


# ========================================================================================= output pieces
def write_tokenizer(source: tokenizers_io.SourceTokenizer, out_dir: Path, notes: list[str]) -> bool:
    """Write the converted tokenizer files into ``out_dir``; False (with a notice) when the source has none."""
    if source.kind == "none":
        message = f"no tokenizer was written: {source.reason}"
        warn(message)
        notes.append(message)
        return False
    try:
        tokenizer = tokenizers_io.write_tokenizer(source, out_dir)
        tokenizers_io.check_tokenizer(tokenizer, source)
    except Exception as err:  # tokenizers / transformers raise assorted types for unreadable tokenizer files
        raise ConversionError(f"cannot convert the tokenizer of {source.folder} ({source.reason}): "
                              f"{type(err).__name__}: {err}") from err
    notes.append(f"tokenizer: {source.reason} -> {type(tokenizer).__name__}")
    return True


def source_eos_ids(source: Source) -> list[Any]:
    """The eos ids the source names: its generation_config.json, then its LLM config."""
    ids: list[Any] = []
    for value in ((source.generation or {}).get("eos_token_id"), (source.config.get("llm_config") or {}).get("eos_token_id")):
        ids += value if isinstance(value, list) else [value] if value is not None else []
    return ids


def card_info(source: Source, kind: str, args: argparse.Namespace) -> model_card.CardInfo:
    """Card facts: license from --license or the source card, base_model from --base-model or the Hub --src."""
    license_ = args.license or source_card(source.folder).get("license")
    base_model = args.base_model or source.repo_id
    what = f"`{base_model}`" if base_model else f"an official `{kind}` checkpoint"
    return model_card.CardInfo(
        origin=f"Converted from {what} by `conversion/convert_checkpoint.py` of the PVC-InternVL repository.",
        model_ref=args.push_to_hub or model_card.PLACEHOLDER_REF,
        license=license_,
        base_model=base_model,
    )


def write_checkpoint(prepared: Prepared, source: Source, args: argparse.Namespace, out_dir: Path) -> list[str]:
    """Write every file of the converted checkpoint into ``out_dir``; return the notes."""
    notes = [note for note in prepared.notes if note]
    files = weights.write_weights(
        source.folder, prepared.plan.entries, out_dir, parse_size(args.max_shard_size), prepared.llm_shape, source.shards
    )
    weights.check_written(out_dir, prepared.plan.entries)
    notes.append(f"weights: {len(prepared.plan.entries)} source tensors -> {len(files)} file(s)")
    has_tokenizer = write_tokenizer(source.tokenizer, out_dir, notes)
    return writer.write_package(out_dir, prepared.config, has_tokenizer=has_tokenizer, source_eos=source_eos_ids(source),
                                card=card_info(source, prepared.config_plan.kind, args), notes=notes)


# ============================================================================================== convert
def open_source(text: str, revision: str | None, with_weights: bool) -> Source:
    """A local folder, or a Hub repo id: downloaded (``with_weights``) or read through its remote headers."""
    hub.check_source(text, "--src")
    if not hub.is_repo_id(text):
        return load_source(Path(text).resolve())
    folder = hub.fetch(text, revision, with_weights)
    tensors = None if with_weights else hub.remote_headers(text, revision)
    return load_source(folder, tensors, repo_id=text)


def convert(args: argparse.Namespace) -> Path:
    dst = Path(args.dst).resolve()
    local = None if hub.is_repo_id(args.src) else Path(args.src).resolve()
    destination.check_destination(dst, args.overwrite, local)
    destination.clean_stale(dst)
    source = open_source(args.src, source_revision(args), with_weights=True)
    src = source.repo_id or source.folder
    prepared = prepare(source, args)
    problems = prepared.problems + prepared.plan.problems()
    if problems:
        raise ConversionError(
            "the checkpoint cannot be converted; nothing was written (run --inspect to see every unmapped tensor "
            "grouped by layer, and --key-map FILE to map them):",
            problems,
        )
    with destination.staged_output(dst) as tmp:
        notes = write_checkpoint(prepared, source, args, tmp)
    for note in notes:
        if note not in _WARNED:
            logger.info(note)
    logger.info("converted %s -> %s", src, dst)
    return dst


# ============================================================================================== inspect
def inspect_report(source: Source, args: argparse.Namespace) -> str:
    lines = _source_summary(source)
    try:
        prepared = prepare(source, args, strict=False)
    except ConversionError as err:
        lines += ["", "No target model could be built from config.json:", err.render(), ""]
        lines += _group_lines("All source tensors", source.tensors)
        return "\n".join(lines)
    plan = prepared.plan
    counts = ", ".join(f"{origin} {n}" for origin, n in sorted(plan.counts().items()))
    lines += ["", f"Mapped source tensors: {len(plan.entries)} ({counts or 'none'}); dropped (--key-map null rules, "
              f"recomputed buffers): {len(plan.dropped)}"]
    lines += [""] + _group_lines("Unmapped source tensors (no rule maps them)", plan.unmapped)
    if plan.missing:
        lines += ["", f"Target tensors without a source: {len(plan.missing)}"]
        lines += [f"  {pattern}  x{len(names)}" for pattern, names in _group_names(plan.missing).items()]
    others = plan.shape_mismatches + plan.dtype_mismatches + plan.bad_targets + plan.duplicates
    if others:
        lines += ["", "Other plan problems:"] + [f"  {p}" for p in others]
    settle = prepared.problems + configs.unsettled_fields(source.config, prepared.config_plan.kwargs)
    if settle:
        lines += ["", "Config fields still to settle (--config-map / --set):"] + [f"  {p}" for p in settle]
    lines += ["", "Derived facts:"] + [f"  {line}" for line in _facts_lines(prepared, plan.unmapped)]
    lines += ["", _verdict(plan, prepared.problems)]
    return "\n".join(lines)


def _verdict(plan: keymap.KeyPlan, config_problems: list[str]) -> str:
    counts = {
        "unmapped source tensors": len(plan.unmapped),
        "target tensors without a source": len(plan.missing),
        "shape / dtype / target problems": len(plan.shape_mismatches + plan.dtype_mismatches + plan.bad_targets
                                               + plan.duplicates),
        "config problems": len(config_problems),
    }
    blocking = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    if not blocking:
        return f"Verdict: every tensor maps ({len(plan.entries)} mapped); the checkpoint converts as it is."
    return f"Verdict: cannot be converted yet: {blocking}."


def _source_summary(source: Source) -> list[str]:
    total = sum(t.nbytes for t in source.tensors)
    by_dtype = Counter(t.dtype for t in source.tensors)
    bytes_by_dtype = Counter()
    for tensor in source.tensors:
        bytes_by_dtype[tensor.dtype] += tensor.nbytes
    dtypes = ", ".join(f"{d}: {n} tensors / {format_bytes(bytes_by_dtype[d])}" for d, n in sorted(by_dtype.items()))
    llm = source.config.get("llm_config") or {}
    return [
        f"Source: {source.repo_id + ' (Hub; safetensors headers only)' if source.repo_id else source.folder}",
        f"  model_type {source.config.get('model_type')}, LLM {(llm.get('architectures') or [llm.get('model_type')])[0]}",
        f"  {len(source.shards)} shard(s), {len(source.tensors)} tensors, {format_bytes(total)} ({dtypes})",
        f"  tokenizer: {source.tokenizer.kind} ({source.tokenizer.reason})",
    ]


def _group_lines(title: str, tensors: list[keymap.TensorInfo]) -> list[str]:
    groups = keymap.group_tensors(tensors)
    lines = [f"{title}: {len(tensors)} in {len(groups)} group(s)"]
    for pattern, members in groups.items():
        shapes = Counter((tuple(t.shape), t.dtype) for t in members)
        shape_text = "; ".join(f"{list(s)} {d}" + (f" x{n}" if len(shapes) > 1 else "") for (s, d), n in shapes.items())
        layers = keymap.layer_indices(members)
        where = f"  layers {layer_ranges(layers)}" if layers else ""
        lines.append(f"  {pattern}  x{len(members)}  {shape_text}{where}")
    return lines


def _group_names(names: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(keymap.group_pattern(name), []).append(name)
    return groups


def _facts_lines(prepared: Prepared, unmapped: list[keymap.TensorInfo]) -> list[str]:
    config = prepared.config
    hidden = config.vision_config.hidden_size
    facts = prepared.facts
    lines = [note for note in prepared.notes if note and not note.startswith("mlp1 width")]
    if facts.mlp1_width:
        k2 = facts.mlp1_width / hidden
        lines.append(
            f"mlp1.0.weight width {facts.mlp1_width} = {k2:g} x C (C = {hidden}) -> pixel-shuffle k = {k2 ** 0.5:g}, "
            f"downsample_ratio {1 / k2 ** 0.5:g} -> {config.num_image_token} tokens per frame"
        )
    per_layer = [t for t in unmapped if keymap.layer_indices([t]) and t.name.startswith("vision_model.")]
    if per_layer:
        lines.append(
            f"ViT layers with unmapped tensors: {layer_ranges(keymap.layer_indices(per_layer))} "
            f"(of {config.vision_config.num_hidden_layers})"
        )
    for pattern, members in keymap.group_tensors(unmapped).items():
        shape = members[0].shape
        if len(shape) == 2 and shape[0] % hidden == 0 and shape[0] // hidden > 1:
            multiple = shape[0] // hidden
            meaning = {3: "3C (fused q/k/v?)", 4: "4C (AdaLN scale/shift x2?)", 6: "6C (AdaLN scale/shift/gate x2?)"}
            lines.append(f"{pattern}: {shape[0]} rows = {meaning.get(multiple, f'{multiple}C')}")
        if len(shape) == 2 and shape[1] != hidden and shape[0] == hidden:
            lines.append(f"{pattern}: input width {shape[1]} (a time-embedding width?)")
    return lines


# ================================================================================================== CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", help="source checkpoint: a folder (config.json + safetensors) or a Hub repo id")
    parser.add_argument("--dst", help="output folder (must not exist or be empty unless --overwrite)")
    parser.add_argument("--revision", help="Hub revision of a repo-id --src / --inspect; with a local --src and "
                                           "--push-to-hub, the branch to push to")
    parser.add_argument("--dtype", default="auto", choices=["auto", *configs.DTYPES],
                        help="cast floating tensors (auto: keep every tensor's own dtype)")
    parser.add_argument("--img-context-token-id", type=int, help="id of the image-context token when the source has no tokenizer")
    parser.add_argument("--key-map", help="JSON {regex: target name or null}; these rules take precedence")
    parser.add_argument("--config-map", help='JSON {"[vision_config.]key": "package field" or null} for unknown config keys')
    parser.add_argument("--set", action="append", metavar="KEY=JSON",
                        help="force a config value, e.g. --set tile_repeat_way='\"frame_major\"' (repeatable)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest output shard (default 5GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --dst")
    parser.add_argument("--inspect", nargs="?", const="", metavar="REPO_OR_DIR",
                        help="report the mapping verdict, unmapped tensors and config fields to settle from the "
                             "safetensors headers only (a Hub repo downloads no weights); writes nothing")
    parser.add_argument("--license", help="license of the weights for the model card (default: the source card's)")
    parser.add_argument("--base-model", help="Hub id of the source for the card (default: a repo-id --src)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the converted folder to this Hub repository")
    parser.add_argument("--push-revision", metavar="BRANCH", help="branch of --push-to-hub (created when missing)")
    parser.add_argument("--create-pr", action="store_true", help="upload as a pull request")
    parser.add_argument("--commit-message", help="commit message of the upload")
    parser.add_argument("--private", action="store_true",
                        help="create the Hub repository as private (default: the Hub's default visibility)")
    return parser


PUSH_ONLY = ("push_revision", "create_pr", "commit_message", "private")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse combinations that would silently do nothing."""
    if args.inspect == "" and not args.src:
        parser.error("--inspect needs a folder or repo id: --inspect REPO_OR_DIR (or --src)")
    if args.inspect is None and (not args.src or not args.dst):
        parser.error("--src and --dst are required unless --inspect is given")
    unused = [f"--{name.replace('_', '-')}" for name in PUSH_ONLY if getattr(args, name) and not args.push_to_hub]
    if unused:
        parser.error(f"{', '.join(unused)} only apply with --push-to-hub")
    source = args.inspect or args.src
    if args.revision and not hub.is_repo_id(source) and not (args.push_to_hub and args.inspect is None):
        parser.error(f"--revision applies to a Hub repo id --src / --inspect (or, with a local --src, to --push-to-hub); "
                     f"{source!r} is a local folder")


def source_revision(args: argparse.Namespace) -> str | None:
    return args.revision if hub.is_repo_id(args.inspect or args.src) else None


def push_options(args: argparse.Namespace) -> hub.PushOptions:
    branch = args.push_revision or (None if hub.is_repo_id(args.src) else args.revision)
    options = hub.PushOptions(args.push_to_hub, private=args.private, revision=branch, create_pr=args.create_pr)
    if args.commit_message:
        options.commit_message = args.commit_message
    return options


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    setup_logging()
    try:
        parse_size(args.max_shard_size)
        if args.inspect is not None:
            print(inspect_report(open_source(args.inspect or args.src, source_revision(args), with_weights=False), args))
            return 0
        dst = convert(args)
    except (ConversionError, ValueError, OSError, destination.Interrupted) as err:
        return destination.report_failure(err)
    if args.push_to_hub:
        try:
            hub.push(dst, push_options(args))
        except Exception as err:  # the converted folder stays; only the upload failed
            sys.stderr.write(f"error: upload to {args.push_to_hub} failed ({type(err).__name__}: {err}); "
                             f"the converted checkpoint is at {dst}\n")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
