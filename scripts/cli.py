"""Command-line helpers shared by the scripts (``scripts/chat.py``, ``benchmarks/run.py``).

Standard library only at import, so ``--help`` and argument errors answer before anything heavy is
imported; :func:`resolve_device` imports torch when it is called.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, and every option's default."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def fail(prog: str, message: str) -> NoReturn:
    """Report a usage error as one line ``PROG: error: MESSAGE`` on stderr and exit with code 2."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


def resolve_device(text: str, prog: str):
    """``--device TEXT`` as a ``torch.device`` that exists on this machine, or a one-line error (exit 2): an
    unknown name, CUDA on a CPU-only torch build or a machine without a GPU, a CUDA index past the last GPU,
    MPS where it is not available."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError as err:
        fail(prog, f"--device {text!r} is not a torch device ({err}); use e.g. cpu, cuda, cuda:0 or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        fail(prog, f"--device {text}: CUDA is not available in this torch build or on this machine; "
                   "use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        fail(prog, f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        fail(prog, f"--device {text}: Apple MPS is not available here; use --device cpu")
    return device
