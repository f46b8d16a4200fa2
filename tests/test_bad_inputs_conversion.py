"""Bad inputs of conversion/convert_checkpoint.py, one table row each: the exit code, a phrase of the error
(which names the file, field or rule at fault) and that nothing is left at --dst or in temporary folders.
Then interruption (SIGINT / SIGTERM), stale temporary folders of killed runs and --overwrite restoring."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pytest
import torch
from safetensors.torch import save_file

from conversion import convert_checkpoint as cc
from conversion import destination, writer
from tests.conv_helpers import Spec, llm_tensors, vision_tensors, write_checkpoint


def base_tensors(spec: Spec) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {**vision_tensors(spec, g), **llm_tensors(spec, g)}


def edit_config(src: Path, change: Callable[[dict], None]) -> None:
    config = json.loads((src / "config.json").read_text())
    change(config)
    (src / "config.json").write_text(json.dumps(config))


def rewrite_tensors(src: Path, change: Callable[[dict], None], shards: int = 1) -> None:
    """The base tensors after ``change``; one shard is saved as the tensors are (dtypes kept)."""
    tensors = base_tensors(Spec())
    change(tensors)
    (src / "model.safetensors").unlink()
    if shards == 1:
        save_file(tensors, str(src / "model.safetensors"))
    else:
        write_checkpoint(src, Spec(), tensors, shards=shards)


def write_index(src: Path, weight_map: dict) -> None:
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def key_map(src: Path, table) -> list[str]:
    path = src.parent / "keymap.json"
    path.write_text(table if isinstance(table, str) else json.dumps(table))
    return ["--key-map", path]


def sharded_with(src: Path, replace: Callable[[dict], dict]) -> None:
    """Two shards plus an index whose weight_map is ``replace(weight_map)``."""
    rewrite_tensors(src, lambda t: None, shards=2)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    write_index(src, replace(index["weight_map"]))


def first_shard_elsewhere(src: Path, target: str) -> Callable[[dict], dict]:
    def replace(weight_map: dict) -> dict:
        first = sorted(set(weight_map.values()))[0]
        (src / first).rename(src.parent / "outside.safetensors")
        return {k: (target if v == first else v) for k, v in weight_map.items()}
    return replace


def tensor_in_both_shards(src: Path) -> None:
    """Two shards that both hold ``mlp1.0.bias`` (the index names each shard)."""
    from safetensors.torch import load_file

    sharded_with(src, lambda m: m)
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        tensors = load_file(str(src / shard))
        tensors["mlp1.0.bias"] = torch.zeros(128)
        save_file(tensors, str(src / shard))


def set_tensor(name: str, value: torch.Tensor) -> Callable[[dict], None]:
    return lambda tensors: tensors.__setitem__(name, value)


@dataclass
class Case:
    id: str
    prepare: Callable[[Path, Path], list | None]  # (src, dst) -> extra CLI arguments
    phrase: str
    also: list[str] = field(default_factory=list)  # more phrases
    code: int = 1
    inspect: bool = False  # --inspect must refuse with the same one-line error


def config_case(id: str, change: Callable[[dict], None], phrase: str, also: Sequence[str] = ()) -> Case:
    """A source config.json edited by ``change``: refused before anything runs, by --inspect too."""
    return Case(id, lambda s, d: edit_config(s, change), phrase, ["config.json", *also], inspect=True)


def write_config_text(src: Path, text: str) -> None:
    (src / "config.json").write_text(text)


def set_field(path: str, value) -> Callable[[dict], None]:
    """Set ``a.b.c`` of the config to ``value``."""
    *parents, leaf = path.split(".")

    def change(config: dict) -> None:
        for part in parents:
            config = config[part]
        config[leaf] = value
    return change


def drop_field(path: str) -> Callable[[dict], None]:
    *parents, leaf = path.split(".")

    def change(config: dict) -> None:
        for part in parents:
            config = config[part]
        del config[leaf]
    return change


def native_llm_source(src: Path, change: Callable[[dict], None]) -> None:
    """The base checkpoint with a Qwen2 language model (a native config the converter passes on), then ``change``."""
    write_checkpoint(src, Spec(llm="qwen2"))
    edit_config(src, change)


def _dst_file(src: Path, dst: Path) -> list:
    dst.write_text("not a folder")
    return []


def _dst_not_empty(src: Path, dst: Path) -> list:
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    return []


CASES = [
    Case("no_config", lambda s, d: (s / "config.json").unlink(), "has no config.json"),
    Case("config_not_json", lambda s, d: (s / "config.json").write_text("{"), "cannot read", ["config.json"]),
    Case("unsupported_model_type", lambda s, d: edit_config(s, lambda c: c.update(model_type="llava")),
         "unsupported source model_type 'llava'"),
    Case("no_llm_config", lambda s, d: edit_config(s, lambda c: c.pop("llm_config")), "has no llm_config section",
         ["config.json", "add it as a JSON object"], inspect=True),
    Case("unsupported_llm", lambda s, d: edit_config(s, lambda c: c["llm_config"].update(
        model_type="gpt2", architectures=["GPT2LMHeadModel"])), "unsupported language model"),
    Case("unknown_top_level_key", lambda s, d: edit_config(s, lambda c: c.update(mystery_key=3)),
         "mystery_key = 3", ["--config-map"]),
    Case("unknown_vision_key", lambda s, d: edit_config(s, lambda c: c["vision_config"].update(mystery=True)),
         "vision_config.mystery"),
    Case("rope_scaling_unsupported", lambda s, d: edit_config(
        s, lambda c: c["llm_config"].update(rope_scaling={"type": "yarn", "factor": 2.0})),
         "unsupported InternLM2 rope_scaling"),
    Case("internlm2_bias", lambda s, d: edit_config(s, lambda c: c["llm_config"].update(bias=True)), "bias: true"),
    Case("downsample_ratio_contradicts_mlp1", lambda s, d: edit_config(s, lambda c: c.update(downsample_ratio=0.25)),
         "config.json says downsample_ratio 0.25", ["mlp1.0.weight"]),
    Case("set_unknown_field", lambda s, d: ["--set", "not_a_field=1"], "--set not_a_field",
         ["not a top-level field"]),
    Case("set_unknown_vision_field", lambda s, d: ["--set", "vision_config.nope=1"], "--set vision_config.nope",
         ["not a field of vision_config"]),
    Case("set_unknown_llm_field", lambda s, d: ["--set", "llm_config.no_such_llm_key=1"],
         "--set llm_config.no_such_llm_key"),
    Case("set_typo_suggests", lambda s, d: ["--set", "downsample_ration=0.5"], "did you mean 'downsample_ratio'"),
    Case("set_without_equals", lambda s, d: ["--set", "template"], "--set expects KEY=VALUE"),
    Case("set_string_for_bool", lambda s, d: ["--set", 'use_thumbnail="false"'], "check the --set values",
         ["use_thumbnail"]),
    Case("set_bad_template", lambda s, d: ["--set", 'template="chatml"'], "check the --set values", ["chatml"]),
    Case("index_outside_src", lambda s, d: sharded_with(s, first_shard_elsewhere(s, "../outside.safetensors")),
         "outside --src", ["model.safetensors.index.json", "../outside.safetensors"]),
    Case("index_absolute_path", lambda s, d: sharded_with(s, first_shard_elsewhere(s, str(s.parent / "outside.safetensors"))),
         "outside --src", ["model.safetensors.index.json"]),
    Case("index_missing_shard", lambda s, d: sharded_with(s, lambda m: {**m, "extra.weight": "model-9.safetensors"}),
         "names shard files that do not exist", ["model-9.safetensors"]),
    Case("index_not_json", lambda s, d: (s / "model.safetensors.index.json").write_text("[1,"),
         "cannot read", ["model.safetensors.index.json"]),
    Case("index_without_weight_map", lambda s, d: write_index(s, {}), "has no weight_map",
         ["model.safetensors.index.json"]),
    Case("index_value_not_a_name", lambda s, d: write_index(s, {"mlp1.0.weight": 3}), "which are not file names"),
    Case("shard_garbage", lambda s, d: (s / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"),
         "cannot read the safetensors header of", ["model.safetensors"]),
    Case("shard_truncated", lambda s, d: (s / "model.safetensors").write_bytes((s / "model.safetensors").read_bytes()[:4000]),
         "cannot read the safetensors header of", ["model.safetensors"]),
    Case("only_pytorch_bin", lambda s, d: ((s / "model.safetensors").rename(s / "pytorch_model.bin"), None)[1],
         "only safetensors checkpoints are read", ["pytorch_model.bin"]),
    Case("tensor_in_two_shards", lambda s, d: tensor_in_both_shards(s), "mlp1.0.bias is stored in both",
         ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]),
    Case("int_tensor_for_float_weight", lambda s, d: rewrite_tensors(
        s, set_tensor("mlp1.3.weight", torch.zeros(64, 64, dtype=torch.int64))),
         "dtype mismatch: mlp1.3.weight is I64 in model.safetensors", ["floating-point"]),
    Case("unmapped_tensor", lambda s, d: rewrite_tensors(s, set_tensor("vision_model.extra.weight", torch.zeros(2))),
         "unmapped source tensor vision_model.extra.weight"),
    Case("missing_tensor", lambda s, d: rewrite_tensors(s, lambda t: t.pop("mlp1.1.bias")),
         "target tensor mlp1.1.bias has no source tensor"),
    Case("shape_mismatch", lambda s, d: rewrite_tensors(s, set_tensor("mlp1.3.weight", torch.zeros(64, 32))),
         "shape mismatch: mlp1.3.weight [64, 32]"),
    Case("key_map_not_json", lambda s, d: key_map(s, "{oops"), "cannot read --key-map file", ["keymap.json"]),
    Case("key_map_not_object", lambda s, d: key_map(s, [1, 2]), "must hold a JSON object", ["keymap.json"]),
    Case("key_map_bad_regex", lambda s, d: key_map(s, {"(unclosed": None}), "is not a valid regular expression",
         ["keymap.json"]),
    Case("key_map_target_not_string", lambda s, d: key_map(s, {"x": 5}), "must be a string or null", ["keymap.json"]),
    Case("key_map_bad_group", lambda s, d: (rewrite_tensors(s, set_tensor("vision_model.extra.weight", torch.zeros(2))),
                                            key_map(s, {r"vision_model\.extra\.weight": r"mlp1.\3"}))[1],
         "cannot build a target name for vision_model.extra.weight", ["invalid group reference 3"]),
    Case("key_map_unknown_target", lambda s, d: (rewrite_tensors(s, set_tensor("vision_model.extra.weight", torch.zeros(2))),
                                                 key_map(s, {r"vision_model\.extra\.weight": "no.such.weight"}))[1],
         "which the converted model does not have", ["--key-map rule"]),
    Case("config_map_unknown_field", lambda s, d: (
        edit_config(s, lambda c: c.update(mystery_key=1)),
        (s.parent / "cmap.json").write_text(json.dumps({"mystery_key": "nope"})),
        ["--config-map", s.parent / "cmap.json"])[2],
         "--config-map maps mystery_key to 'nope'"),
    Case("dst_inside_src", lambda s, d: ["--dst", s / "out"], "must not be --src"),
    Case("dst_is_a_file", _dst_file, "exists and is not a folder"),
    Case("dst_not_empty", _dst_not_empty, "pass --overwrite"),
    Case("bad_max_shard_size", lambda s, d: ["--max-shard-size", "lots"], "cannot read the size 'lots'"),
    Case("img_context_outside_vocab", lambda s, d: ["--img-context-token-id", 99999], "img_context_token_id 99999 is outside"),
    Case("broken_tokenizer_json", lambda s, d: (s / "tokenizer.json").write_text(json.dumps({"added_tokens": []})),
         "cannot convert the tokenizer of", ["tokenizer.json"]),
    # ---- the shape of the source config.json and the fields the converter reads (checked before anything runs)
    Case("config_is_a_list", lambda s, d: write_config_text(s, "[1, 2]"), "holds a JSON list, not a JSON object",
         ["config.json", "vision_config and llm_config"], inspect=True),
    Case("config_is_a_string", lambda s, d: write_config_text(s, '"internvl_chat"'),
         'holds "internvl_chat" (a string), not a JSON object', ["config.json"], inspect=True),
    Case("config_is_a_number", lambda s, d: write_config_text(s, "3"), "holds 3, not a JSON object", ["config.json"],
         inspect=True),
    Case("config_empty", lambda s, d: write_config_text(s, ""), "the file is empty", ["config.json"], inspect=True),
    Case("config_truncated_json", lambda s, d: write_config_text(s, '{"model_type": "internvl_chat", '),
         "is not valid JSON", ["config.json"], inspect=True),
    config_case("vision_config_null", set_field("vision_config", None), "vision_config is null, not a JSON object",
                ["the vision model's settings"]),
    config_case("llm_config_null", set_field("llm_config", None), "llm_config is null, not a JSON object"),
    config_case("vision_config_list", set_field("vision_config", [1, 2]), "vision_config is a JSON list, not a JSON object"),
    config_case("llm_config_string", set_field("llm_config", "internlm2"),
                'llm_config is "internlm2" (a string), not a JSON object'),
    config_case("no_vision_config", drop_field("vision_config"), "has no vision_config section"),
    *(config_case(f"llm_without_{name}", drop_field(f"llm_config.{name}"), f"llm_config has no {name}",
                  ["add it as an integer"])
      for name in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size")),
    config_case("llm_hidden_size_string", set_field("llm_config.hidden_size", "4096"),
                'llm_config.hidden_size is "4096" (a string), not an integer', ['(e.g. "hidden_size": 4096)']),
    config_case("llm_hidden_size_fraction", set_field("llm_config.hidden_size", 64.5),
                "llm_config.hidden_size is 64.5, not an integer"),
    config_case("llm_hidden_size_bool", set_field("llm_config.hidden_size", True),
                "llm_config.hidden_size is true, not an integer"),
    config_case("llm_vocab_size_null", set_field("llm_config.vocab_size", None),
                "llm_config.vocab_size is null, not an integer"),
    config_case("llm_kv_heads_string", set_field("llm_config.num_key_value_heads", "2"),
                'llm_config.num_key_value_heads is "2" (a string), not an integer or null'),
    config_case("llm_max_positions_list", set_field("llm_config.max_position_embeddings", [256]),
                "llm_config.max_position_embeddings is a JSON list, not an integer"),
    config_case("llm_rope_theta_word", set_field("llm_config.rope_theta", "big"),
                'llm_config.rope_theta is "big" (a string), not a number'),
    config_case("llm_rms_norm_eps_null", set_field("llm_config.rms_norm_eps", None),
                "llm_config.rms_norm_eps is null, not a number"),
    config_case("llm_rope_scaling_list", set_field("llm_config.rope_scaling", [2.0]),
                "llm_config.rope_scaling is a JSON list, not a JSON object or null"),
    config_case("llm_rope_factor_string", set_field("llm_config.rope_scaling", {"type": "dynamic", "factor": "2"}),
                'llm_config.rope_scaling.factor is "2" (a string), not a number', ['(e.g. "factor": 2.0)']),
    config_case("llm_architectures_string", set_field("llm_config.architectures", "InternLM2ForCausalLM"),
                "llm_config.architectures is", ["not a list of strings"]),
    config_case("llm_tie_string", set_field("llm_config.tie_word_embeddings", "false"),
                'llm_config.tie_word_embeddings is "false" (a string), not true or false'),
    config_case("vision_hidden_size_string", set_field("vision_config.hidden_size", "32"),
                'vision_config.hidden_size is "32" (a string), not an integer', ['(e.g. "hidden_size": 32)']),
    config_case("vision_layers_null", set_field("vision_config.num_hidden_layers", None),
                "vision_config.num_hidden_layers is null, not an integer"),
    config_case("vision_temporal_layers_strings", set_field("vision_config.temporal_attn_layers", ["0", "1"]),
                "vision_config.temporal_attn_layers is a JSON list, not a list of integers"),
    config_case("downsample_ratio_word", set_field("downsample_ratio", "half"),
                'downsample_ratio is "half" (a string), not a number'),
    config_case("downsample_ratio_list", set_field("downsample_ratio", [0.5]), "downsample_ratio is a JSON list"),
    config_case("use_temporal_string", set_field("use_temporal", "false"),
                'use_temporal is "false" (a string), not true or false'),
    config_case("img_context_token_id_string", set_field("img_context_token_id", "150"),
                'img_context_token_id is "150" (a string), not an integer or null'),
    Case("native_llm_hidden_size_string", lambda s, d: native_llm_source(s, set_field("llm_config.hidden_size", "64")),
         'llm_config.hidden_size is "64" (a string), not an integer', ["config.json"], inspect=True),
    Case("native_llm_rope_theta_word", lambda s, d: native_llm_source(s, set_field("llm_config.rope_theta", "big")),
         'llm_config.rope_theta is "big" (a string), not a number', ["config.json"], inspect=True),
    Case("native_llm_without_vocab_size", lambda s, d: native_llm_source(s, drop_field("llm_config.vocab_size")),
         "llm_config has no vocab_size", ["config.json"], inspect=True),
    Case("generation_config_list", lambda s, d: (s / "generation_config.json").write_text("[2]"),
         "generation_config.json holds a JSON list, not a JSON object", ["delete it"], inspect=True),
    Case("tokenizer_config_list", lambda s, d: (s / "tokenizer_config.json").write_text('["x"]'),
         "tokenizer_config.json holds a JSON list, not a JSON object", inspect=True),
    Case("config_map_list", lambda s, d: ((s.parent / "cmap.json").write_text("[1]"),
                                          ["--config-map", s.parent / "cmap.json"])[1],
         "cmap.json holds a JSON list, not a JSON object", ["--config-map"]),
    Case("set_string_for_llm_size", lambda s, d: ["--set", 'llm_config.hidden_size="64"'],
         '--set llm_config.hidden_size: the value is "64" (a string), not an integer',
         ["--set llm_config.hidden_size=64"]),
    Case("set_word_for_rms_norm_eps", lambda s, d: ["--set", "llm_config.rms_norm_eps=tiny"],
         '--set llm_config.rms_norm_eps: the value is "tiny" (a string), not a number'),
]


def leftovers(dst: Path) -> list[str]:
    return sorted(p.name for p in dst.parent.iterdir() if p.name.startswith(dst.name + "."))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_leaves_nothing(tmp_path, capsys, case):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_checkpoint(src, Spec())
    before = dst.read_bytes() if dst.is_file() else None
    extra = case.prepare(src, dst)
    extra = extra if isinstance(extra, list) else []
    before = dst.read_bytes() if dst.is_file() else {p.name for p in dst.iterdir()} if dst.is_dir() else before
    argv = ["--src", src, "--dst", dst, "--img-context-token-id", 150]
    if "--dst" in map(str, extra):
        argv = ["--src", src, "--img-context-token-id", 150]
    code = cc.main([str(a) for a in argv + extra])
    err = capsys.readouterr().err
    assert code == case.code, err
    for phrase in [case.phrase, *case.also]:
        assert phrase in err, (phrase, err)
    assert "Traceback" not in err
    if before is None:
        assert not dst.exists()
    else:  # the file / folder that was there is unchanged
        assert (dst.read_bytes() if dst.is_file() else {p.name for p in dst.iterdir()}) == before
    assert leftovers(dst) == []


@pytest.mark.parametrize("case", [c for c in CASES if c.inspect], ids=[c.id for c in CASES if c.inspect])
def test_bad_source_config_is_one_line_and_inspect_says_the_same(tmp_path, capsys, case):
    """A bad source config file: one ``error:`` line (no traceback, no log lines before it), and --inspect of the
    same source refuses with exactly that line and prints no report."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_checkpoint(src, Spec())
    case.prepare(src, dst)
    assert cc.main([str(a) for a in ["--src", src, "--dst", dst]]) == case.code
    convert_err = capsys.readouterr().err.splitlines()
    assert len(convert_err) == 1 and convert_err[0].startswith("error: "), convert_err
    assert cc.main(["--inspect", str(src)]) == case.code
    captured = capsys.readouterr()
    assert captured.err.splitlines() == convert_err and captured.out == ""
    assert not dst.exists() and leftovers(dst) == []


def test_source_config_check_accepts_the_official_reference_config():
    """The official InternVL2 config of the golden reference data passes the up-front check unchanged."""
    from conversion import configs

    path = Path(__file__).resolve().parent / "data/golden/internvl2/internlm2/checkpoint/config.json"
    config = json.loads(path.read_text())
    assert configs.check_source_config(config, path) == json.loads(path.read_text())


def test_table_has_enough_rows():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


# ============================================================================= interruption and restore
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_writing_removes_the_temporary_folder(tmp_path, capsys, monkeypatch, signum):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_checkpoint(src, Spec())
    seen = {}

    def interrupted_package(out_dir, *args, **kwargs):
        seen["tmp"] = out_dir
        assert (out_dir / "model.safetensors").is_file()  # the weights are half of the work
        os.kill(os.getpid(), signum)
        raise AssertionError("the signal did not interrupt the conversion")

    monkeypatch.setattr(writer, "write_package", interrupted_package)
    handlers = {sig: signal.getsignal(sig) for sig in destination.HANDLED_SIGNALS}
    code = cc.main([str(a) for a in ["--src", src, "--dst", dst, "--img-context-token-id", 150]])
    assert code == 128 + signum
    assert f"interrupted by {signal.Signals(signum).name}" in capsys.readouterr().err
    assert not seen["tmp"].exists() and not dst.exists() and leftovers(dst) == []
    assert {sig: signal.getsignal(sig) for sig in destination.HANDLED_SIGNALS} == handlers  # restored


def test_sigterm_to_a_converter_process_leaves_no_temporary_folder(tmp_path):
    """A real process: SIGTERM arrives while the weights are written (a sleep in the shard writer)."""
    from tests.conv_helpers import CONVERTER, ROOT, isolated_env

    src, dst = tmp_path / "src", tmp_path / "dst"
    write_checkpoint(src, Spec())
    script = (
        "import sys, time, runpy\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from conversion import weights\n"
        "original = weights.ShardWriter.flush\n"
        "def slow(self):\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(30)\n"
        "    original(self)\n"
        "weights.ShardWriter.flush = slow\n"
        f"sys.argv = ['convert', '--src', {str(src)!r}, '--dst', {str(dst)!r}, '--img-context-token-id', '150']\n"
        f"runpy.run_path({str(CONVERTER)!r}, run_name='__main__')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], env=isolated_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    assert len(leftovers(dst)) == 1  # the temporary folder exists while it writes
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted by SIGTERM" in err
    assert not dst.exists() and leftovers(dst) == []


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def stale_folder(parent: Path, name: str, pid: int | None) -> Path:
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "model-00001.partial.safetensors").write_bytes(b"x" * 100)
    if pid is not None:
        (folder / destination.MARKER).write_text(json.dumps({"pid": pid, "host": __import__("socket").gethostname()}))
    return folder


def test_later_run_removes_stale_folders_of_killed_runs_and_reports_unknown_ones(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_checkpoint(src, Spec())
    killed = stale_folder(tmp_path, "dst.tmp-killed", dead_pid())
    running = stale_folder(tmp_path, "dst.tmp-running", os.getpid())
    unknown = stale_folder(tmp_path, "dst.tmp-unknown", None)
    assert cc.main([str(a) for a in ["--src", src, "--dst", dst, "--img-context-token-id", 150]]) == 0
    err = capsys.readouterr().err
    assert not killed.exists() and f"removed {killed}" in err
    assert running.exists() and f"{running} belongs to a conversion that is still running" in err
    assert unknown.exists() and f"{unknown} looks like the temporary folder of an interrupted conversion" in err
    assert (dst / "model.safetensors").is_file()


def test_stale_old_folder_puts_a_lost_destination_back(tmp_path, capsys):
    dst = tmp_path / "dst"
    old = stale_folder(tmp_path, "dst.old-killed", dead_pid())
    (old / "dst").mkdir()
    (old / "dst" / "keep.txt").write_text("previous checkpoint")
    lines = destination.clean_stale(dst)
    assert lines == [f"restored {dst} from {old}, left by a killed run during its final rename"]
    assert (dst / "keep.txt").read_text() == "previous checkpoint" and not old.exists()


def test_overwrite_keeps_the_previous_destination_when_writing_fails(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_checkpoint(src, Spec())
    _dst_not_empty(src, dst)
    (src / "tokenizer.json").write_text(json.dumps({"added_tokens": []}))  # fails after the weights are written
    assert cc.main([str(a) for a in ["--src", src, "--dst", dst, "--overwrite"]]) == 1
    assert "cannot convert the tokenizer" in capsys.readouterr().err
    assert [p.name for p in dst.iterdir()] == ["keep.txt"] and leftovers(dst) == []


def test_overwrite_restores_the_previous_destination_when_the_final_rename_fails(tmp_path, capsys, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_checkpoint(src, Spec())
    _dst_not_empty(src, dst)
    real_replace = os.replace

    def failing_replace(a, b):
        if Path(a).name.startswith("dst.tmp-"):
            raise OSError("disk full")
        return real_replace(a, b)

    monkeypatch.setattr(destination.os, "replace", failing_replace)
    code = cc.main([str(a) for a in ["--src", src, "--dst", dst, "--overwrite", "--img-context-token-id", 150]])
    assert code == 1 and "disk full" in capsys.readouterr().err
    assert [p.name for p in dst.iterdir()] == ["keep.txt"] and leftovers(dst) == []


def test_inspect_reports_unknown_set_field(tmp_path, capsys):
    src = tmp_path / "src"
    write_checkpoint(src, Spec())
    assert cc.main([str(a) for a in ["--src", src, "--inspect", "--set", "vision_config.not_here=1"]]) == 0
    report = capsys.readouterr().out
    assert "No target model could be built" in report and "--set vision_config.not_here" in report

