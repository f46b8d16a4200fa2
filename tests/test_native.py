"""The native transformers surface: chat template, processor -> generate(**inputs), generation config, and the
thin chat() / batch_chat() wrappers giving the same ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import GenerationConfig

from pvc_internvl.conversation import TEMPLATES
from pvc_internvl.processing import PVCInternVLProcessor
from pvc_internvl.prunevid import CACHE_ARG
from tests.test_remote_loading import write_video
from tests.tiny import tiny_model
from tests.tokenizer_utils import IM_END_ID, make_tiny_tokenizer

GEN = dict(max_new_tokens=4, do_sample=False)
PRUNEVID = {"enabled": True, "k": 3, "min_tokens_to_cluster": 1, "selected_layer": 0}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def model():
    model = tiny_model(pvc=True, temporal_random=True)
    model.generation_config.eos_token_id = [IM_END_ID]  # as generation_config.json of a converted checkpoint
    return model


@pytest.fixture(scope="module")
def processor(tokenizer, model):
    return PVCInternVLProcessor.from_model_config(tokenizer, model.config, num_segments=8)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    out = {"wide": Image.fromarray(rng.integers(0, 255, (100, 260, 3), dtype=np.uint8)),
           "square": Image.fromarray(rng.integers(0, 255, (90, 90, 3), dtype=np.uint8))}
    for frames in (8, 11):
        out[f"video{frames}"] = str(folder / f"clip{frames}.mp4")
        write_video(out[f"video{frames}"], frames=2 * frames)  # enough frames for distinct segments
    return out


def conversation(kind, media, text):
    items = {
        "image": [{"type": "image", "image": media["wide"]}],
        "images": [{"type": "image", "image": media["wide"]}, {"type": "image", "image": media["square"]}],
        "video": [{"type": "video", "path": media["video8"], "num_frames": 8}],
        "video11": [{"type": "video", "path": media["video11"], "num_frames": 11}],
        "text": [],
    }[kind]
    return [{"role": "user", "content": items + [{"type": "text", "text": text}]}]


def chat_question(kind, text, frames=8):
    prefix = {"image": "<image>\n", "images": "Image-1: <image>\nImage-2: <image>\n", "text": "",
              "video": "".join(f"Frame{i + 1}: <image>\n" for i in range(frames))}[kind]
    return prefix + text


# ------------------------------------------------------------------------------------ chat template
@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("system", [None, "", "You answer briefly."])
def test_jinja_template_renders_the_conversation_prompt(tokenizer, name, system):
    template = TEMPLATES[name]
    turns = [("<image>\nwhat is this?", "a red car."), ("and the colour?", "red\nmostly.")]
    messages = [] if system is None else [{"role": "system", "content": system}]
    for question, answer in turns:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": [{"type": "text", "text": "why?"}]})
    rendered = tokenizer.apply_chat_template(messages, chat_template=template.jinja, tokenize=False,
                                             add_generation_prompt=True)
    assert rendered == template.render(turns, "why?", system)
    closed = tokenizer.apply_chat_template(messages[:-1], chat_template=template.jinja, tokenize=False)
    assert closed == template.render(turns[:1], turns[1][0], system)[: -len(template.assistant_role)] + (
        template.assistant_role + turns[1][1] + template.sep)


def test_template_media_items(tokenizer):
    template = TEMPLATES["internlm2-chat"]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "diff?"}]}]
    rendered = tokenizer.apply_chat_template(messages, chat_template=template.jinja, tokenize=False,
                                             add_generation_prompt=True)
    assert rendered == template.render([], "Image-1: <image>\nImage-2: <image>\ndiff?")
    video = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "what?"}]}]
    assert tokenizer.apply_chat_template(video, chat_template=template.jinja, tokenize=False,
                                         add_generation_prompt=True) == template.render([], "<video>what?")


# ------------------------------------------------------------------------- native path == chat()
@pytest.mark.parametrize("prunevid", [None, PRUNEVID], ids=["dense", "prunevid"])
@pytest.mark.parametrize("kind", ["image", "images", "video", "text"])
def test_generate_on_chat_template_inputs_equals_chat(model, tokenizer, processor, media, kind, prunevid):
    inputs = processor.apply_chat_template(conversation(kind, media, "what happens"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True, return_tensors="pt")
    native = model.generate(**inputs, prunevid=prunevid, **GEN)
    layout = {}
    if "pixel_values" in inputs:
        layout = dict(data_flag=inputs["data_flag"], num_patches_list=inputs["num_patches_list"][0])
    answer, stats = model.chat(tokenizer, inputs.get("pixel_values"), chat_question(kind, "what happens"), dict(GEN),
                               prunevid=prunevid, return_stats=True, **layout)
    assert torch.equal(native[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])  # prompt + new ids
    assert processor.decode_answers(native[:, inputs["input_ids"].shape[1]:]) == [answer]
    if prunevid and kind == "video":
        assert stats["visual_tokens_after_stage2"][0] < stats["visual_tokens"][0]


@pytest.mark.parametrize("prunevid", [None, PRUNEVID], ids=["dense", "prunevid"])
def test_left_padded_mixed_batch_equals_batch_chat_and_single_chats(model, tokenizer, processor, media, prunevid):
    # the video row has the longest prompt and comes first (PruneVid used to take the pad id from row 0)
    convs = [conversation("video11", media, "what happens"), conversation("image", media, "describe"),
             conversation("video", media, "why")]
    batch = processor.apply_chat_template(convs, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert batch["attention_mask"][1].eq(0).any() and batch["attention_mask"][0].all()
    output = model.generate(**batch, prunevid=prunevid, **GEN)
    assert torch.equal(output[:, : batch["input_ids"].shape[1]], batch["input_ids"])
    native = processor.decode_answers(output[:, batch["input_ids"].shape[1]:])
    questions = [chat_question("video", "what happens", 11), chat_question("image", "describe"),
                 chat_question("video", "why")]
    batched = model.batch_chat(tokenizer, batch["pixel_values"], questions, dict(GEN), prunevid=prunevid,
                               num_patches_list=batch["num_patches_list"], data_flag=batch["data_flag"],
                               split_sizes=batch["split_sizes"])
    singles = []
    for conv, question in zip(convs, questions):
        one = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)
        singles.append(model.chat(tokenizer, one["pixel_values"], question, dict(GEN), prunevid=prunevid,
                                  data_flag=one["data_flag"], num_patches_list=one["num_patches_list"][0]))
    assert native == batched == singles


# ------------------------------------------------------------------------------- generation config
def _favour_im_end(model, inputs):
    """A copy of the model whose lm_head row of <|im_end|> is 1.5x the row of the token greedy decoding picks
    at step 2, so <|im_end|> wins by step 2 (what a trained model does at the end of an answer)."""
    import copy

    biased = copy.deepcopy(model)
    free = biased.generate(**inputs, max_new_tokens=3, do_sample=False, eos_token_id=None)
    head = biased.get_output_embeddings().weight
    with torch.no_grad():
        head[IM_END_ID] = 1.5 * head[free[0, inputs["input_ids"].shape[1] + 1]]
    return biased


def test_generate_stops_at_im_end_from_generation_config(model, processor, media):
    inputs = processor.apply_chat_template(conversation("image", media, "describe"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    biased = _favour_im_end(model, inputs)
    stopped = biased.generate(**inputs, max_new_tokens=12, do_sample=False)  # no stop ids given
    prompt_length = inputs["input_ids"].shape[1]
    assert IM_END_ID in stopped[0, prompt_length:].tolist() and stopped.shape[1] - prompt_length < 12
    assert stopped[0, -1] == IM_END_ID
    assert torch.equal(stopped, biased.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=IM_END_ID))
    biased.generation_config.eos_token_id = 2  # a model without generation_config.json runs on
    assert biased.generate(**inputs, max_new_tokens=12, do_sample=False).shape[1] == prompt_length + 12


def test_chat_accepts_a_generation_config(model, tokenizer, processor, media):
    inputs = processor(chat_question("image", "describe"), images=media["wide"])
    as_dict = model.chat(tokenizer, inputs["pixel_values"], "describe", dict(GEN))
    as_config = model.chat(tokenizer, inputs["pixel_values"], "describe", GenerationConfig(**GEN))
    assert as_dict == as_config
    longer = model.chat(tokenizer, inputs["pixel_values"], "describe", GenerationConfig(max_new_tokens=8, do_sample=False))
    assert longer.startswith(as_dict)


@pytest.mark.parametrize("prunevid", [None, PRUNEVID], ids=["dense", "prunevid"])
def test_return_dict_in_generate_with_scores(model, processor, media, prunevid):
    inputs = processor.apply_chat_template(conversation("video", media, "what happens"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    plain = model.generate(**inputs, prunevid=prunevid, max_new_tokens=3, do_sample=False, eos_token_id=None)
    try:
        out = model.generate(**inputs, prunevid=prunevid, max_new_tokens=3, do_sample=False, eos_token_id=None,
                             return_dict_in_generate=True, output_scores=True)
    except ValueError as err:  # allowed only as a clear refusal naming the option
        assert prunevid and ("return_dict_in_generate" in str(err) or "output_scores" in str(err))
        return
    assert torch.equal(out.sequences[:, -3:], plain[:, -3:])
    assert len(out.scores) == 3 and out.scores[0].shape == (1, model.config.llm_config.vocab_size)
    assert torch.equal(torch.stack([s.argmax(-1) for s in out.scores], dim=1), plain[:, -3:])


def test_unknown_generation_option_is_refused(model, processor, media):
    inputs = processor("describe", images=media["wide"])
    with pytest.raises(ValueError, match="not_a_generation_option"):
        model.generate(**inputs, max_new_tokens=2, not_a_generation_option=1)


def test_unbounded_request_is_refused_before_the_vision_encoder(model, processor, media, monkeypatch):
    inputs = processor("describe", images=media["wide"])
    monkeypatch.setattr(model.model, "encode_samples", lambda *a, **k: pytest.fail("the vision encoder ran"))
    with pytest.raises(ValueError, match=r"max_new_tokens=1000000000 .* at most max_new_tokens=\d+ fit"):
        model.generate(**inputs, max_new_tokens=10**9)


def test_settable_system_message(model, tokenizer, processor, media):
    inputs = processor.apply_chat_template(
        [{"role": "system", "content": "Be brief."}] + conversation("image", media, "describe"),
        add_generation_prompt=True, tokenize=True, return_dict=True)
    native = processor.decode_answers(model.generate(**inputs, **GEN)[:, inputs["input_ids"].shape[1]:])[0]
    default = model.system_message
    try:
        model.system_message = "Be brief."
        assert model.chat(tokenizer, inputs["pixel_values"], "describe", dict(GEN)) == native
        brief, _ = processor.chat_inputs(["describe"], inputs["pixel_values"], system_message=model.system_message)
    finally:
        model.system_message = default
    assert torch.equal(brief["input_ids"], inputs["input_ids"])  # chat() renders the system message it is given
    plain, _ = processor.chat_inputs(["describe"], inputs["pixel_values"], system_message=model.system_message)
    assert plain["input_ids"].shape != inputs["input_ids"].shape or not torch.equal(plain["input_ids"], inputs["input_ids"])


# ------------------------------------------------------------------------------- generation contract
def test_caller_eos_adds_to_the_checkpoint_stop_ids(model, tokenizer, processor, media):
    """lmms-eval and most clients pass eos_token_id=tokenizer.eos_token_id (</s>): the answer still ends at
    <|im_end|>, the end of the assistant turn, instead of running on."""
    inputs = processor.apply_chat_template(conversation("image", media, "describe"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    biased = _favour_im_end(model, inputs)
    assert tokenizer.eos_token_id != IM_END_ID
    out = biased.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=tokenizer.eos_token_id)
    answer = out[0, inputs["input_ids"].shape[1]:].tolist()
    assert answer[-1] == IM_END_ID and len(answer) < 12
    biased.generation_config.eos_token_id = 2  # a checkpoint that does not stop at <|im_end|> by itself runs on
    assert biased.generate(**inputs, max_new_tokens=12, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 12


@pytest.mark.parametrize("prunevid", [None, PRUNEVID], ids=["dense", "prunevid"])
def test_beams_repeat_the_prompt_before_each_returned_sequence(model, processor, media, prunevid):
    inputs = processor.apply_chat_template(conversation("video", media, "what happens"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    out = model.generate(**inputs, prunevid=prunevid, max_new_tokens=3, do_sample=False, num_beams=2,
                         num_return_sequences=2, eos_token_id=None)
    prompt = inputs["input_ids"]
    assert out.shape == (2, prompt.shape[1] + 3)
    assert torch.equal(out[:, : prompt.shape[1]], prompt.expand(2, -1))


def test_cache_keyword_matches_the_installed_transformers():
    import transformers
    from packaging import version

    renamed = version.parse(transformers.__version__).release >= (5, 24)
    assert CACHE_ARG == ("cache" if renamed else "past_key_values")


def test_stage2_and_forward_raise_no_deprecation_warnings(model, processor, media, caplog):
    """The package's own calls use the names the installed transformers expects (5.24 renamed the cache)."""
    import warnings

    inputs = processor.apply_chat_template(conversation("video", media, "what happens"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("WARNING"):
        warnings.simplefilter("always")
        out = model.generate(**inputs, prunevid=PRUNEVID, max_new_tokens=3, do_sample=False,
                             return_dict_in_generate=True, output_scores=True)
        model(**{k: v for k, v in inputs.items() if k != "num_patches_list"}, use_cache=True)
    assert len(out.scores) >= 1
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "deprecat" in m.lower()], messages


@pytest.mark.parametrize("prunevid", [None, PRUNEVID], ids=["dense", "prunevid"])
def test_client_batch_of_text_image_and_video_equals_single_calls(model, processor, media, prunevid):
    """The call evaluation harnesses make (lmms-eval's generic model): prompts rendered with tokenize=False,
    flat media lists for the batch, audios=[], a text-only prompt beside media prompts; the answer is
    output[:, input_ids.shape[1]:]."""
    convs = [conversation("text", media, "hello"), conversation("image", media, "describe"),
             [{"role": "user", "content": [{"type": "video", "video": media["video8"]}, {"type": "text", "text": "why"}]}]]
    texts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]
    batch = processor(text=texts, images=[media["wide"]], videos=[media["video8"]], audios=[], padding=True,
                      padding_side="left", return_tensors="pt")
    out, stats = model.generate(**batch, prunevid=prunevid, return_stats=True, **GEN)
    answers = processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    singles = []
    for conv in convs:
        one = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)
        ids = model.generate(**one, prunevid=prunevid, **GEN)
        singles.append(processor.batch_decode(ids[:, one["input_ids"].shape[1]:], skip_special_tokens=True)[0])
    assert answers == singles and all(a.strip() for a in answers)
    assert stats["data_flag"] == [1, 3] and stats["stage1_applied"] == [False, bool(prunevid)]


def test_chat_warns_about_a_video_prompt_without_data_flag(model, tokenizer, processor, media, caplog):
    video = processor(videos=media["video8"], num_segments=8)
    question = chat_question("video", "why")
    with caplog.at_level("WARNING"):
        model.chat(tokenizer, video["pixel_values"], question, dict(GEN), num_patches_list=[1] * 8)
    assert any("data_flag=[3]" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING"):
        model.chat(tokenizer, video["pixel_values"], question, dict(GEN), num_patches_list=[1] * 8, data_flag=[3])
    assert not any("data_flag" in r.getMessage() for r in caplog.records)


def test_generation_without_cache_equals_generation_with_cache(model, processor, media):
    """Without a cache every step re-reads the whole prompt, so the visual tokens go in at every step."""
    inputs = processor.apply_chat_template(conversation("image", media, "describe"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    cached = model.generate(**inputs, max_new_tokens=4, do_sample=False, eos_token_id=None)
    uncached = model.generate(**inputs, max_new_tokens=4, do_sample=False, eos_token_id=None, use_cache=False)
    assert torch.equal(cached, uncached)


def test_generation_continues_from_returned_cache(model, processor, media):
    inputs = processor.apply_chat_template(conversation("video", media, "why"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    whole = model.generate(**inputs, max_new_tokens=6, do_sample=False, eos_token_id=None)
    first = model.generate(**inputs, max_new_tokens=3, do_sample=False, eos_token_id=None,
                           return_dict_in_generate=True)
    cache = first.past_key_values if hasattr(first, "past_key_values") else first.cache
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(first.sequences[:, inputs["input_ids"].shape[1]:])], 1)
    rest = model.generate(input_ids=first.sequences, attention_mask=mask, **{CACHE_ARG: cache}, max_new_tokens=3,
                          do_sample=False, eos_token_id=None)
    assert torch.equal(rest, whole)


def test_text_generation_from_embeddings_equals_generation_from_ids(model, processor, media):
    inputs = processor.apply_chat_template(conversation("text", media, "hello"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    from_ids = model.generate(**inputs, max_new_tokens=4, do_sample=False, eos_token_id=None)
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    from_embeds = model.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], max_new_tokens=4,
                                 do_sample=False, eos_token_id=None)  # GenerationMixin: new ids only
    assert torch.equal(from_embeds, from_ids[:, inputs["input_ids"].shape[1]:])


def test_several_questions_reuse_the_encoded_video_and_the_prefilled_prefix(model, processor, media):
    """Encode a video once and prefill the prompt up to the question once; each question then costs its own
    tokens only, with the same answers as separate calls (PruneVid off: stage 2 scores the video by the question)."""
    import copy

    questions = ["what happens", "why is that", "who is there"]
    video = processor(videos=media["video8"], num_segments=8)
    layout = dict(data_flag=video["data_flag"], split_sizes=video["split_sizes"],
                  num_patches_list=video["num_patches_list"])
    prompts = [processor(text=f"<video>{q}", videos=media["video8"], num_segments=8) for q in questions]
    separate = [model.generate(**one, **GEN) for one in prompts]
    with torch.no_grad():
        features = model.extract_feature(video["pixel_values"], **layout)  # the vision encoder, once
    rows = [one["input_ids"][0] for one in prompts]
    width = min(len(row) for row in rows)
    same = torch.stack([row[:width] == rows[0][:width] for row in rows]).all(dim=0)
    prefix = int(same.long().cumprod(0).sum())  # the shared prompt: everything up to the question
    assert (rows[0][:prefix] == model.config.img_context_token_id).sum() == features.shape[0] * features.shape[1]
    with torch.no_grad():  # prefill the shared prefix once
        out = model(input_ids=rows[0][None, :prefix], visual_embeds=features.reshape(1, -1, features.shape[-1]),
                    use_cache=True)
    cache = out.past_key_values if hasattr(out, "past_key_values") else out.cache
    for one, expected in zip(prompts, separate):
        again = model.generate(input_ids=one["input_ids"], attention_mask=one["attention_mask"],
                               **{CACHE_ARG: copy.deepcopy(cache)}, **GEN)
        assert torch.equal(again, expected)
        with_features = model.generate(input_ids=one["input_ids"], visual_features=features, **GEN)
        assert torch.equal(with_features, expected)
        blind = model.generate(input_ids=one["input_ids"], **GEN)  # the same ids without the video's tokens
        assert not torch.equal(blind, expected)


@pytest.mark.parametrize("prunevid", [None, PRUNEVID, {**PRUNEVID, "enable_stage2": False}],
                         ids=["dense", "prunevid", "stage1-only"])
def test_encode_media_once_answers_three_questions_like_separate_calls(model, processor, media, prunevid, monkeypatch):
    """encode_media runs the vision encoder (and PruneVid stage 1) once; generate(visual_features=...) then answers
    each question exactly as a separate call would, also after a shared prefix prefilled once (stage 2 off)."""
    import copy

    questions = ["what happens", "why is that", "who is there"]
    prompts = [processor(text=f"<video>{q}", videos=media["video8"], num_segments=8) for q in questions]
    separate = [model.generate(**one, prunevid=prunevid, return_stats=True, **GEN) for one in prompts]
    encoder_calls = []
    encode = model.model.encode_samples
    monkeypatch.setattr(model.model, "encode_samples", lambda *a, **k: encoder_calls.append(1) or encode(*a, **k))
    encoded = model.encode_media(**processor(videos=media["video8"], num_segments=8), prunevid=prunevid)
    rows = [one["input_ids"][0] for one in prompts]
    prefix = int((rows[0][: len(rows[1])] == rows[1][: len(rows[0])]).long().cumprod(0).sum())  # system + video
    stage2 = bool(prunevid) and prunevid.get("enable_stage2", True)
    cache = None if stage2 else model.prefill(rows[0][None, :prefix], visual_features=encoded)
    for one, (expected, expected_stats) in zip(prompts, separate):
        reuse = {} if cache is None else {CACHE_ARG: copy.deepcopy(cache)}
        again, stats = model.generate(input_ids=one["input_ids"], attention_mask=one["attention_mask"],
                                      visual_features=encoded, return_stats=True, **reuse, **GEN)
        assert torch.equal(again, expected)
        assert stats.visual_tokens_after_stage2 == expected_stats["visual_tokens_after_stage2"]
    assert len(encoder_calls) == 1
    assert encoded.stats.stage1_applied == [bool(prunevid)]
    if stage2:
        with pytest.raises(ValueError, match="prefix cache cannot be shared"):
            model.prefill(rows[0][None, :prefix], visual_features=encoded)
    if prunevid:  # stage 2 settings may change per call; stage 1 settings were fixed by encode_media
        model.generate(input_ids=prompts[0]["input_ids"], visual_features=encoded, prunevid={"alpha": 0.5}, **GEN)
        with pytest.raises(ValueError, match=r"changes \['tau'\], which stage 1 used"):
            model.generate(input_ids=prompts[0]["input_ids"], visual_features=encoded, prunevid={"tau": 0.1}, **GEN)


def test_prunevid_leaves_calls_without_a_video_alone(model, processor, media):
    """PruneVid acts on video samples only: image batches (also without an explicit layout, one image per row, as
    transformers' generation tests pass them) and embeddings give what they give with PruneVid off."""
    batch = processor(text=["<image>\na", "<image>\nb"], images=[media["wide"], media["square"]])
    rows = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")}
    dense = model.generate(**rows, **GEN)
    assert torch.equal(model.generate(**rows, prunevid=PRUNEVID, **GEN), dense)
    assert torch.equal(model.generate(**batch, prunevid=PRUNEVID, **GEN), model.generate(**batch, **GEN))
    video = processor.apply_chat_template(conversation("video", media, "why"), add_generation_prompt=True,
                                          tokenize=True, return_dict=True)
    embeds = model.get_input_embeddings()(video["input_ids"])
    with pytest.raises(ValueError, match="PruneVid re-lays and prunes the prompt"):
        model.generate(**video, inputs_embeds=embeds, prunevid=PRUNEVID, **GEN)


@pytest.mark.parametrize("kind", ["image", "video"])
def test_static_cache_generation_equals_dynamic_cache_generation(model, processor, media, kind):
    inputs = processor.apply_chat_template(conversation(kind, media, "what is here"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    dynamic = model.generate(**inputs, max_new_tokens=5, do_sample=False, eos_token_id=None)
    static = model.generate(**inputs, max_new_tokens=5, do_sample=False, eos_token_id=None,
                            cache_implementation="static", return_dict_in_generate=True)
    assert type(static.past_key_values if hasattr(static, "past_key_values") else static.cache).__name__ == "StaticCache"
    assert torch.equal(static.sequences, dynamic)


def test_decode_steps_see_no_visual_tokens(model, processor, media):
    """Only the prompt step merges visual tokens; a decode step (one new id) gets none, so a compiled forward of the
    decode steps has no data-dependent branch."""
    inputs = processor.apply_chat_template(conversation("image", media, "what"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    seen = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append((kwargs["input_ids"].shape[1], kwargs.get("visual_embeds") is not None)),
        with_kwargs=True)
    try:
        model.generate(**inputs, max_new_tokens=4, do_sample=False, eos_token_id=None)
    finally:
        hook.remove()
    assert seen == [(inputs["input_ids"].shape[1], True)] + [(1, False)] * 3


def test_compiled_static_cache_generation_equals_eager(model, processor, media):
    """transformers compiles the decode steps of a static cache (fullgraph, forced on CPU here)."""
    from transformers import CompileConfig

    inputs = processor.apply_chat_template(conversation("image", media, "what"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    eager = model.generate(**inputs, max_new_tokens=4, do_sample=False, eos_token_id=None)
    config = CompileConfig(fullgraph=True, dynamic=False)
    config._compile_all_devices = True  # transformers compiles on accelerators only unless told
    torch.compiler.reset()
    try:
        compiled = model.generate(**inputs, max_new_tokens=4, do_sample=False, eos_token_id=None,
                                  cache_implementation="static", compile_config=config)
        assert hasattr(model, "_compiled_call"), "the decode steps were not compiled"
    finally:
        model.__dict__.pop("_compiled_call", None)
        torch.compiler.reset()
    assert torch.equal(compiled, eager)


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_generated_image_context_token_is_an_ordinary_token(model, processor, media, use_cache):
    """Only the prompt's slots take visual tokens: when the model itself emits the image-context token (forced here),
    later steps embed it like any token, with a cache or without one (every step re-reads the prompt). Reference:
    one forward over prompt + generated ids with the visual tokens merged into the prompt's slots only."""
    inputs = processor.apply_chat_template(conversation("image", media, "what"), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)
    context = model.config.img_context_token_id
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False, eos_token_id=None, output_logits=True,
                         sequence_bias={(context,): 100.0}, return_dict_in_generate=True, use_cache=use_cache)
    prompt_length = inputs["input_ids"].shape[1]
    assert out.sequences[0, prompt_length:].tolist() == [context] * 3
    with torch.no_grad():
        visual = model.extract_feature(inputs["pixel_values"], inputs["data_flag"], inputs["split_sizes"],
                                       inputs["num_patches_list"])
        embeds = model.get_input_embeddings()(out.sequences)
        slots = (out.sequences == context) & (torch.arange(out.sequences.shape[1]) < prompt_length)
        embeds[slots] = visual.reshape(-1, visual.shape[-1])
        reference = model(inputs_embeds=embeds).logits[0, prompt_length - 1 : -1]
    assert torch.allclose(torch.cat(out.logits), reference, atol=1e-4)
