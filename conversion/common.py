"""Shared pieces of the converter: the error type, the logger and small formatting helpers."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("convert_checkpoint")


class ConversionError(Exception):
    """A conversion that must not produce output. ``problems`` lists every reason, one per line."""

    def __init__(self, summary: str, problems: list[str] | None = None):
        self.summary = summary
        self.problems = list(problems or [])
        super().__init__(self.render())

    def render(self) -> str:
        lines = [self.summary] + [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def read_json(path: Path) -> Any:
    """The JSON value in ``path``; ``ConversionError`` naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        if not text.strip():
            raise ConversionError(f"cannot read {path}: the file is empty; it must hold JSON (restore it from the "
                                  "original checkpoint)")
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConversionError(f"cannot read {path}: it is not valid JSON ({err}); fix it or restore it from the "
                              "original checkpoint") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConversionError(f"cannot read {path}: {err}") from err


def json_shown(value: Any) -> str:
    """A short description of a JSON value for an error message: ``"4096" (a string)``, ``a JSON list``, ``null``."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'list'}"
    text = json.dumps(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} (a string)" if isinstance(value, str) else text


def check_json_object(value: Any, path: Path, what_to_do: str) -> dict:
    """``value`` when it is a JSON object; ``ConversionError`` naming ``path`` otherwise."""
    if not isinstance(value, dict):
        raise ConversionError(f"{path} holds {json_shown(value)}, not a JSON object; {what_to_do}")
    return value


def read_json_object(path: Path, what_to_do: str) -> dict:
    """The JSON object in ``path``; ``ConversionError`` naming the file (and ``what_to_do``) otherwise."""
    return check_json_object(read_json(path), path, what_to_do)


def write_json(path: Path, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


_SIZE_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}


def parse_size(text: str | int) -> int:
    """``"5GB"`` -> 5_000_000_000 (decimal units as on the Hub; ``GiB`` etc. are binary)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"cannot read the size {text!r}; use e.g. 5GB, 500MB, 2GiB or a byte count")
    value = float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()]
    if value < 1:
        raise ValueError(f"size {text!r} is smaller than one byte")
    return int(value)


def format_bytes(size: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} B"


def layer_ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``."""
    values = sorted(set(indices))
    parts: list[str] = []
    start = prev = None
    for value in values + [None]:
        if start is not None and (value is None or value != prev + 1):
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if value is not None and start is None:
            start = value
        prev = value
    return ",".join(parts)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (main() may run in-process)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging() -> None:
    """Converter messages as ``LEVEL: message`` lines on stderr."""
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
