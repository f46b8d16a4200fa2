"""First contact: a device that is not there is one line from every script; the tiny official-layout source
checkpoint of the README's conversion example; the README sections a newcomer needs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BENCH = ROOT / "benchmarks" / "run.py"
CHAT = ROOT / "scripts" / "chat.py"
SOURCE = ROOT / "scripts" / "make_source_checkpoint.py"


# --------------------------------------------------------------------------------------------- devices
def test_missing_cuda_is_one_line(monkeypatch, capsys):
    import torch

    from scripts.cli import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        resolve_device("cuda", "run.py")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("run.py: error: --device cuda: CUDA is not available in this torch build or "
                                       "on this machine; use --device cpu\n")
    assert resolve_device("cpu", "run.py") == torch.device("cpu")


@pytest.mark.parametrize("script", [BENCH, CHAT], ids=["benchmark", "chat"])
def test_unknown_device_is_one_line_from_every_script(script):
    done = subprocess.run([sys.executable, str(script), "--device", "warp9"], capture_output=True, text=True,
                          cwd=ROOT, timeout=180)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"{script.name}: error: --device 'warp9' is not a torch device")
    assert done.stderr.count("\n") == 1


def test_benchmark_on_cuda_without_cuda_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the benchmark would run")
    done = subprocess.run([sys.executable, str(BENCH), "--device", "cuda"], capture_output=True, text=True,
                          cwd=ROOT, timeout=180)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("run.py: error: --device cuda: CUDA is not available in this torch build or on this "
                           "machine; use --device cpu\n")


# ------------------------------------------------------------------------------- conversion source
def make_source(tmp_path, name, *args):
    done = subprocess.run([sys.executable, str(SOURCE), "--dst", str(tmp_path / name), *args], capture_output=True,
                          text=True, timeout=300)
    return done


def test_source_checkpoint_has_the_official_layout(tmp_path):
    from safetensors import safe_open

    assert make_source(tmp_path, "src").returncode == 0
    folder = tmp_path / "src"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "internvl_chat" and config["llm_config"]["model_type"] == "internlm2"
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "InternLM2Tokenizer"
    assert (folder / "tokenizer.model").is_file()
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        names = set(handle.keys())
    for name in ("language_model.model.tok_embeddings.weight", "language_model.model.layers.1.attention.wqkv.weight",
                 "language_model.model.layers.0.feed_forward.w2.weight", "language_model.output.weight",
                 "mlp1.3.bias", "vision_model.encoder.layers.1.ls2"):
        assert name in names
    assert not any("q_proj" in name or "embed_tokens" in name for name in names)


def test_source_checkpoint_is_reproducible_and_renames_the_projector(tmp_path):
    from safetensors.torch import load_file

    assert make_source(tmp_path, "a").returncode == 0
    assert make_source(tmp_path, "b", "--projector-name", "mm_projector").returncode == 0
    first, renamed = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert {k.replace("mlp1.", "mm_projector.", 1) if k.startswith("mlp1.") else k for k in first} == set(renamed)
    assert all((first[k] == renamed[k.replace("mlp1.", "mm_projector.", 1)]).all() for k in first if k.startswith("mlp1."))
    assert (tmp_path / "a" / "tokenizer.model").read_bytes() == (tmp_path / "b" / "tokenizer.model").read_bytes()


def test_source_checkpoint_refuses_an_existing_folder(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "keep.txt").write_text("mine")
    done = make_source(tmp_path, "src")
    assert done.returncode == 1 and "--overwrite" in done.stderr
    assert (tmp_path / "src" / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------ the README
def test_readme_opens_with_the_two_commands_and_has_the_newcomer_sections():
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    assert "python3 scripts/bootstrap.py chat" in first_block and "python3 scripts/bootstrap.py test" in first_block
    for heading in ("## Troubleshooting", "## Glossary", "## Supported versions", "## Converting official checkpoints"):
        assert heading in text
    for phrase in ("Torch not compiled with CUDA enabled", "HF_HUB_OFFLINE=1", "transformers==4.57.6",
                   "load_video needs a video decoder", "trust_remote_code=True", "--out benchmarks"):
        assert phrase in text
    assert "python benchmarks/run.py --out benchmarks" not in text  # the scratch folder is the default
