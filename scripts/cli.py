"""Argument-parsing helpers shared by the command-line scripts (``scripts/chat.py``, ``benchmarks/run.py``).

Standard library only, so ``--help`` and argument errors answer before anything heavy is imported.
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, and every option's default."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
