"""Tokenizer handling of the converter.

Three kinds of source tokenizers:

* ``sentencepiece`` -- InternLM2 checkpoints ship ``tokenizer.model`` plus the remote slow
  ``InternLM2Tokenizer`` (``tokenization_internlm2.py``); its remote fast sibling gives wrong ids under
  transformers v5. The converter builds a **native** ``tokenizers`` BPE tokenizer (``tokenizer.json``,
  loaded by ``AutoTokenizer`` without remote code) that reproduces the slow tokenizer: the text is split
  at every added token, each piece is encoded exactly as ``sentencepiece`` encodes it (the model's own
  normaliser flags: character map, ``add_dummy_prefix``, ``remove_extra_whitespaces``, whitespace
  escaping; BPE merges ranked by piece score; byte fallback), and BOS is prepended.
* ``native`` -- ``tokenizer.json`` / ``vocab.json`` + ``merges.txt`` tokenizers that transformers
  loads natively (Qwen2, Phi-3, Llama): copied byte for byte.
* ``none`` -- no tokenizer files: nothing is written and the caller says so.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conversion import spm_proto
from conversion.common import read_json_object

logger = logging.getLogger("convert_checkpoint")

SPIECE_UNDERLINE = "\u2581"

# Files copied unchanged for a native tokenizer.
NATIVE_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
# Remote slow/fast tokenizer classes whose tokenizer.model the converter re-expresses natively.
SENTENCEPIECE_REMOTE_CLASSES = {"InternLM2Tokenizer", "InternLM2TokenizerFast"}
# tokenizer_config.json keys carried over to the rebuilt tokenizer.
CARRIED_TOKENIZER_KEYS = ("model_max_length", "padding_side", "chat_template", "clean_up_tokenization_spaces")


@dataclass
class SourceTokenizer:
    """What the source folder holds. ``added`` maps each added-token string to its id; ``special`` holds
    the added tokens marked special; ``flags`` the per-token AddedToken flags from tokenizer_config.json."""

    kind: str  # "sentencepiece" | "native" | "none"
    folder: Path
    config: dict = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)
    special: set[str] = field(default_factory=set)
    flags: dict[str, dict] = field(default_factory=dict)
    reason: str = ""

    def token_id(self, token: str) -> int | None:
        return self.added.get(token)


def _merge_added(added: dict[str, int], token: str, index: int, origin: str) -> None:
    if token in added and added[token] != int(index):
        raise ValueError(f"added token {token!r} has id {added[token]} in one tokenizer file and {index} in {origin}")
    added[token] = int(index)


def _remote_class(config: dict) -> str | None:
    """The tokenizer class a remote-code ``auto_map`` points at (None for a native tokenizer)."""
    auto = (config.get("auto_map") or {}).get("AutoTokenizer")
    if not auto:
        return None
    first = auto[0] if isinstance(auto, (list, tuple)) else auto
    return str(first).split(".")[-1] if first else None


def _read_object(path: Path) -> dict:
    return read_json_object(path, f"fix {path.name} or restore it from the original checkpoint")


def read_source_tokenizer(folder: Path) -> SourceTokenizer:
    """Inspect the tokenizer files of ``folder`` (no tokenizer is instantiated)."""
    config = _read_object(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    added: dict[str, int] = {}
    special: set[str] = set()
    flags: dict[str, dict] = {}
    if (folder / "added_tokens.json").is_file():
        for token, index in _read_object(folder / "added_tokens.json").items():
            _merge_added(added, token, index, "added_tokens.json")
    for index, entry in (config.get("added_tokens_decoder") or {}).items():
        _merge_added(added, entry["content"], int(index), "tokenizer_config.json")
        flags[entry["content"]] = entry
        if entry.get("special", True):
            special.add(entry["content"])
    if (folder / "tokenizer.json").is_file():
        for entry in _read_object(folder / "tokenizer.json").get("added_tokens") or []:
            _merge_added(added, entry["content"], entry["id"], "tokenizer.json")
            if entry.get("special"):
                special.add(entry["content"])
    special |= _special_tokens_from_map(folder, config)
    has_model = (folder / "tokenizer.model").is_file()
    remote = _remote_class(config)
    declared = config.get("tokenizer_class")
    if has_model and (remote or declared in SENTENCEPIECE_REMOTE_CLASSES or not (folder / "tokenizer.json").is_file()):
        kind, reason = "sentencepiece", f"tokenizer.model (remote class {remote or declared or 'none'})"
    elif remote:
        kind, reason = "none", f"remote-code tokenizer {remote} without a tokenizer.model cannot be converted"
    elif (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file():
        kind, reason = "native", f"native tokenizer files ({declared or 'tokenizer.json'})"
    else:
        kind, reason = "none", "no tokenizer files in the source folder"
    return SourceTokenizer(kind, folder, config, added, special, flags, reason)


def _special_tokens_from_map(folder: Path, config: dict) -> set[str]:
    """Special tokens named by special_tokens_map.json / tokenizer_config.json (bos, eos, additional...)."""
    tokens: set[str] = set()
    sources = [config]
    if (folder / "special_tokens_map.json").is_file():
        sources.append(_read_object(folder / "special_tokens_map.json"))
    for source in sources:
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            value = source.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                tokens.add(value)
        for key in ("additional_special_tokens", "extra_special_tokens"):
            values = source.get(key) or []
            values = values.values() if isinstance(values, dict) else values
            for value in values:
                tokens.add(value["content"] if isinstance(value, dict) else value)
    return tokens


def _token_name(config: dict, key: str, default: str | None) -> str | None:
    value = config.get(key, default)
    if isinstance(value, dict):
        value = value.get("content")
    return value


# ---------------------------------------------------------------------------------------- sentencepiece
def bpe_merges(pieces: list[spm_proto.Piece]) -> list[tuple[str, str]]:
    """All merges ``(left, right)`` whose result is a normal piece, ranked as sentencepiece applies them:
    higher score of the merged piece first (ties: lower id)."""
    mergeable = {p.piece: i for i, p in enumerate(pieces) if p.type == spm_proto.NORMAL}
    ranked = []
    for index, piece in enumerate(pieces):
        if piece.type != spm_proto.NORMAL or len(piece.piece) < 2:
            continue
        text = piece.piece
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in mergeable and right in mergeable:
                ranked.append((-piece.score, index, mergeable[left], mergeable[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _normalizer(spec: spm_proto.NormalizerSpec):
    from tokenizers import Regex, normalizers

    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend(" " if spec.escape_whitespaces else SPIECE_UNDERLINE))
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", SPIECE_UNDERLINE))
    return normalizers.Sequence(steps)


def _decoder(spec: spm_proto.NormalizerSpec):
    from tokenizers import decoders

    steps = [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if spec.add_dummy_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    return decoders.Sequence(steps)


def _check_supported(model: spm_proto.ModelProto, path: Path) -> None:
    trainer = model.trainer_spec
    if trainer.model_type != spm_proto.BPE:
        raise ValueError(
            f"{path} is a sentencepiece model of type {trainer.model_type} (1 = unigram); only BPE models "
            "(InternLM2) are converted to a native tokenizer"
        )
    if trainer.treat_whitespace_as_suffix:
        raise ValueError(f"{path} uses treat_whitespace_as_suffix, which the native tokenizer does not reproduce")


def _vocabulary(model: spm_proto.ModelProto, source: SourceTokenizer) -> dict[str, int]:
    """Sentencepiece pieces at their ids plus the added tokens at theirs (checked for collisions)."""
    vocab = {piece.piece: index for index, piece in enumerate(model.pieces)}
    for token, index in sorted(source.added.items(), key=lambda item: item[1]):
        if index < len(model.pieces):
            if model.pieces[index].piece != token:
                raise ValueError(
                    f"added token {token!r} has id {index}, which is the sentencepiece piece "
                    f"{model.pieces[index].piece!r}"
                )
            continue
        if token in vocab and vocab[token] != index:
            raise ValueError(f"added token {token!r} has id {index} but is piece {vocab[token]} of tokenizer.model")
        vocab[token] = index
    used = sorted(vocab.values())
    if used != list(range(len(used))):
        holes = sorted(set(range(used[-1] + 1)) - set(used))
        raise ValueError(f"token ids are not contiguous: ids {holes[:10]} have no token")
    return vocab


def build_sentencepiece_tokenizer(source: SourceTokenizer):
    """A native fast tokenizer equivalent to the remote slow sentencepiece tokenizer of ``source``."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    path = source.folder / "tokenizer.model"
    model = spm_proto.load_model(str(path))
    _check_supported(model, path)
    trainer = model.trainer_spec
    vocab = _vocabulary(model, source)
    backend = Tokenizer(
        models.BPE(vocab=vocab, merges=bpe_merges(model.pieces), unk_token=trainer.unk_piece, fuse_unk=True,
                   byte_fallback=trainer.byte_fallback)
    )
    backend.normalizer = _normalizer(model.normalizer_spec)
    backend.pre_tokenizer = None
    backend.decoder = _decoder(model.normalizer_spec)
    config = source.config
    names = {key: _token_name(config, key, default) for key, default in
             (("bos_token", trainer.bos_piece), ("eos_token", trainer.eos_piece), ("unk_token", trainer.unk_piece),
              ("pad_token", trainer.eos_piece))}
    specials = set(source.special) | {name for name in names.values() if name}
    plain = set(source.added) - specials
    user_defined = {p.piece for p in model.pieces if p.type == spm_proto.USER_DEFINED} - specials
    by_id = lambda token: vocab.get(token, len(vocab))  # noqa: E731
    backend.add_special_tokens([_added_token(t, source.flags.get(t, {}), True) for t in sorted(specials, key=by_id)])
    backend.add_tokens([_added_token(t, source.flags.get(t, {}), False) for t in sorted(plain | user_defined, key=by_id)])
    kwargs = {key: config[key] for key in CARRIED_TOKENIZER_KEYS if key in config}
    backend.post_processor = _bos_eos_template(
        names["bos_token"] if config.get("add_bos_token", True) else None,
        names["eos_token"] if config.get("add_eos_token", False) else None,
        vocab,
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        add_bos_token=bool(config.get("add_bos_token", True)),
        add_eos_token=bool(config.get("add_eos_token", False)),
        **{key: value for key, value in names.items() if value is not None},
        **kwargs,
    )
    return tokenizer


def _bos_eos_template(bos: str | None, eos: str | None, vocab: dict[str, int]):
    """Post-processor adding BOS / EOS, as the slow tokenizer does (transformers 4 fast tokenizers do not
    read ``add_bos_token``; transformers 5 rebuilds the same template from it)."""
    from tokenizers import processors

    if bos is None and eos is None:
        return None
    head = f"{bos} " if bos else ""
    tail = f" {eos}" if eos else ""
    specials = [(token, vocab[token]) for token in (bos, eos) if token]
    return processors.TemplateProcessing(
        single=f"{head}$A{tail}", pair=f"{head}$A{tail} {head}$B{tail}", special_tokens=specials
    )


def _added_token(token: str, flags: dict, special: bool):
    """An added token that is matched on the raw text (never normalised), like the slow tokenizer's trie."""
    from tokenizers import AddedToken

    return AddedToken(
        token,
        lstrip=bool(flags.get("lstrip", False)),
        rstrip=bool(flags.get("rstrip", False)),
        single_word=bool(flags.get("single_word", False)),
        normalized=False,
        special=special,
    )


# ------------------------------------------------------------------------------------------ entry point
def write_tokenizer(source: SourceTokenizer, out_dir: Path) -> Any:
    """Write the tokenizer of ``source`` into ``out_dir`` and return it loaded back from there (or None
    when the source has no usable tokenizer)."""
    from transformers import AutoTokenizer

    if source.kind == "none":
        return None
    if source.kind == "native":
        for name in NATIVE_TOKENIZER_FILES:
            if (source.folder / name).is_file():
                shutil.copy2(source.folder / name, out_dir / name)
    else:
        build_sentencepiece_tokenizer(source).save_pretrained(str(out_dir))
    return AutoTokenizer.from_pretrained(str(out_dir))


def check_tokenizer(tokenizer: Any, source: SourceTokenizer) -> None:
    """Every added token of the source must map to its id in the written tokenizer."""
    wrong = []
    for token, index in sorted(source.added.items(), key=lambda item: item[1]):
        got = tokenizer.convert_tokens_to_ids(token)
        if got != index:
            wrong.append(f"{token!r}: source id {index}, written tokenizer {got}")
    if wrong:
        raise ValueError("the written tokenizer disagrees with the source on added tokens: " + "; ".join(wrong))
