"""Writing the non-weight files of a PVC-InternVL checkpoint folder: ``config.json`` (with the full
``auto_map``), the tokenizer made readable by every supported transformers version with the chat template
of the checkpoint's conversation template, ``generation_config.json``, the processor config, the
remote-code files and the model card.

Used by the converter (``convert_checkpoint.py``) and by ``scripts/make_demo_checkpoint.py``; both write
the weights and the tokenizer files first, then call :func:`write_package`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from conversion import model_card
from conversion.common import ConversionError, logger, read_json, write_json
from conversion.package import ROOT, remote_code_files, remote_module

AUTO_MAP = {
    "AutoConfig": "configuration_pvc_internvl.PVCInternVLConfig",
    "AutoModel": "modeling_pvc_internvl.PVCInternVLChatModel",
    "AutoModelForImageTextToText": "modeling_pvc_internvl.PVCInternVLChatModel",
}
ARCHITECTURES = ["PVCInternVLChatModel"]
TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# Conversations on which a source chat template must render exactly what the conversation template renders.
SAMPLE_CONVERSATIONS = (
    [{"role": "user", "content": "<image>\nWhat is shown?"}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "<image>\nDescribe it."},
    ],
)


def finish_config(config: Any) -> Any:
    """Give a ``PVCInternVLConfig`` the ``auto_map`` and ``architectures`` of the package."""
    config.auto_map = dict(AUTO_MAP)
    config.architectures = list(ARCHITECTURES)
    return config


# ------------------------------------------------------------------------------------------- tokenizer
def make_tokenizer_config_portable(out_dir: Path) -> list[str]:
    """Rewrite ``tokenizer_config.json`` in the form transformers 4.57 and 5.x both read: transformers 5 writes
    ``"tokenizer_class": "TokenizersBackend"`` (unknown to 4.57) and a list-form ``extra_special_tokens``
    (4.57 expects a dict there); both read ``PreTrainedTokenizerFast`` and ``additional_special_tokens``.
    Returns what was changed."""
    path = out_dir / TOKENIZER_CONFIG
    if not path.is_file():
        return []
    settings = read_json(path)
    changes = []
    if settings.get("tokenizer_class") == "TokenizersBackend":
        settings["tokenizer_class"] = "PreTrainedTokenizerFast"
        changes.append("tokenizer_class TokenizersBackend -> PreTrainedTokenizerFast")
    extra = settings.get("extra_special_tokens")
    if isinstance(extra, list):
        listed = list(settings.get("additional_special_tokens") or [])
        settings["additional_special_tokens"] = list(dict.fromkeys(listed + extra))
        del settings["extra_special_tokens"]
        changes.append(f"{len(extra)} list-form extra_special_tokens -> additional_special_tokens")
    if changes:
        write_json(path, settings)
    return changes


def _render(tokenizer: Any, template: Any, conversation: list[dict]) -> str:
    return tokenizer.apply_chat_template(conversation, chat_template=template, tokenize=False,
                                         add_generation_prompt=True)


def _source_template_difference(tokenizer: Any, source: Any, ours: str) -> str | None:
    """None when ``source`` renders every sample conversation as ``ours`` does, else what differs."""
    for conversation in SAMPLE_CONVERSATIONS:
        try:
            theirs = _render(tokenizer, source, list(conversation))
        except Exception as err:  # any template error means "renders something else"
            return f"it fails on a sample conversation ({type(err).__name__}: {err})"
        expected = _render(tokenizer, ours, list(conversation))
        if theirs != expected:
            return f"it renders {theirs[:120]!r} where the conversation template renders {expected[:120]!r}"
    return None


def install_chat_template(tokenizer: Any, out_dir: Path, template_name: str, notes: list[str]) -> None:
    """Write the Jinja chat template of ``template_name`` as ``chat_template.jinja`` (read by the tokenizer and
    the processor of transformers 4.57 and 5.x), replacing any template the source tokenizer carried."""
    template = remote_module("conversation").get_template(template_name)
    source = tokenizer.chat_template
    if source:
        difference = _source_template_difference(tokenizer, source, template.jinja)
        if difference:
            message = f"replaced the source chat template with the {template_name} template: {difference}"
            logger.warning(message)
            notes.append(message)
        else:
            notes.append(f"the source chat template renders as the {template_name} template; written from conversation.py")
    settings_path = out_dir / TOKENIZER_CONFIG
    if settings_path.is_file():
        settings = read_json(settings_path)
        if settings.pop("chat_template", None) is not None:
            write_json(settings_path, settings)
    (out_dir / "chat_template.json").unlink(missing_ok=True)
    (out_dir / CHAT_TEMPLATE_FILE).write_text(template.jinja, encoding="utf-8")


def check_chat_template(tokenizer: Any, template_name: str) -> None:
    """The written tokenizer renders byte-identical prompts to ``ConversationTemplate.render``."""
    template = remote_module("conversation").get_template(template_name)
    got = _render(tokenizer, None, list(SAMPLE_CONVERSATIONS[1]))
    expected = template.render([("Hello", "Hi.")], "<image>\nDescribe it.", system_message="Answer briefly.")
    if got != expected:
        raise ConversionError(f"the written {CHAT_TEMPLATE_FILE} renders {got!r}, conversation.py renders {expected!r}")


def set_turn_end_as_eos(out_dir: Path, template_name: str, notes: list[str]) -> None:
    """Make the template's turn separator (``<|im_end|>`` / ``<|end|>``) the tokenizer's ``eos_token``, so that
    clients stopping at ``tokenizer.eos_token_id`` (evaluation harnesses, pipelines) stop at the end of the turn."""
    sep = remote_module("conversation").get_template(template_name).sep
    for name in (TOKENIZER_CONFIG, "special_tokens_map.json"):
        path = out_dir / name
        settings = read_json(path) if path.is_file() else {}
        old = settings.get("eos_token")
        if old is None or old == sep or (isinstance(old, dict) and old.get("content") == sep):
            continue
        settings["eos_token"] = {**old, "content": sep} if isinstance(old, dict) else sep
        write_json(path, settings)
        notes.append(f"{name}: eos_token {old if isinstance(old, str) else old.get('content')!r} -> {sep!r}, the end of a turn")


def finish_tokenizer(out_dir: Path, template_name: str, notes: list[str]) -> Any:
    """Make the tokenizer files in ``out_dir`` portable, install the chat template; return the tokenizer as
    ``AutoTokenizer`` loads it from ``out_dir``."""
    from transformers import AutoTokenizer

    changes = make_tokenizer_config_portable(out_dir)
    if changes:
        notes.append(f"{TOKENIZER_CONFIG} made readable by transformers 4.57 and 5.x: {'; '.join(changes)}")
    install_chat_template(AutoTokenizer.from_pretrained(str(out_dir)), out_dir, template_name, notes)
    set_turn_end_as_eos(out_dir, template_name, notes)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    check_chat_template(tokenizer, template_name)
    return tokenizer


# ------------------------------------------------------------------------------------ generation config
def _valid_ids(ids: list[Any], vocab_size: int) -> list[int]:
    return [int(i) for i in ids if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab_size]


def generation_ids(config: Any, tokenizer: Any, source_eos: list[Any]) -> tuple[list[int], int, str]:
    """``(eos_token_id list, pad_token_id, note)``: the template separator first (``<|im_end|>`` /
    ``<|end|>``), then the source's other eos ids that are in the vocabulary."""
    llm = config.llm_config
    real = _valid_ids(source_eos, llm.vocab_size)
    if tokenizer is None:
        eos = list(dict.fromkeys(real or _valid_ids([llm.eos_token_id], llm.vocab_size)))
        if not eos:
            raise ConversionError(f"no eos token id: the source names {source_eos} and the LLM config "
                                  f"{llm.eos_token_id}, none inside the vocabulary of {llm.vocab_size}")
        pad = remote_module("processing").pad_token_id(None, llm.pad_token_id, eos[0])
        return eos, pad, f"generation eos = {eos} (the source's; without a tokenizer the template separator is unknown)"
    conversation = remote_module("conversation")
    sep = conversation.get_template(config.template).sep
    vocab = tokenizer.get_vocab()
    if sep not in vocab:
        raise ConversionError(
            f"the tokenizer has no {sep!r}, the separator of the {config.template!r} template, so generation could "
            f"not stop; pass the template of this checkpoint with --set template=... (known: "
            f"{', '.join(conversation.TEMPLATES)})"
        )
    eos = list(dict.fromkeys([vocab[sep], *real]))
    pad = remote_module("processing").pad_token_id(tokenizer, llm.pad_token_id, eos[0])
    return eos, pad, f"generation eos = {eos} ({sep!r} first, then the source's eos), pad = {pad}"


def write_generation_config(out_dir: Path, config: Any, eos: list[int], pad: int) -> None:
    from transformers import GenerationConfig

    generation = GenerationConfig(
        bos_token_id=config.llm_config.bos_token_id,
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=pad,
    )
    generation.save_pretrained(str(out_dir))


# -------------------------------------------------------------------------------- code and processor
def copy_remote_code(out_dir: Path) -> list[str]:
    """Copy every remote-code file (the Auto-class entry files and what they import) next to config.json."""
    try:
        names = remote_code_files(ROOT)
    except FileNotFoundError as err:
        raise ConversionError(str(err)) from err
    for name in names:
        shutil.copy2(ROOT / name, out_dir / name)
    return list(names)


def write_processor_config(out_dir: Path, config: Any, tokenizer: Any) -> list[str]:
    """``processor_config.json`` of ``PVCInternVLProcessor.from_model_config`` (saved into a scratch folder so
    the tokenizer files already written stay as they are)."""
    processing = remote_module("processing")
    try:
        processor = processing.PVCInternVLProcessor.from_model_config(tokenizer, config)
    except ValueError as err:
        raise ConversionError(f"cannot build the processor from config.json and the written tokenizer: {err}") from err
    scratch = Path(tempfile.mkdtemp(prefix=".processor-", dir=out_dir))
    try:
        processor.save_pretrained(str(scratch))
        written = [name for name in ("processor_config.json", "preprocessor_config.json") if (scratch / name).is_file()]
        if "processor_config.json" not in written:
            raise ConversionError(f"PVCInternVLProcessor.save_pretrained wrote no processor_config.json ({os.listdir(scratch)})")
        for name in written:
            shutil.copy2(scratch / name, out_dir / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return written


# ------------------------------------------------------------------------------------------- the whole
def write_package(out_dir: Path, config: Any, *, has_tokenizer: bool, source_eos: list[Any],
                  card: model_card.CardInfo, notes: list[str]) -> list[str]:
    """Write every non-weight file into ``out_dir`` (the weights and tokenizer files are there already);
    return ``notes`` with what was decided."""
    # the tokenizer first: AutoTokenizer would otherwise read config.json and ask about its remote code
    tokenizer = finish_tokenizer(out_dir, config.template, notes) if has_tokenizer else None
    finish_config(config).save_pretrained(str(out_dir))
    eos, pad, eos_note = generation_ids(config, tokenizer, source_eos)
    notes.append(eos_note)
    write_generation_config(out_dir, config, eos, pad)
    copy_remote_code(out_dir)
    if tokenizer is not None:
        notes.append(f"processor: {', '.join(write_processor_config(out_dir, config, tokenizer))}")
    model_card.build_card(config, card, notes, has_tokenizer).save(str(out_dir / "README.md"))
    return notes
