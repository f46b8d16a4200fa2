"""Reading source safetensors headers, transforming tensors and writing output shards.

Memory: the source is processed one shard at a time and one tensor at a time. Each tensor is read with
its own short-lived ``safe_open`` handle, so the memory map of a source shard never stays resident (the
pages of an open map count towards the process RSS); the output buffer is flushed whenever it would grow
past ``--max-shard-size`` and at the end of every source shard. Peak memory is therefore about one output
buffer (at most one source shard's worth, and at most the maximum shard size) plus one tensor.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conversion.common import ConversionError, logger, read_json
from conversion.keymap import SPLIT_QKV, LLMShape, PlanEntry, TensorInfo

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def _index_shards(folder: Path) -> list[str]:
    """The shard names of ``model.safetensors.index.json``, each a file inside ``folder``."""
    index = read_json(folder / INDEX_FILE)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConversionError(f"{folder / INDEX_FILE} has no weight_map object {{tensor name: shard file}}")
    shards = list(dict.fromkeys(weight_map.values()))
    bad = [name for name in shards if not isinstance(name, str) or not name]
    if bad:
        raise ConversionError(f"{folder / INDEX_FILE} maps tensors to {bad[:5]}, which are not file names")
    outside = [name for name in shards if not _inside(folder, folder / name)]
    if outside:
        raise ConversionError(
            f"{folder / INDEX_FILE} names shard files outside --src {folder}: {outside[:5]}; a checkpoint's index may "
            "only name files inside its own folder"
        )
    missing = [name for name in shards if not (folder / name).is_file()]
    if missing:
        raise ConversionError(f"{folder / INDEX_FILE} names shard files that do not exist: {missing[:10]}")
    return shards


def _inside(folder: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def source_shards(folder: Path) -> list[str]:
    """The weight files of a source folder, in index order."""
    if (folder / INDEX_FILE).is_file():
        return _index_shards(folder)
    if (folder / SINGLE_FILE).is_file():
        return [SINGLE_FILE]
    others = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    hint = f" (found {others}; only safetensors checkpoints are read)" if others else ""
    raise ConversionError(f"{folder} has neither {SINGLE_FILE} nor {INDEX_FILE}{hint}")


def read_headers(folder: Path) -> list[TensorInfo]:
    """Names, shapes and dtypes of every source tensor, from the safetensors headers only."""
    tensors: list[TensorInfo] = []
    seen: dict[str, str] = {}
    for shard in source_shards(folder):
        for name, shape, dtype in _shard_header(folder / shard):
            if name in seen:
                raise ConversionError(f"tensor {name} is stored in both {seen[name]} and {shard}")
            seen[name] = shard
            tensors.append(TensorInfo(name, shape, dtype, shard))
    return tensors


def _shard_header(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """``(name, shape, dtype)`` of every tensor of one safetensors file; ``ConversionError`` naming the file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return [(name, tuple(handle.get_slice(name).get_shape()), handle.get_slice(name).get_dtype())
                    for name in handle.keys()]
    except Exception as err:  # SafetensorError, OSError, ...: all mean "this file cannot be read"
        raise ConversionError(f"cannot read the safetensors header of {path}: {type(err).__name__}: {err}") from err


def load_tensor(folder: Path, tensor: TensorInfo) -> torch.Tensor:
    try:
        with safe_open(str(folder / tensor.shard), framework="pt") as handle:
            return handle.get_tensor(tensor.name)
    except Exception as err:  # SafetensorError, OSError, ...
        raise ConversionError(f"cannot read tensor {tensor.name} from {folder / tensor.shard}: "
                              f"{type(err).__name__}: {err}") from err


def split_wqkv(weight: torch.Tensor, llm: LLMShape) -> list[torch.Tensor]:
    """InternLM2 ``wqkv`` ``[n_kv * (g + 2) * d, hidden]`` -> q, k, v (pvc.md section 8.2).

    Rows are grouped per KV head as ``[g query heads, key, value]``, g = heads / kv_heads.
    """
    groups = llm.num_heads // llm.num_kv_heads
    view = weight.view(llm.num_kv_heads, groups + 2, llm.head_dim, weight.shape[-1])
    q = view[:, :groups].reshape(-1, weight.shape[-1]).clone()
    k = view[:, groups].reshape(-1, weight.shape[-1]).clone()
    v = view[:, groups + 1].reshape(-1, weight.shape[-1]).clone()
    return [q, k, v]


def transform(entry: PlanEntry, tensor: torch.Tensor, llm: LLMShape | None) -> list[tuple[str, torch.Tensor]]:
    parts = split_wqkv(tensor, llm) if entry.op == SPLIT_QKV else [tensor]
    out_dtype = TORCH_DTYPES.get(entry.out_dtype)
    result = []
    for (name, _), part in zip(entry.targets, parts):
        if out_dtype is not None and part.dtype != out_dtype:
            part = part.to(out_dtype)
        result.append((name, part.contiguous()))
    return result


class ShardWriter:
    """Buffers tensors and writes ``model-NNNNN.partial.safetensors`` files of at most ``max_bytes`` (a tensor
    larger than that gets a shard of its own); :meth:`finish` names them and writes the index."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder = folder
        self.max_bytes = max_bytes
        self.buffer: dict[str, torch.Tensor] = {}
        self.buffer_bytes = 0
        self.files: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.buffer and self.buffer_bytes + size > self.max_bytes:
            self.flush()
        self.buffer[name] = tensor
        self.buffer_bytes += size
        self.total_bytes += size

    def flush(self) -> None:
        if not self.buffer:
            return
        path = self.folder / f"model-{len(self.files) + 1:05d}.partial.safetensors"
        save_file(self.buffer, str(path), metadata={"format": "pt"})
        self.files.append((path, list(self.buffer)))
        self.buffer, self.buffer_bytes = {}, 0

    def finish(self) -> list[str]:
        """Final names: ``model.safetensors`` for one shard, else ``model-0000i-of-0000n.safetensors`` plus
        ``model.safetensors.index.json``."""
        self.flush()
        if len(self.files) == 1:
            os.replace(self.files[0][0], self.folder / SINGLE_FILE)
            return [SINGLE_FILE]
        weight_map, names = {}, []
        for number, (path, keys) in enumerate(self.files, start=1):
            name = f"model-{number:05d}-of-{len(self.files):05d}.safetensors"
            os.replace(path, self.folder / name)
            names.append(name)
            weight_map.update({key: name for key in keys})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        with open(self.folder / INDEX_FILE, "w", encoding="utf-8") as handle:
            json.dump(index, handle, indent=2)
            handle.write("\n")
        return names


def write_weights(
    folder: Path,
    entries: list[PlanEntry],
    out_dir: Path,
    max_bytes: int,
    llm: LLMShape | None,
    shard_order: list[str],
) -> list[str]:
    """Convert and write every planned tensor, one source shard at a time."""
    from tqdm.auto import tqdm

    by_shard: dict[str, list[PlanEntry]] = defaultdict(list)
    for entry in entries:
        by_shard[entry.source.shard].append(entry)
    writer = ShardWriter(out_dir, max_bytes)
    with tqdm(total=len(entries), unit="tensor", desc="converting", file=sys.stderr, disable=None) as bar:
        for shard in shard_order:
            for entry in by_shard.get(shard, []):
                tensor = load_tensor(folder, entry.source)
                for name, part in transform(entry, tensor, llm):
                    writer.add(name, part)
                del tensor
                bar.update(1)
            writer.flush()
            logger.info("source shard %s done", shard)
    return writer.finish()


def check_written(out_dir: Path, entries: list[PlanEntry]) -> None:
    """The written files hold exactly the planned tensors with the planned shapes and dtypes."""
    expected = {name: (tuple(shape), entry.out_dtype) for entry in entries for name, shape in entry.targets}
    found = {tensor.name: (tensor.shape, tensor.dtype) for tensor in read_headers(out_dir)}
    if found != expected:
        wrong = sorted(set(found.items()) ^ set(expected.items()))[:20]
        raise ConversionError("the written weights differ from the plan", [str(item) for item in wrong])
