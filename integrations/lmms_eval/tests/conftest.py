"""Fixtures of the lmms-eval integration tests: the demo checkpoint, lmms-eval runs in subprocesses, and the
project's own path (``apply_chat_template`` + ``generate``) as the reference.

These tests need lmms-eval 0.7.3 and the plugin installed (see ../ci.sh); they run offline on CPU.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parents[1]
ROOT = INTEGRATION.parents[1]
TASKS = INTEGRATION / "tasks"
TASK = "pvc_local"
NUM_FRAMES = 8  # small, for speed (the plugin's default is the PVC card's 64)
MAX_NEW_TOKENS = 16  # the task's generation_kwargs


def task_utils():
    """The task's own utils.py (media loading), imported from its file."""
    spec = importlib.util.spec_from_file_location("pvc_local_utils", TASKS / TASK / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def task_docs() -> list[dict]:
    with open(TASKS / TASK / "pvc_local.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """The tiny random-weight demo checkpoint, built from this working tree's code."""
    folder = tmp_path_factory.mktemp("demo")
    subprocess.run(
        [sys.executable, "scripts/make_demo_checkpoint.py", "--dst", str(folder / "ckpt"), "--examples", str(folder / "examples")],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return folder / "ckpt"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lmms_command(model: str, model_args: str, batch_size: int, output: Path, *extra: str, nproc: int = 1) -> list[str]:
    launcher = [sys.executable, "-m", "lmms_eval"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                    "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "lmms_eval"]
    return launcher + [
        "--model", model, "--model_args", model_args, "--include_path", str(TASKS), "--tasks", TASK,
        "--batch_size", str(batch_size), "--log_samples", "--output_path", str(output), "--verbosity", "INFO", *extra,
    ]


def lmms_env(home: Path, **extra: str) -> dict:
    env = dict(os.environ)
    env.update(
        HF_HOME=str(home / "hf"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def read_samples(output: Path) -> dict[int, dict]:
    files = glob.glob(str(output / "**" / f"*samples_{TASK}.jsonl"), recursive=True)
    assert len(files) == 1, f"expected one sample log under {output}, found {files}"
    with open(files[0], encoding="utf-8") as handle:
        samples = [json.loads(line) for line in handle if line.strip()]
    return {sample["doc_id"]: sample for sample in samples}


def read_results(output: Path) -> dict:
    files = glob.glob(str(output / "**" / "*_results.json"), recursive=True)
    assert len(files) == 1, f"expected one results file under {output}, found {files}"
    with open(files[0], encoding="utf-8") as handle:
        return json.load(handle)["results"][TASK]


def run_lmms(tmp: Path, model: str, model_args: str, batch_size: int, *extra: str, nproc: int = 1,
             env: dict | None = None, timeout: int = 300) -> tuple[dict[int, dict], str]:
    """Run lmms-eval; return the sample log by doc id and the combined output. lmms-eval exits 0 even when every
    request failed, so the sample log is checked for all documents."""
    output = tmp / "out"
    tmp.mkdir(parents=True, exist_ok=True)
    command = lmms_command(model, model_args, batch_size, output, *extra, nproc=nproc)
    # cwd: the run imports the installed plugin, not a copy next to the tests
    done = subprocess.run(command, env=env or lmms_env(tmp), cwd=tmp, capture_output=True, text=True, timeout=timeout)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"lmms-eval failed ({done.returncode}):\n{log[-6000:]}"
    assert "Traceback" not in log and "Error during evaluation" not in log, log[-6000:]
    samples = read_samples(output)
    assert sorted(samples) == list(range(len(task_docs()))), f"sample log has docs {sorted(samples)}\n{log[-3000:]}"
    return samples, log


def start_lmms(tmp: Path, model: str, model_args: str, batch_size: int, *extra: str, env: dict) -> subprocess.Popen:
    """Start lmms-eval in its own process group (so that the test can kill exactly that run)."""
    command = lmms_command(model, model_args, batch_size, tmp / "out", *extra)
    tmp.mkdir(parents=True, exist_ok=True)
    with open(tmp / "run.log", "w", encoding="utf-8") as log:
        return subprocess.Popen(command, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the run's process group (the run started by start_lmms, nothing else)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def wait_for(predicate, timeout: float, process: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Reference:
    """The project's own path: ``processor.apply_chat_template(conversations, tokenize=True)`` + ``generate``."""

    def __init__(self, checkpoint: Path, dtype):
        import torch
        from transformers import AutoModel, AutoProcessor

        self.torch = torch
        self.model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True, dtype=dtype).eval()
        self.processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
        self.utils = task_utils()
        self.docs = task_docs()

    def conversation(self, doc_id: int, num_frames: int | None) -> list[dict]:
        doc = self.docs[doc_id]
        content = []
        for visual in self.utils.doc_to_visual(doc):
            if isinstance(visual, str):
                item = {"type": "video", "path": visual}
                if num_frames is not None:
                    item["num_frames"] = num_frames
                content.append(item)
            else:
                content.append({"type": "image", "image": visual})
        content.append({"type": "text", "text": self.utils.doc_to_text(doc)})
        return [{"role": "user", "content": content}]

    def answers(self, batches: list[list[int]], num_frames: int | None = NUM_FRAMES, prunevid: bool = False,
                decode: str = "answers") -> tuple[dict[int, str], dict[int, dict]]:
        """Answers (and, per doc, the stats lists of its batch with the doc's row) for the given batches."""
        answers, stats = {}, {}
        for batch in batches:
            inputs = self.processor.apply_chat_template(
                [self.conversation(i, num_frames) for i in batch], add_generation_prompt=True, tokenize=True,
                return_dict=True,
            )
            with self.torch.no_grad():
                ids, call_stats = self.model.generate(
                    **inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, prunevid={"enabled": prunevid},
                    return_stats=True,
                )
            new = ids[:, inputs["input_ids"].shape[1]:]
            if decode == "answers":
                texts = self.processor.decode_answers(new)
            else:  # what lmms-eval's generic model does
                texts = self.processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            for row, doc_id in enumerate(batch):
                answers[doc_id] = texts[row]
                stats[doc_id] = {"row": row, "input_ids": inputs["input_ids"], "stats": call_stats}
        return answers, stats
