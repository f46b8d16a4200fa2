"""The output folder of a conversion: written into a temporary sibling of ``--dst`` and renamed into place at
the very end, so that a failure, Ctrl-C or SIGTERM leaves nothing at ``--dst`` (and, with ``--overwrite``,
the previous ``--dst`` as it was).

Temporary folders are ``<dst>.tmp-*`` (the new checkpoint) and ``<dst>.old-*`` (the previous ``--dst``
during the final swap). Each holds a marker file with the writer's process id and host, so that a later
run can tell the folders of killed runs (removed; a lost previous ``--dst`` is put back) from those of a
run still going (reported and left alone).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from conversion.common import ConversionError, logger

MARKER = ".pvc-conversion-owner.json"
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Raised in the main thread when SIGINT / SIGTERM arrives while the output is being written."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def report_failure(err: BaseException) -> int:
    """Write the one ``error: ...`` message of a failed command to stderr; return its exit code (1, or 128 +
    the signal number after SIGINT / SIGTERM)."""
    if isinstance(err, Interrupted):
        sys.stderr.write(f"error: {err}; nothing was written at --dst\n")
        return 128 + err.signum
    sys.stderr.write(f"error: {err.render() if isinstance(err, ConversionError) else err}\n")
    return 1


def check_destination(dst: Path, overwrite: bool, src: Path | None = None) -> None:
    if src is not None and (dst == src or src in dst.parents or dst in src.parents):
        raise ConversionError(f"--dst {dst} must not be --src {src} or inside / around it")
    if dst.exists() and not dst.is_dir():
        raise ConversionError(f"--dst {dst} exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise ConversionError(f"--dst {dst} exists and is not empty; pass --overwrite to replace it")


# ------------------------------------------------------------------------------------------- markers
def _write_marker(folder: Path) -> None:
    (folder / MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")


def _owner_alive(folder: Path) -> bool | None:
    """True / False for a folder of a running / dead process on this host; None when it cannot be told
    (no readable marker, or another host)."""
    try:
        owner = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(dst: Path) -> list[str]:
    """Remove the temporary folders of killed runs next to ``dst`` (putting a lost previous ``dst`` back);
    report those of running or unknown owners. Returns one line per folder."""
    lines = []
    if not dst.parent.is_dir():
        return lines
    for folder in sorted(dst.parent.glob(f"{dst.name}.tmp-*")) + sorted(dst.parent.glob(f"{dst.name}.old-*")):
        if not folder.is_dir():
            continue
        alive = _owner_alive(folder)
        if alive is False:
            lines.append(_remove_stale(folder, dst))
        elif alive:
            lines.append(f"{folder} belongs to a conversion that is still running; left alone")
        else:
            lines.append(f"{folder} looks like the temporary folder of an interrupted conversion, but its owner "
                         f"cannot be checked (no {MARKER}, or another host); remove it by hand if no run uses it")
    for line in lines:
        logger.warning(line)
    return lines


def _remove_stale(folder: Path, dst: Path) -> str:
    previous = folder / dst.name
    if folder.name.startswith(f"{dst.name}.old-") and previous.is_dir() and not dst.exists():
        os.replace(previous, dst)
        shutil.rmtree(folder, ignore_errors=True)
        return f"restored {dst} from {folder}, left by a killed run during its final rename"
    shutil.rmtree(folder, ignore_errors=True)
    return f"removed {folder}, the temporary folder of a killed conversion"


# ------------------------------------------------------------------------------------------ signals
@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGINT / SIGTERM into :class:`Interrupted` while the block runs (main thread only; elsewhere
    Python cannot install handlers, and the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------------------------ staging
def normalise_permissions(folder: Path) -> None:
    """mkdtemp creates a 0700 folder; give the output the permissions a plain mkdir / open would."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def move_into_place(tmp: Path, dst: Path) -> None:
    """Rename ``tmp`` to ``dst``; an existing ``dst`` is moved aside first and put back if anything fails."""
    if not dst.exists():
        os.replace(tmp, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f"{dst.name}.old-", dir=dst.parent))
    _write_marker(old)
    os.replace(dst, old / dst.name)
    try:
        os.replace(tmp, dst)
    except BaseException:
        os.replace(old / dst.name, dst)  # put the previous folder back
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_output(dst: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``dst``; when the block succeeds it becomes ``dst``. On any
    failure or SIGINT / SIGTERM the temporary folder is removed and ``dst`` stays as it was. Callers run
    :func:`clean_stale` first."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with signals_raise():
        tmp = Path(tempfile.mkdtemp(prefix=f"{dst.name}.tmp-", dir=dst.parent))
        try:
            _write_marker(tmp)
            yield tmp
            (tmp / MARKER).unlink()
            normalise_permissions(tmp)
            move_into_place(tmp, dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
