"""PruneVid inside the chat model: off switch, per-call overrides, batching, accounting, warnings."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import GenerationMixin

from pvc_internvl.layout import sample_layouts
from pvc_internvl.processing import PVCInternVLProcessor
from tests.tiny import pixels, tiny_model
from tests.tokenizer_utils import make_tiny_tokenizer

GEN = dict(max_new_tokens=5, do_sample=False)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def model():
    # 16 tokens per frame (8 x 8 patches, ratio 0.5) so that stage 1 clusters and stage 2 keeps tokens.
    return tiny_model(
        pvc=True,
        temporal_random=True,
        downsample_ratio=0.5,
        llm=dict(num_hidden_layers=3),
        prunevid=dict(selected_layer=1),
    )


def video_question(frames: int) -> str:
    return "".join(f"Frame{i + 1}: <image>\n" for i in range(frames)) + "what happens in the video"


def _video(frames: int, seed: int) -> torch.Tensor:
    """A clip with a static background and a moving patch: stage 1 finds static and dynamic tokens."""
    base = pixels(1, seed=seed).repeat(frames, 1, 1, 1)
    for t in range(frames):
        base[t, :, 10 * (t % 6) : 10 * (t % 6) + 40, 20:60] = 2.0 * (t + 1) / frames
    return base


def _chat(model, tokenizer, frames, prunevid=None, seed=0):
    return model.chat(
        tokenizer, _video(frames, seed), video_question(frames), dict(GEN),
        data_flag=[3], num_patches_list=[1] * frames, prunevid=prunevid, return_stats=True,
    )


def test_disabled_is_the_plain_model(model, tokenizer):
    video = _video(8, 1)
    question = video_question(8)
    kwargs = dict(data_flag=[3], num_patches_list=[1] * 8)
    off = model.chat(tokenizer, video, question, dict(GEN), **kwargs)
    explicit_off = model.chat(tokenizer, video, question, dict(GEN), prunevid={"enabled": False, "alpha": 0.1}, **kwargs)
    # The same prompt through forward() + plain HF generate on the merged embeddings.
    processor = PVCInternVLProcessor.from_model_config(tokenizer, model.config)
    prompt, _ = processor.chat_prompt(question, sample_layouts(8, [3], [8], [[1] * 8])[0])
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        visual = model.extract_feature(video, data_flag=[3])
        embeds = model.model.merge_visual_tokens(ids, model.get_input_embeddings()(ids), visual.reshape(-1, visual.shape[-1]))
        plain = GenerationMixin.generate(
            model, inputs_embeds=embeds, attention_mask=torch.ones_like(ids), eos_token_id=4, pad_token_id=2, **GEN
        )
    assert off == explicit_off == processor.decode_answers(plain)[0]


def test_alpha_one_without_stage1_equals_disabled(model, tokenizer):
    off, _ = _chat(model, tokenizer, 8, {"enabled": False})
    kept_all, stats = _chat(model, tokenizer, 8, {"enabled": True, "enable_stage1": False, "alpha": 1.0})
    assert kept_all == off
    assert stats["visual_tokens"] == stats["visual_tokens_after_stage1"] == stats["visual_tokens_after_stage2"] == [8 * 16]


def test_accounting_reports_every_stage(model, tokenizer):
    _, stats = _chat(model, tokenizer, 10, {"enabled": True})
    before, after1, after2 = stats["visual_tokens"][0], stats["visual_tokens_after_stage1"][0], stats["visual_tokens_after_stage2"][0]
    assert stats["frames"] == [10] and stats["stage1_applied"] == [True]
    assert before == 160 and 0 < after2 < after1 < before
    _, dense = _chat(model, tokenizer, 10, {"enabled": False})
    assert stats["prefill_flops"][0] < dense["prefill_flops"][0]


def test_batch_of_two_videos_equals_each_alone(model, tokenizer):
    on = {"enabled": True}
    alone = [_chat(model, tokenizer, frames, on, seed=frames)[0] for frames in (8, 11)]
    pv = torch.cat([_video(8, 8), _video(11, 11)])
    batch, stats = model.batch_chat(
        tokenizer, pv, [video_question(8), video_question(11)], dict(GEN),
        num_patches_list=[[1] * 8, [1] * 11], data_flag=[3, 3], split_sizes=[8, 11], prunevid=on, return_stats=True,
    )
    assert batch == alone
    assert stats["frames"] == [8, 11]


def test_image_and_video_batch_prunes_only_the_video(model, tokenizer):
    pv = torch.cat([pixels(2, seed=3), _video(8, 4)])
    _, stats = model.batch_chat(
        tokenizer, pv, ["describe", video_question(8)], dict(GEN),
        num_patches_list=[[2], [1] * 8], data_flag=[1, 3], split_sizes=[2, 8], prunevid={"enabled": True}, return_stats=True,
    )
    assert stats["visual_tokens_after_stage2"][0] == stats["visual_tokens"][0] == 2 * 4 * 16
    assert stats["visual_tokens_after_stage2"][1] < stats["visual_tokens"][1]


def test_short_video_skips_stage1_with_a_warning(model, tokenizer, caplog):
    with caplog.at_level(logging.WARNING):
        answer, stats = _chat(model, tokenizer, 5, {"enabled": True})
    assert "it has 5 frames, fewer than the 7 it needs" in caplog.text
    assert stats["stage1_applied"] == [False]
    assert stats["visual_tokens_after_stage1"] == [80]
    assert stats["visual_tokens_after_stage2"][0] == 5 * int(16 * 0.4)  # stage 2 still prunes per frame
    assert isinstance(answer, str)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"alpha": 0.0}, "'alpha' must be a finite number in \\(0, 1\\], got 0.0"),
        ({"alpha": 1.5}, "'alpha' must be a finite number in \\(0, 1\\], got 1.5"),
        ({"cluster_ratio": 2.0}, "'cluster_ratio' must be a finite number in \\(0, 1\\], got 2.0"),
        ({"temporal_segment_ratio": 0.0}, "'temporal_segment_ratio' must be a finite number in \\(0, 1\\], got 0.0"),
        ({"selected_layer": 3}, "selected_layer 3 is beyond the language model, which has 3 layers"),
        ({"colour": 1}, "unknown prunevid setting 'colour'"),
    ],
)
def test_bad_settings_name_the_value(model, tokenizer, override, message):
    with pytest.raises(ValueError, match=message):
        _chat(model, tokenizer, 8, {"enabled": True, **override})


def test_beam_search_runs_with_stage2(model, tokenizer):
    # stage 2 decodes through the stock generate(): beam search works and keeps the pruned token count
    answer, stats = model.chat(tokenizer, _video(8, 0), video_question(8), dict(GEN, num_beams=3),
                               data_flag=[3], num_patches_list=[1] * 8, prunevid={"enabled": True}, return_stats=True)
    _, greedy_stats = _chat(model, tokenizer, 8, {"enabled": True})
    assert isinstance(answer, str) and stats["visual_tokens_after_stage2"] == greedy_stats["visual_tokens_after_stage2"]
    with pytest.raises(ValueError, match="cache_implementation"):
        model.chat(tokenizer, _video(8, 0), video_question(8), dict(GEN, cache_implementation="static"),
                   data_flag=[3], num_patches_list=[1] * 8, prunevid={"enabled": True})


def test_config_switch_is_saved(tmp_path):
    enabled = tiny_model(pvc=True, prunevid=dict(enabled=True, selected_layer=1, alpha=0.3))
    enabled.config.save_pretrained(tmp_path)
    from pvc_internvl.configuration_pvc_internvl import PVCInternVLConfig

    loaded = PVCInternVLConfig.from_pretrained(tmp_path)
    assert loaded.prunevid.enabled is True and loaded.prunevid.alpha == 0.3 and loaded.prunevid.selected_layer == 1
