"""PruneVid stage 2 through transformers' own `generate`: `prunevid.pruned_generate` returns what
`language_model.generate(inputs_embeds=...)` returns for the same options (ids, or a dict output with scores /
logits / beams), decodes on the pruned cache exactly as the slow reference of tests/test_prunevid.py, refuses
the options it cannot honour by name, and scores Qwen3-style attention (q_norm / k_norm) correctly.
"""

import math

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.cache_utils import DynamicCache

from pvc_internvl import prunevid as pv
from tests.test_prunevid import (
    VOCAB,
    _left_pad,
    _prompt,
    _ref_layer,
    _ref_scores,
    _ref_select,
    _reference_logits,
    _tiny_lm,
)

GROUPS, LAYER, ALPHA = [9, 6, 6, 6, 6, 2], 1, 0.4


def _video(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One prompt: 5 text tokens, 35 visual tokens in GROUPS, 8 text tokens (S = 48)."""
    embeds, visual = _prompt(5, GROUPS, 8, seed=seed)
    return embeds, torch.ones(1, embeds.shape[1], dtype=torch.long), visual[None], visual


def _reference_greedy(lm, embeds, visual, steps: int, eos: int | None = None, **kw) -> tuple[list[int], list]:
    """Greedy ids and the raw next-token logits of every step, each recomputed from scratch."""
    ids, logits = [], []
    for _ in range(steps):
        logits.append(_reference_logits(lm, embeds, visual, GROUPS, LAYER, ALPHA, ids, **kw))
        ids.append(int(logits[-1].argmax()))
        if ids[-1] == eos:
            break
    return ids, logits


def test_greedy_generation_config_matches_slow_reference():
    lm = _tiny_lm("llama")
    embeds, mask, visual, visual_1d = _video()
    config = GenerationConfig(max_new_tokens=5, do_sample=False, eos_token_id=VOCAB - 1, pad_token_id=0)
    out, stats = pv.pruned_generate(
        lm, embeds, mask, visual, [GROUPS], LAYER, ALPHA, generation_config=config, return_dict_in_generate=True,
        output_scores=True, output_logits=True,
    )
    ref_ids, ref_logits = _reference_greedy(lm, embeds, visual_1d, 5, eos=VOCAB - 1)
    assert out.sequences.tolist() == [ref_ids]
    assert len(out.scores) == len(out.logits) == len(ref_ids)
    for step, ref in enumerate(ref_logits):
        assert out.scores[step].shape == out.logits[step].shape == (1, VOCAB)
        torch.testing.assert_close(out.logits[step][0], ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out.scores[step], out.logits[step])  # greedy, no processor: scores are logits
    assert stats["visual_tokens_kept"] == [sum(int(n * ALPHA) for n in GROUPS)]
    # the plain return value is the new ids, as for `generate(inputs_embeds=...)`
    ids, _ = pv.pruned_generate(lm, embeds, mask, visual, [GROUPS], LAYER, ALPHA, generation_config=config)
    assert torch.equal(ids, out.sequences)
    assert "forward" not in vars(lm)  # the caller's model is left untouched


def test_output_scores_are_processed_logits():
    lm = _tiny_lm("qwen2")
    embeds, mask, visual, _ = _video(seed=4)
    out, _ = pv.pruned_generate(
        lm, embeds, mask, visual, [GROUPS], LAYER, ALPHA, max_new_tokens=6, eos_token_id=None, do_sample=False,
        repetition_penalty=3.0, return_dict_in_generate=True, output_scores=True, output_logits=True,
    )
    ids = out.sequences[0].tolist()
    for step in range(len(ids)):
        expected = out.logits[step][0].clone()
        seen = torch.tensor(sorted(set(ids[:step])), dtype=torch.long)
        if seen.numel():
            prior = expected[seen]
            expected[seen] = torch.where(prior < 0, prior * 3.0, prior / 3.0)
        torch.testing.assert_close(out.scores[step][0], expected)
        assert int(out.scores[step][0].argmax()) == ids[step]
    assert any(not torch.equal(s, l) for s, l in zip(out.scores, out.logits))  # the penalty did act


def test_max_length_counts_the_unpruned_prompt():
    lm = _tiny_lm("llama")
    embeds, mask, visual, _ = _video()
    prompt = embeds.shape[1]
    kw = dict(max_length=prompt + 3, eos_token_id=None, do_sample=False)
    ids, stats = pv.pruned_generate(lm, embeds, mask, visual, [GROUPS], LAYER, ALPHA, **kw)
    assert stats["prefill_len_pruned"][0] < prompt
    assert ids.shape == lm.generate(inputs_embeds=embeds, attention_mask=mask, **kw).shape == (1, 3)
    config = GenerationConfig(max_length=prompt + 2, eos_token_id=None, do_sample=False)
    ids, _ = pv.pruned_generate(lm, embeds, mask, visual, [GROUPS], LAYER, ALPHA, generation_config=config)
    assert ids.shape == (1, 2)


class _BanToken(LogitsProcessor):
    def __init__(self, token: int):
        self.token = token

    def __call__(self, input_ids, scores):
        return scores.masked_fill(torch.arange(scores.shape[-1]) == self.token, -math.inf)


class _StopAfter(StoppingCriteria):
    def __init__(self, count: int):
        self.count = count

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.count, dtype=torch.bool)


GENERATE_OPTIONS = {
    "greedy_dict": dict(do_sample=False, return_dict_in_generate=True, output_scores=True, output_logits=True),
    "sample": dict(do_sample=True, top_k=20, top_p=0.9, temperature=0.7, num_return_sequences=2),
    "beam": dict(num_beams=3, num_return_sequences=2, do_sample=False, return_dict_in_generate=True,
                 output_scores=True),
    "beam_sample": dict(num_beams=2, do_sample=True, temperature=0.8),
    "processor_and_stopping": dict(do_sample=False, logits_processor=LogitsProcessorList([_BanToken(5)]),
                                   stopping_criteria=StoppingCriteriaList([_StopAfter(4)])),
    "penalties": dict(do_sample=False, repetition_penalty=1.5, no_repeat_ngram_size=2, min_new_tokens=3),
}


@pytest.mark.parametrize("name", list(GENERATE_OPTIONS))
def test_alpha_one_returns_what_generate_returns(name):
    lm = _tiny_lm("llama")
    rows = [_prompt(4, [10, 5, 5], 6, seed=2), _prompt(2, [6, 6], 4, seed=3)]
    embeds, mask, visual = _left_pad(rows)
    kw = dict(max_new_tokens=6, eos_token_id=7, pad_token_id=0, **GENERATE_OPTIONS[name])
    torch.manual_seed(0)
    out, stats = pv.pruned_generate(lm, embeds, mask, visual, [[10, 5, 5], [6, 6]], 1, 1.0, **kw)
    torch.manual_seed(0)
    ref = lm.generate(inputs_embeds=embeds, attention_mask=mask, **kw)
    assert type(out) is type(ref)
    assert stats["visual_tokens_kept"] == stats["visual_tokens_in"] == [20, 12]  # one entry per input row
    if not isinstance(ref, torch.Tensor):
        assert set(out.keys()) == set(ref.keys())
        for key in ref.keys():
            got, want = out[key], ref[key]
            if isinstance(want, tuple):
                got, want = torch.stack(got), torch.stack(want)
            elif isinstance(want, DynamicCache):  # alpha = 1: the pruned cache holds every token
                got = torch.stack([torch.cat([layer.keys, layer.values]) for layer in got.layers])
                want = torch.stack([torch.cat([layer.keys, layer.values]) for layer in want.layers])
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        out, ref = out.sequences, ref.sequences
    assert torch.equal(out, ref)
    if name == "processor_and_stopping":
        assert 5 not in out.tolist() and out.shape[1] == 4


def test_beam_search_on_the_pruned_cache_matches_slow_reference():
    lm = _tiny_lm("llama")
    embeds, mask, visual, visual_1d = _video(seed=5)
    steps = 4
    out, stats = pv.pruned_generate(
        lm, embeds, mask, visual, [GROUPS], LAYER, ALPHA, max_new_tokens=steps, num_beams=3, num_return_sequences=3,
        eos_token_id=None, do_sample=False, length_penalty=1.0, return_dict_in_generate=True, output_scores=True,
    )
    assert out.sequences.shape == (3, steps)
    assert stats["prefill_len_pruned"] == [13 + sum(int(n * ALPHA) for n in GROUPS)]
    for seq, score in zip(out.sequences.tolist(), out.sequences_scores):
        logprob = sum(
            torch.log_softmax(_reference_logits(lm, embeds, visual_1d, GROUPS, LAYER, ALPHA, seq[:t]), -1)[seq[t]]
            for t in range(steps)
        )
        torch.testing.assert_close(score, logprob / steps, atol=1e-4, rtol=1e-4)


def test_expanded_rows_report_stats_per_input_row():
    lm = _tiny_lm("llama")
    rows = [_prompt(4, [8, 7, 7, 7], 6, seed=4), _prompt(3, [4, 8, 8], 9, seed=5)]
    embeds, mask, visual = _left_pad(rows)
    groups = [[8, 7, 7, 7], [4, 8, 8]]
    kw = dict(max_new_tokens=3, eos_token_id=None)
    ids, stats = pv.pruned_generate(lm, embeds, mask, visual, groups, 2, 0.4, do_sample=True, num_return_sequences=3,
                                    **kw)
    _, single = pv.pruned_generate(lm, embeds, mask, visual, groups, 2, 0.4, do_sample=False, **kw)
    assert ids.shape == (6, 3)
    assert stats == single
    assert stats["visual_tokens_kept"] == [sum(int(n * 0.4) for n in g) for g in groups]


UNSUPPORTED = [
    ("use_cache", dict(use_cache=False)),
    ("cache_implementation", dict(cache_implementation="static")),
    ("output_attentions", dict(output_attentions=True, return_dict_in_generate=True)),
    ("output_hidden_states", dict(output_hidden_states=True, return_dict_in_generate=True)),
    ("past_key_values", dict(past_key_values="cache")),
    ("assistant_model", dict(assistant_model="model")),
    ("prompt_lookup_num_tokens", dict(prompt_lookup_num_tokens=3)),
    ("penalty_alpha", dict(penalty_alpha=0.6, top_k=4)),
    ("dola_layers", dict(dola_layers="low")),
    ("num_beam_groups", dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0)),
    ("generation_config", dict(generation_config={"max_new_tokens": 2})),
]


@pytest.mark.parametrize("option,kwargs", UNSUPPORTED, ids=[name for name, _ in UNSUPPORTED])
def test_unsupported_option_raises_naming_it(option, kwargs):
    lm = _tiny_lm("llama")
    embeds, mask, visual, _ = _video()
    kwargs = {k: {"cache": DynamicCache(), "model": lm}.get(v, v) if isinstance(v, str) and k in (
        "past_key_values", "assistant_model") else v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=option):
        pv.pruned_generate(lm, embeds, mask, visual, [GROUPS], LAYER, ALPHA, max_new_tokens=2, **kwargs)


def _qwen3_lm():
    lm = _tiny_lm("qwen3")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in lm.model.layers:  # non-trivial norm weights, so q_norm / k_norm matter in every direction
            for norm in (layer.self_attn.q_norm, layer.self_attn.k_norm):
                norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=g))
    return lm


def test_qwen3_qk_norm_is_scored_like_the_layer():
    lm = _qwen3_lm()
    embeds, mask, visual, visual_1d = _video(seed=6)
    # sensitivity: scoring without q_norm / k_norm keeps other visual tokens on this prompt
    with torch.no_grad():
        h = embeds
        for layer in lm.model.layers[:LAYER]:
            h, _ = _ref_layer(lm, layer, h, torch.arange(embeds.shape[1])[None])
        layer = lm.model.layers[LAYER]
        with_norm = _ref_select(_ref_scores(lm, layer, h, visual_1d), GROUPS, ALPHA)
        without = _ref_select(_ref_scores(lm, layer, h, visual_1d, qk_norm=False), GROUPS, ALPHA)
    assert with_norm != without
    out, _ = pv.pruned_generate(
        lm, embeds, mask, visual, [GROUPS], LAYER, ALPHA, max_new_tokens=4, eos_token_id=None, do_sample=False,
        return_dict_in_generate=True, output_logits=True,
    )
    ref_ids, ref_logits = _reference_greedy(lm, embeds, visual_1d, 4)
    assert out.sequences.tolist() == [ref_ids]
    for step, ref in enumerate(ref_logits):
        torch.testing.assert_close(out.logits[step][0], ref, atol=1e-4, rtol=1e-4)
    wrong = _reference_logits(lm, embeds, visual_1d, GROUPS, LAYER, ALPHA, [], qk_norm=False)
    assert (wrong - out.logits[0][0]).abs().max() > 1e-3


def test_unsupported_backbones_are_refused():
    from transformers import AutoModelForCausalLM, Olmo2Config

    embeds, mask, visual, _ = _video()
    cfg = Olmo2Config(vocab_size=VOCAB, hidden_size=embeds.shape[-1], intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    olmo2 = AutoModelForCausalLM.from_config(cfg).eval()
    with pytest.raises(ValueError, match="olmo2"):
        pv.pruned_generate(olmo2, embeds, mask, visual, [GROUPS], LAYER, ALPHA, max_new_tokens=2)
    qwen3 = _qwen3_lm()
    attn = qwen3.model.layers[LAYER].self_attn
    attn.q_norm = type(attn.q_norm)(4 * attn.head_dim)  # a norm over all heads at once (OLMo2-style)
    with pytest.raises(ValueError, match="q_norm.*size 64"):
        pv.pruned_generate(qwen3, embeds, mask, visual, [GROUPS], LAYER, ALPHA, max_new_tokens=2)
