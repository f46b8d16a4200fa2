"""The layout of a call: which tiles / frames of ``pixel_values`` belong to which sample, and how.

:func:`sample_layouts` validates the three official InternVL2 / PVC fields once into one :class:`SampleLayout` per
sample: ``data_flag`` (one :class:`DataFlag` per sample: 1 image, 2 several images, 3 video; default one image),
``split_sizes`` (tiles or frames per sample, summing to ``pixel_values.shape[0]``; may be omitted for one sample),
``num_patches_list`` (tiles per ``<image>``: flat over the batch or one list per sample; default one ``<image>`` per
image sample, one per frame of a video).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .configuration_pvc_internvl import DataFlag
from .media import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class SampleLayout:
    """How one sample's tiles / frames become encoder clips and ``<image>`` slots."""
    flag: DataFlag
    start: int  # first tile / frame of the sample in pixel_values
    size: int  # tiles / frames of the sample
    image_tiles: tuple[int, ...]  # tiles per <image> (images) or (1,) * frames (video)

    @property
    def is_video(self) -> bool:
        return self.flag == DataFlag.VIDEO


def _as_list(value: Any, name: str) -> list:
    if hasattr(value, "tolist") and hasattr(value, "shape"):  # a tensor or numpy array
        return list(value.reshape(-1).tolist())
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return [int(value)]
    raise ValueError(f"{name} must be a list, tuple or tensor of integers, got {type(value).__name__}")


def _positive_int(value: Any, name: str, index: int) -> int:
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or int(value) < 1:
        raise ValueError(f"{name}[{index}] must be a positive integer, got {value!r} ({type(value).__name__})")
    return int(value)


def _patches_per_sample(num_patches_list: Any, sizes: list[int], flags: list[DataFlag]) -> list[list[int]]:
    """Tiles per ``<image>`` of every sample, from a flat or per-sample ``num_patches_list`` (or the defaults)."""
    if num_patches_list is None:
        return [[1] * size if flag == DataFlag.VIDEO else [size] for size, flag in zip(sizes, flags)]
    items = num_patches_list.tolist() if torch.is_tensor(num_patches_list) else _as_list(num_patches_list, "num_patches_list")
    if items and all(isinstance(item, (list, tuple)) for item in items):
        if len(items) != len(sizes):
            raise ValueError(f"num_patches_list has {len(items)} per-sample lists but there are {len(sizes)} samples")
        per_sample = [[_positive_int(v, f"num_patches_list[{s}]", i) for i, v in enumerate(item)]
                      for s, item in enumerate(items)]
    elif any(isinstance(item, (list, tuple)) for item in items):
        raise ValueError("num_patches_list mixes numbers and lists; give a flat list or one list per sample")
    else:
        flat = [_positive_int(v, "num_patches_list", i) for i, v in enumerate(items)]
        per_sample, cursor = [], 0
        for size in sizes:  # each sample takes entries until they cover its tiles
            start = cursor
            while cursor < len(flat) and sum(flat[start:cursor]) < size:
                cursor += 1
            per_sample.append(flat[start:cursor])
        if cursor != len(flat):
            raise ValueError(f"num_patches_list has {len(flat)} entries summing to {sum(flat)}, but the samples hold "
                             f"{sum(sizes)} tiles")
    for index, (size, tiles) in enumerate(zip(sizes, per_sample)):
        if sum(tiles) != size:
            raise ValueError(f"num_patches_list of sample {index} sums to {sum(tiles)} but the sample has {size} "
                             "tiles/frames")
    return per_sample


def sample_layouts(num_tiles: int, data_flag: Any = None, split_sizes: Any = None,
                   num_patches_list: Any = None) -> list[SampleLayout]:
    """The layout of every sample of a call with ``num_tiles`` (``pixel_values.shape[0]``) tiles / frames, from
    the official fields described above (``ValueError`` naming the field and value that do not fit)."""
    flags = []
    for index, value in enumerate([DataFlag.IMAGE] if data_flag is None else _as_list(data_flag, "data_flag")):
        whole = not isinstance(value, bool) and isinstance(value, numbers.Number) and float(value) == int(value)
        if not whole or int(value) not in {int(f) for f in DataFlag}:
            raise ValueError(f"data_flag[{index}] must be 1 (image), 2 (multi-image) or 3 (video), got {value!r}")
        flags.append(DataFlag(int(value)))
    if not flags:
        raise ValueError("data_flag is empty; give one flag per sample (1 image, 2 multi-image, 3 video)")
    if split_sizes is None:
        if len(flags) != 1:
            raise ValueError(f"data_flag gives {len(flags)} samples but split_sizes was not given; give one size per sample")
        sizes = [int(num_tiles)]
    else:
        sizes = [_positive_int(v, "split_sizes", i) for i, v in enumerate(_as_list(split_sizes, "split_sizes"))]
    if len(sizes) != len(flags):
        given = "data_flag" if data_flag is not None else "the default data_flag (one image sample)"
        raise ValueError(f"{given} has {len(flags)} entries but split_sizes has {len(sizes)}; give one per sample")
    if sum(sizes) != num_tiles:
        raise ValueError(f"split_sizes sum to {sum(sizes)} but pixel_values has {num_tiles} tiles")
    layouts, start = [], 0
    for index, (flag, size, tiles) in enumerate(zip(flags, sizes, _patches_per_sample(num_patches_list, sizes, flags))):
        if flag == DataFlag.VIDEO and any(t != 1 for t in tiles):
            raise ValueError(f"sample {index} is a video, which takes one tile per frame, but num_patches_list gives "
                             f"{tiles}; load videos with max_num=1")
        layouts.append(SampleLayout(flag, start, size, tuple(tiles)))
        start += size
    return layouts


# ImageNet-normalised pixels lie in [(0 - mean) / std, (1 - mean) / std] = [-2.12, 2.64]. Values beyond three times
# that bound can only be unnormalised input (raw 0-255 pixels); random-normal test tensors stay well inside it.
PIXEL_LIMIT = 3 * max(max(-m / s, (1 - m) / s) for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
_LOAD_HINT = "load images with load_image / load_video or PVCInternVLProcessor"


def check_pixel_values(pixel_values: Any, size: int) -> None:
    """``pixel_values`` must be a finite float tensor ``(num_tiles, 3, S, S)`` (``load_image`` / processor output)."""
    if not torch.is_tensor(pixel_values):
        raise ValueError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}; {_LOAD_HINT} "
                         "(or convert explicitly with torch.from_numpy)")
    if not pixel_values.is_floating_point():
        raise ValueError(f"pixel_values must be normalised floats, got dtype {pixel_values.dtype} (raw 0-255 "
                         f"pixels?); {_LOAD_HINT}")
    if pixel_values.ndim != 4 or pixel_values.shape[1] != 3 or tuple(pixel_values.shape[2:]) != (size, size):
        raise ValueError(f"pixel_values must have shape (num_tiles, 3, {size}, {size}) for this model's image size "
                         f"{size}, got {tuple(pixel_values.shape)}")
    if pixel_values.shape[0] == 0:
        raise ValueError("pixel_values holds 0 tiles; pass None for a text-only prompt")
    if bad := int((~torch.isfinite(pixel_values)).sum()):
        raise ValueError(f"pixel_values has {bad} NaN/Inf values (of {pixel_values.numel()})")
    low, high = float(pixel_values.min()), float(pixel_values.max())
    if max(-low, high) > PIXEL_LIMIT:
        raise ValueError(f"pixel_values range from {low:.4g} to {high:.4g}, but ImageNet-normalised pixels stay "
                         f"within ±{PIXEL_LIMIT:.2f} (raw 0-255 pixels?); {_LOAD_HINT}")


def left_pad(rows: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-D id tensors into ``(B, T)`` ids and a ``(B, T)`` attention mask."""
    length = max(int(row.shape[0]) for row in rows)
    ids = torch.full((len(rows), length), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - row.shape[0] :] = row.cpu()
        mask[i, length - row.shape[0] :] = 1
    return ids, mask
