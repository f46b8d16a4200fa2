"""The Hugging Face Hub side of the converter: a Hub repo id as ``--src`` (``snapshot_download``), headers-only
``--inspect`` of a Hub repo (``HfApi.get_safetensors_metadata``, no weight download) and ``--push-to-hub``.

``make_api`` and ``download`` are module attributes so that the tests can put a local fake Hub in their place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, snapshot_download

from conversion.common import ConversionError, logger
from conversion.keymap import TensorInfo

make_api = HfApi
download = snapshot_download

REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# Everything of a source checkpoint except its weights (what --inspect downloads).
SMALL_FILES = [
    "config.json", "generation_config.json", "model.safetensors.index.json", "README.md",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
]
WEIGHT_FILES = ["*.safetensors"]


def is_repo_id(text: str) -> bool:
    """``owner/name`` that is not an existing local path."""
    return not Path(text).exists() and REPO_ID.fullmatch(text) is not None


def check_source(text: str, option: str) -> None:
    if not Path(text).exists() and not REPO_ID.fullmatch(text):
        raise ConversionError(f"{option} {text!r} is neither an existing folder nor a Hub repo id (owner/name)")


def fetch(repo_id: str, revision: str | None, with_weights: bool) -> Path:
    """A local snapshot of ``repo_id`` at ``revision``: configs, tokenizer and card, plus the safetensors
    weights when ``with_weights``."""
    patterns = SMALL_FILES + (WEIGHT_FILES if with_weights else [])
    try:
        folder = download(repo_id=repo_id, revision=revision, allow_patterns=patterns)
    except Exception as err:  # network, authentication, unknown repo or revision: say which repo
        raise ConversionError(f"cannot download {repo_id} (revision {revision or 'main'}) from the Hub: "
                              f"{type(err).__name__}: {err}") from err
    logger.info("%s (revision %s) -> %s", repo_id, revision or "main", folder)
    return Path(folder)


def remote_headers(repo_id: str, revision: str | None) -> list[TensorInfo]:
    """Names, shapes and dtypes of every tensor of a Hub repo from its safetensors headers (HTTP range
    requests of ``get_safetensors_metadata``; no weight is downloaded)."""
    try:
        metadata = make_api().get_safetensors_metadata(repo_id, revision=revision)
    except Exception as err:
        raise ConversionError(f"cannot read the safetensors headers of {repo_id} (revision {revision or 'main'}): "
                              f"{type(err).__name__}: {err}") from err
    tensors, seen = [], {}
    for shard, file_metadata in metadata.files_metadata.items():
        for name, info in file_metadata.tensors.items():
            if name in seen:
                raise ConversionError(f"{repo_id}: tensor {name} is stored in both {seen[name]} and {shard}")
            seen[name] = shard
            tensors.append(TensorInfo(name, tuple(info.shape), info.dtype, shard))
    return tensors


# ------------------------------------------------------------------------------------------------ push
@dataclass
class PushOptions:
    repo_id: str
    private: bool = False
    revision: str | None = None  # branch to push to (created from main when missing)
    create_pr: bool = False
    commit_message: str = "Upload converted PVC-InternVL checkpoint"


def push(folder: Path, options: PushOptions) -> Any:
    """Create the repo (privacy left to the Hub default unless ``private``), the branch, then upload."""
    api = make_api()
    api.create_repo(repo_id=options.repo_id, exist_ok=True, **({"private": True} if options.private else {}))
    if options.revision and options.revision != "main":
        api.create_branch(options.repo_id, branch=options.revision, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder), repo_id=options.repo_id, revision=options.revision,
        commit_message=options.commit_message, create_pr=options.create_pr,
    )
    where = getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or f"https://huggingface.co/{options.repo_id}"
    logger.info("uploaded %s to %s", folder, where)
    return info
