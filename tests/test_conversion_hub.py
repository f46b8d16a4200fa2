"""The converter's Hub workflow against a local fake Hub (no network): --src REPO_ID (snapshot_download with
--revision), --inspect REPO_ID from the safetensors headers only (get_safetensors_metadata), --push-to-hub
with --revision / --push-revision / --create-pr / --commit-message / --private, and the model card."""

from __future__ import annotations

import fnmatch
import json
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conversion import convert_checkpoint as cc
from conversion import hub
from tests.conv_helpers import Spec, write_checkpoint

REPO = "OpenGVLab/Tiny-PVC"


def header(path: Path) -> dict:
    """The JSON header of a safetensors file, read by hand (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


class FakeHub:
    """Repos are local folders ``{(repo_id, revision): folder}``; every call is recorded."""

    def __init__(self, tmp_path: Path):
        self.repos: dict[tuple[str, str], Path] = {}
        self.calls: list[tuple[str, dict]] = []
        self.cache = tmp_path / "hub-cache"

    def add(self, repo_id: str, folder: Path, revision: str = "main") -> None:
        self.repos[(repo_id, revision)] = folder

    def repo(self, repo_id: str, revision: str | None) -> Path:
        if (repo_id, revision or "main") not in self.repos:
            raise FileNotFoundError(f"404: {repo_id}@{revision or 'main'}")
        return self.repos[(repo_id, revision or "main")]

    # huggingface_hub.snapshot_download
    def snapshot_download(self, repo_id: str, revision: str | None = None, allow_patterns=None, **kwargs) -> str:
        self.calls.append(("snapshot_download", dict(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)))
        source = self.repo(repo_id, revision)
        target = self.cache / repo_id.replace("/", "--") / (revision or "main")
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if allow_patterns is None or any(fnmatch.fnmatch(path.name, p) for p in allow_patterns):
                shutil.copy2(path, target / path.name)
        return str(target)

    # HfApi()
    def __call__(self):
        return self

    def get_safetensors_metadata(self, repo_id: str, revision: str | None = None, **kwargs):
        self.calls.append(("get_safetensors_metadata", dict(repo_id=repo_id, revision=revision)))
        folder = self.repo(repo_id, revision)
        files = {}
        for path in sorted(folder.glob("*.safetensors")):
            tensors = {name: SimpleNamespace(dtype=info["dtype"], shape=info["shape"])
                       for name, info in header(path).items() if name != "__metadata__"}
            files[path.name] = SimpleNamespace(tensors=tensors)
        return SimpleNamespace(files_metadata=files)

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", dict(repo_id=repo_id, **kwargs)))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", {**kwargs, "files": sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())}))
        pr = "https://huggingface.co/x/discussions/1" if kwargs.get("create_pr") else None
        return SimpleNamespace(pr_url=pr, commit_url="https://huggingface.co/x/commit/abc")

    def named(self, name: str) -> list[dict]:
        return [kwargs for call, kwargs in self.calls if call == name]


@pytest.fixture
def fake_hub(tmp_path, monkeypatch) -> FakeHub:
    fake = FakeHub(tmp_path)
    monkeypatch.setattr(hub, "download", fake.snapshot_download)
    monkeypatch.setattr(hub, "make_api", fake)
    return fake


def run(argv: list) -> int:
    return cc.main([str(a) for a in argv])


def pvc_repo(folder: Path) -> Path:
    """A PVC-style source whose temporal tensors use names no rule knows (2 ViT layers, C = 32)."""
    spec = Spec(model_type="pvc_internvl", pvc={"use_temporal": True, "image_repeat_time": 4}, downsample_ratio=0.5)
    g = torch.Generator().manual_seed(0)
    from tests.conv_helpers import llm_tensors, vision_tensors

    tensors = {**vision_tensors(spec, g), **llm_tensors(spec, g)}
    for layer in range(2):
        tensors[f"vision_model.encoder.layers.{layer}.tempo_mixer.in_w"] = torch.zeros(96, 32)
    tensors["vision_model.clock.fc.weight"] = torch.zeros(32, 16)
    write_checkpoint(folder, spec, tensors, shards=2)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# source card\n")
    return folder


def test_inspect_repo_id_reads_only_headers(tmp_path, capsys, fake_hub):
    fake_hub.add(REPO, pvc_repo(tmp_path / "remote"), revision="v1")
    assert run(["--inspect", REPO, "--revision", "v1"]) == 0
    report = capsys.readouterr().out
    assert f"Source: {REPO} (Hub; safetensors headers only)" in report
    assert "vision_model.encoder.layers.N.tempo_mixer.in_w  x2  [96, 32] F32  layers 0-1" in report
    assert "vision_model.clock.fc.weight  x1  [32, 16] F32" in report
    assert "Verdict: cannot be converted yet: 3 unmapped source tensors" in report
    assert "Config fields still to settle" in report and "vision_config.time_input is not in config.json" in report
    downloads = fake_hub.named("snapshot_download")
    assert downloads and all("*.safetensors" not in (d["allow_patterns"] or []) for d in downloads)
    assert all(d["revision"] == "v1" for d in downloads)
    assert fake_hub.named("get_safetensors_metadata") == [{"repo_id": REPO, "revision": "v1"}]
    assert not list(fake_hub.cache.rglob("*.safetensors"))  # no weight came down


def test_inspect_local_folder_gives_the_same_verdict(tmp_path, capsys):
    folder = pvc_repo(tmp_path / "local")
    assert run(["--inspect", folder]) == 0
    assert "Verdict: cannot be converted yet: 3 unmapped source tensors" in capsys.readouterr().out


def test_src_repo_id_downloads_the_revision_and_cards_it(tmp_path, capsys, fake_hub):
    remote = tmp_path / "remote"
    write_checkpoint(remote, Spec())
    (remote / "README.md").write_text("---\nlicense: mit\n---\n# InternVL2 tiny\n")
    fake_hub.add(REPO, remote, revision="refs/pr/3")
    dst = tmp_path / "dst"
    assert run(["--src", REPO, "--revision", "refs/pr/3", "--dst", dst, "--img-context-token-id", 150]) == 0
    (download,) = fake_hub.named("snapshot_download")
    assert download["revision"] == "refs/pr/3" and "*.safetensors" in download["allow_patterns"]
    card = (dst / "README.md").read_text()
    assert "license: mit" in card and f"base_model: {REPO}" in card and "pipeline_tag: image-text-to-text" in card
    assert "- video" in card and f"Converted from `{REPO}`" in card
    assert str(tmp_path) not in card and "hub-cache" not in card  # no local path
    assert "AutoTokenizer.from_pretrained(path, trust_remote_code=True)" in card
    assert card.index("processor.apply_chat_template(") < card.index("model.chat(")  # native path first


def test_push_with_branch_pr_and_message_leaves_privacy_to_the_hub(tmp_path, capsys, fake_hub):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_checkpoint(src, Spec())
    argv = ["--src", src, "--dst", dst, "--img-context-token-id", 150, "--push-to-hub", "me/pvc-tiny",
            "--revision", "dev", "--create-pr", "--commit-message", "Tiny PVC", "--license", "apache-2.0"]
    assert run(argv) == 0
    assert fake_hub.named("create_repo") == [{"repo_id": "me/pvc-tiny", "exist_ok": True}]  # no private=False
    assert fake_hub.named("create_branch") == [{"repo_id": "me/pvc-tiny", "branch": "dev", "exist_ok": True}]
    (upload,) = fake_hub.named("upload_folder")
    assert (upload["revision"], upload["create_pr"], upload["commit_message"]) == ("dev", True, "Tiny PVC")
    assert upload["folder_path"] == str(dst.resolve()) and "model.safetensors" in upload["files"]
    assert "discussions/1" in capsys.readouterr().err
    card = (dst / "README.md").read_text()
    assert "license: apache-2.0" in card and 'path = "me/pvc-tiny"' in card


def test_push_private_and_push_revision(tmp_path, fake_hub):
    remote, dst = tmp_path / "remote", tmp_path / "dst"
    write_checkpoint(remote, Spec())
    fake_hub.add(REPO, remote, revision="v2")
    argv = ["--src", REPO, "--revision", "v2", "--dst", dst, "--img-context-token-id", 150,
            "--push-to-hub", "me/pvc-tiny", "--push-revision", "converted", "--private"]
    assert run(argv) == 0
    assert fake_hub.named("snapshot_download")[0]["revision"] == "v2"
    assert fake_hub.named("create_repo") == [{"repo_id": "me/pvc-tiny", "exist_ok": True, "private": True}]
    (upload,) = fake_hub.named("upload_folder")
    assert (upload["revision"], upload["create_pr"]) == ("converted", False)
    assert upload["commit_message"] == "Upload converted PVC-InternVL checkpoint"


@pytest.mark.parametrize("argv,phrase", [
    (["--src", "no/such/path/x", "--dst", "DST"], "neither an existing folder nor a Hub repo id"),
    (["--src", REPO, "--revision", "nope", "--dst", "DST"], "cannot download OpenGVLab/Tiny-PVC (revision nope)"),
    (["--inspect", "Other/Repo"], "cannot download Other/Repo"),
])
def test_hub_source_errors_name_the_repo(tmp_path, capsys, fake_hub, argv, phrase):
    write_checkpoint(tmp_path / "remote", Spec())
    fake_hub.add(REPO, tmp_path / "remote")
    argv = [tmp_path / "dst" if a == "DST" else a for a in argv]
    assert run(argv) == 1
    assert phrase in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("argv,phrase", [
    (["--create-pr"], "--create-pr only apply with --push-to-hub"),
    (["--private", "--commit-message", "m"], "--commit-message, --private only apply with --push-to-hub"),
    (["--revision", "dev"], "--revision applies to a Hub repo id"),
])
def test_options_that_would_do_nothing_are_refused(tmp_path, capsys, argv, phrase):
    write_checkpoint(tmp_path / "src", Spec())
    with pytest.raises(SystemExit) as exit_info:
        run(["--src", tmp_path / "src", "--dst", tmp_path / "dst", *argv])
    assert exit_info.value.code == 2 and phrase in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()
