"""Core model: PVC temporal encoding, token layout, prompts, chat / batch_chat / generate, input checks."""

from __future__ import annotations

import json

import pytest
import torch
from transformers.generation.streamers import BaseStreamer

from pvc_internvl.configuration_pvc_internvl import PVCInternVLConfig
from pvc_internvl.conversation import INTERNVL_SYSTEM_MESSAGE, get_template
from pvc_internvl.layout import sample_layouts
from pvc_internvl.modeling_pvc_internvl import PVCInternVLChatModel
from pvc_internvl.processing import PVCInternVLProcessor
from tests.conftest import ROOT
from tests.tiny import IMAGE_SIZE, pixels, tiny_config, tiny_model
from tests.tokenizer_utils import IM_END_ID, IMG_CONTEXT_ID, make_tiny_tokenizer

GEN = dict(max_new_tokens=6, do_sample=False)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


# ------------------------------------------------------------------------------- PVC temporal encoding
def _plain_copy(model: PVCInternVLChatModel) -> PVCInternVLChatModel:
    """The same weights in a model without temporal modules (plain InternViT)."""
    config = PVCInternVLConfig.from_dict(model.config.to_dict())
    config.use_temporal = False
    config.vision_config.use_temporal_modules = False
    plain = PVCInternVLChatModel(config).eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing
    assert all("temporal_attn" in k or "adaLN" in k or "time_embedder" in k for k in unexpected)
    assert unexpected, "the PVC model should have temporal parameters"
    return plain


def test_fresh_temporal_model_equals_internvit():
    model = tiny_model(pvc=True)
    plain = _plain_copy(model)
    video, tiles = pixels(5, seed=1), pixels(3, seed=2)
    with torch.no_grad():
        for pv, flag in ((video, 3), (tiles, 1)):
            a = model.extract_feature(pv, data_flag=[flag])
            b = plain.extract_feature(pv, data_flag=[flag])
            assert a.shape == b.shape
            assert (a - b).abs().max().item() <= 1e-6


def test_temporal_attention_is_causal():
    model = tiny_model(pvc=True, temporal_random=True)
    video = pixels(6, seed=3)
    changed_late, changed_early = video.clone(), video.clone()
    changed_late[3] = pixels(1, seed=9)[0]
    changed_early[0] = pixels(1, seed=10)[0]
    with torch.no_grad():
        base = model.extract_feature(video, data_flag=[3])  # (6, L, D)
        late = model.extract_feature(changed_late, data_flag=[3])
        early = model.extract_feature(changed_early, data_flag=[3])
    diff_late = (late - base).abs().amax(dim=(1, 2))
    diff_early = (early - base).abs().amax(dim=(1, 2))
    assert diff_late[:3].max().item() <= 1e-6  # frames before the change are untouched
    assert diff_late[3:].min().item() > 1e-3  # the changed frame and later ones move
    assert diff_early[1:].min().item() > 1e-3  # every later frame sees the first one


def test_static_clip_frames_differ_once_adaln_is_trained():
    model = tiny_model(pvc=True, temporal_random=True)
    with torch.no_grad():
        blocks = model.extract_feature(pixels(1, seed=4), data_flag=[1])  # one tile -> 4 frames
    assert blocks.shape[0] == 4
    assert (blocks[1] - blocks[0]).abs().max().item() > 1e-6  # identical frames, different timestamps


@pytest.mark.parametrize("chunk", [1, 3])
def test_chunked_encoding_equals_one_pass(chunk):
    model = tiny_model(pvc=True, temporal_random=True)
    video = pixels(7, seed=5)
    with torch.no_grad():
        whole = model.extract_feature(video, data_flag=[3])
        chunked = model.extract_feature(video, data_flag=[3], chunk_frames=chunk)
    assert (whole - chunked).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "vision, select_layer",
    [
        (dict(num_hidden_layers=3, temporal_attn_layers=[0, 2], time_input="normalized"), -1),
        (dict(num_hidden_layers=3, temporal_include_cls=True, adaln_num_modulations=6), -2),
    ],
)
def test_chunked_encoding_of_several_clips_equals_one_pass(vision, select_layer):
    """Three image tiles = three 4-frame clips encoded together, chunk 3 (spans of 3 and 1 frames)."""
    model = tiny_model(pvc=True, temporal_random=True, vision=vision, select_layer=select_layer)
    tiles = pixels(3, seed=11)
    with torch.no_grad():
        whole = model.extract_feature(tiles, data_flag=[1])
        chunked = model.extract_feature(tiles, data_flag=[1], chunk_frames=3)
        frames = tiles.repeat_interleave(4, dim=0)  # clip-major: tile 0 x4, tile 1 x4, ...
        one = model.vision_model.encode(frames, 4, output_hidden_states=True)[1]
        steps = model.vision_model.encode(frames, 4, chunk_frames=3, output_hidden_states=True)[1]
    assert whole.shape[0] == 12
    assert (whole - chunked).abs().max().item() <= 1e-5
    assert len(one) == len(steps) == 4
    for a, b in zip(one, steps):
        assert (a - b).abs().max().item() <= 1e-5
    assert (one[-1] - one[-2]).abs().max().item() > 1e-3  # the states differ layer to layer


def test_max_clip_frames_restarts_the_clip():
    model = tiny_model(pvc=True, temporal_random=True, max_clip_frames=3)
    video = pixels(6, seed=6)
    with torch.no_grad():
        split = model.extract_feature(video, data_flag=[3])
        second = model.extract_feature(video[3:], data_flag=[3])
    assert (split[3:] - second).abs().max().item() <= 1e-6


def test_tile_repeat_way_orders_frames():
    tile_major = tiny_model(pvc=True, temporal_random=True, tile_repeat_way="tile_major")
    frame_major = tiny_model(pvc=True, temporal_random=True, tile_repeat_way="frame_major")
    pv = pixels(2, seed=7)
    with torch.no_grad():
        a = tile_major.extract_feature(pv, data_flag=[1]).view(2, 4, -1)  # [tile][frame]
        b = frame_major.extract_feature(pv, data_flag=[1]).view(4, 2, -1)  # [frame][tile]
    assert torch.equal(a.transpose(0, 1), b)


# ------------------------------------------------------------------------------------- token counts
def test_full_size_token_counts(tmp_path):
    config = PVCInternVLConfig.from_pretrained(str(ROOT))
    assert config.num_image_token == 64
    assert config.tokens_per_tile(3) == 64
    assert config.tokens_per_tile(1) == 64 * config.image_repeat_time == 256
    internvl2 = PVCInternVLConfig.from_dict({**config.to_dict(), "use_temporal": False, "downsample_ratio": 0.5, "image_repeat_time": 1})
    assert internvl2.num_image_token == 256 and internvl2.tokens_per_tile(1) == 256 and internvl2.tokens_per_tile(3) == 256
    with torch.device("meta"):  # the full-size model builds without touching data (no .item() in __init__)
        model = PVCInternVLChatModel(config)
    assert model.mlp1[1].weight.is_meta and model.mlp1[1].weight.shape == (4096, 1024 * 16)
    processor = PVCInternVLProcessor.from_model_config(make_tiny_tokenizer(tmp_path), config)
    video_prompt = "".join(f"Frame{i + 1}: <image>\n" for i in range(64)) + "What happens?"
    layout = sample_layouts(64, [3], [64], [[1] * 64])[0]
    prompt, _ = processor.chat_prompt(video_prompt, layout)
    assert prompt.count("<IMG_CONTEXT>") == 64 * 64
    layout = sample_layouts(13, [1], [13], None)[0]
    prompt, _ = processor.chat_prompt("Describe.", layout)
    assert prompt.count("<IMG_CONTEXT>") == 13 * 256


def test_visual_token_shapes_match_prompt_counts():
    model = tiny_model(pvc=True)
    with torch.no_grad():
        video = model.extract_feature(pixels(5), data_flag=[3])
        image = model.extract_feature(pixels(3), data_flag=[1])
    assert video.shape == (5, model.config.num_image_token, 64)
    assert image.shape == (3 * 4, model.config.num_image_token, 64)
    assert model.config.num_image_token == 4


# ------------------------------------------------------------------------------------------ prompts
def test_internlm2_template_string():
    prompt = get_template("internlm2-chat").render([("Q1", "A1")], "Q2", INTERNVL_SYSTEM_MESSAGE)
    assert prompt == (
        "<|im_start|>system\n" + INTERNVL_SYSTEM_MESSAGE + "<|im_end|>"
        "<|im_start|>user\nQ1<|im_end|><|im_start|>assistant\nA1<|im_end|>"
        "<|im_start|>user\nQ2<|im_end|><|im_start|>assistant\n"
    )
    phi3 = get_template("phi3-chat").render([], "Hi", "S")
    assert phi3 == "<|system|>\nS<|end|><|user|>\nHi<|end|><|assistant|>\n"
    assert get_template("Hermes-2").render([], "Hi", "S") == "<|im_start|>system\nS<|im_end|><|im_start|>user\nHi<|im_end|><|im_start|>assistant\n"


def _manual_answer(model, tokenizer, prompt, pixel_values, data_flag, num_patches_list, steps=6):
    """Greedy decoding by repeated full forward passes: an independent check of chat()."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    split = [pixel_values.shape[0]]
    new = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(
                pixel_values=pixel_values,
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                data_flag=data_flag,
                split_sizes=split,
                num_patches_list=num_patches_list,
            ).logits
            token = int(logits[0, -1].argmax())
            if token == IM_END_ID:
                break
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def _expected_prompt(question: str, counts: list[int]) -> str:
    for count in counts:
        question = question.replace("<image>", "<img>" + "<IMG_CONTEXT>" * count + "</img>", 1)
    return (
        "<|im_start|>system\n" + INTERNVL_SYSTEM_MESSAGE + "<|im_end|><|im_start|>user\n" + question
        + "<|im_end|><|im_start|>assistant\n"
    )


@pytest.mark.parametrize("flag", [1, 2, 3])
def test_chat_matches_manual_decoding(tokenizer, flag):
    model = tiny_model(pvc=True, temporal_random=True)
    per = model.config.num_image_token
    if flag == 1:
        pv, patches, question = pixels(3), [3], "describe the image"
        expected = _expected_prompt("<image>\n" + question, [3 * 4 * per])
    elif flag == 2:
        pv, patches, question = pixels(3), [2, 1], "Image-1: <image>\nImage-2: <image>\nwhat is different"
        expected = _expected_prompt(question, [2 * 4 * per, 1 * 4 * per])
    else:
        pv, patches = pixels(4), [1, 1, 1, 1]
        question = "".join(f"Frame{i + 1}: <image>\n" for i in range(4)) + "what happens"
        expected = _expected_prompt(question, [per] * 4)
    answer = model.chat(tokenizer, pv, question, dict(GEN), data_flag=torch.tensor([flag]), num_patches_list=patches)
    assert isinstance(answer, str)
    assert answer == _manual_answer(model, tokenizer, expected, pv, [flag], [patches])


def test_chat_history_and_stats(tokenizer):
    model = tiny_model(pvc=True)
    pv = pixels(2)
    answer, history, stats = model.chat(
        tokenizer, pv, "describe", dict(GEN), return_history=True, return_stats=True, data_flag=[1]
    )
    assert history == [("<image>\ndescribe", answer)]
    assert stats["visual_tokens"] == [2 * 4 * model.config.num_image_token]
    assert stats["tiles"] == [2] and stats["frames"] == [0]
    follow_up = model.chat(tokenizer, pv, "and the color", dict(GEN), history=history, data_flag=[1])
    assert isinstance(follow_up, str)


def test_batch_chat_equals_single_chats(tokenizer):
    model = tiny_model(pvc=True, temporal_random=True)
    image, video = pixels(3, seed=11), pixels(5, seed=12)
    video_question = "".join(f"Frame{i + 1}: <image>\n" for i in range(5)) + "what happens in the video"
    single_image = model.chat(tokenizer, image, "describe", dict(GEN), data_flag=[1])
    single_video = model.chat(tokenizer, video, video_question, dict(GEN), data_flag=[3], num_patches_list=[1] * 5)
    batch = model.batch_chat(
        tokenizer,
        torch.cat([image, video]),
        ["describe", video_question],
        dict(GEN),
        num_patches_list=[[3], [1] * 5],
        data_flag=torch.tensor([1, 3]),
        split_sizes=[3, 5],
    )
    assert batch == [single_image, single_video]


def test_streamer_receives_the_generated_tokens(tokenizer):
    class Collect(BaseStreamer):
        def __init__(self):
            self.tokens, self.ended = [], False

        def put(self, value):
            self.tokens.extend(value.flatten().tolist())

        def end(self):
            self.ended = True

    model = tiny_model(pvc=True)
    streamer = Collect()
    answer = model.chat(tokenizer, pixels(1), "describe", dict(GEN, streamer=streamer, min_new_tokens=6))
    assert streamer.ended
    generated = streamer.tokens[-6:]
    assert tokenizer.decode(generated, skip_special_tokens=True).split("<|im_end|>")[0].strip() == answer


def test_dynamic_rope_is_stateless():
    rope = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    model = tiny_model(pvc=False, llm=dict(max_position_embeddings=32, rope_parameters=rope))
    short = torch.randint(20, 200, (1, 20))
    long = torch.randint(20, 200, (1, 50))
    with torch.no_grad():
        before = model(input_ids=short).logits
        model(input_ids=long)
        after = model(input_ids=short).logits
    assert torch.equal(before, after)


# ------------------------------------------------------------------------------------- input checks
def test_bad_inputs_raise_value_errors(tokenizer):
    model = tiny_model(pvc=True)
    pv = pixels(3)
    with pytest.raises(ValueError, match="got 4"):
        model.extract_feature(pv, data_flag=[4])
    with pytest.raises(ValueError, match="data_flag has 2 entries but split_sizes has 1"):
        model.extract_feature(pv, data_flag=[1, 1], split_sizes=[3])
    with pytest.raises(ValueError, match="split_sizes sum to 4 but pixel_values has 3"):
        model.extract_feature(pv, data_flag=[1, 1], split_sizes=[2, 2])
    with pytest.raises(ValueError, match="num_patches_list of sample 0 sums to 2 but the sample has 3 tiles"):
        model.chat(tokenizer, pv, "Image-1: <image>\nImage-2: <image>\nq", dict(GEN), num_patches_list=[1, 1], data_flag=[2])
    with pytest.raises(ValueError, match="the sample has 3 images/frames .*, but the question has 2 <image>"):
        model.chat(tokenizer, pv, "<image> <image> q", dict(GEN), num_patches_list=[1, 1, 1], data_flag=[2])
    with pytest.raises(ValueError, match=rf"\(num_tiles, 3, {IMAGE_SIZE}, {IMAGE_SIZE}\).*\(1, 3, 56, 56\)"):
        model.chat(tokenizer, torch.zeros(1, 3, 56, 56), "q", dict(GEN))
    with pytest.raises(ValueError, match="one tile per frame"):
        model.extract_feature(pv, data_flag=[3], num_patches_list=[[2, 1]])
    ids = torch.full((1, 5), IMG_CONTEXT_ID)
    with pytest.raises(ValueError, match="5 <IMG_CONTEXT> tokens but the images give 16 visual tokens"):
        model(pixel_values=pv[:1], input_ids=ids)


def test_prompt_longer_than_the_llm_limit(tokenizer):
    model = tiny_model(pvc=False, llm=dict(max_position_embeddings=40))
    with pytest.raises(ValueError, match=r"the prompt has \d+ tokens but the language model accepts at most 40"):
        model.chat(tokenizer, pixels(2), "describe", dict(GEN))


def test_bad_config_values():
    with pytest.raises(ValueError, match="ps_version"):
        tiny_config(ps_version="v3")
    with pytest.raises(ValueError, match="downsample_ratio 0.3"):
        tiny_config(downsample_ratio=0.3)
    with pytest.raises(ValueError, match="temporal_attn_layers contains layer 5"):
        tiny_config(vision=dict(temporal_attn_layers=[5]))
    with pytest.raises(ValueError, match="select_layer 7"):
        tiny_config(select_layer=7)
    with pytest.raises(ValueError, match="InternLM2"):
        PVCInternVLConfig(llm_config={"model_type": "internlm2"})


def test_select_layer_uses_earlier_hidden_state():
    model = tiny_model(pvc=False, select_layer=-2)
    pv = pixels(1)
    with torch.no_grad():
        out = model.vision_model(pv, output_hidden_states=True)
        expected = model.model.project_frames(out.hidden_states[-2])
        got = model.extract_feature(pv)
    assert torch.allclose(got, expected, atol=1e-6)


def test_config_json_round_trip(tmp_path):
    config = PVCInternVLConfig.from_pretrained(str(ROOT))
    config.save_pretrained(tmp_path)
    again = PVCInternVLConfig.from_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModel"].endswith("PVCInternVLChatModel")
    assert again.to_dict()["vision_config"] == config.to_dict()["vision_config"]
    assert again.llm_config.num_key_value_heads == 8 and again.img_context_token_id == 92546


def test_output_embeddings_can_be_replaced_and_resized():
    model = tiny_model(pvc=True)
    vocab, hidden = model.get_output_embeddings().weight.shape
    head = torch.nn.Linear(hidden, vocab, bias=False)
    model.set_output_embeddings(head)
    assert model.get_output_embeddings() is head and model.lm_head is head
    model.resize_token_embeddings(vocab + 8)
    assert model.get_input_embeddings().weight.shape[0] == vocab + 8
    assert model.get_output_embeddings().weight.shape[0] == vocab + 8
    assert model.config.get_text_config().vocab_size == vocab + 8


def test_attention_switches_at_run_time_with_the_same_result():
    """set_attn_implementation reaches the vision encoder (spatial and temporal attention) and the language model;
    eager and SDPA give the same logits, and a switch takes effect at the next call."""
    from tests.tiny import pixels

    model = tiny_model(pvc=True, temporal_random=True).eval()
    context = model.config.img_context_token_id
    video = pixels(4)
    ids = torch.tensor([[1] + [context] * (4 * model.config.tokens_per_tile(3)) + [5, 6]])
    layout = dict(data_flag=[3], split_sizes=[4])
    _switch_attention(model, "sdpa")
    sdpa = model(input_ids=ids, pixel_values=video, **layout).logits
    _switch_attention(model, "eager")
    assert model.config.vision_config._attn_implementation == "eager"
    assert model.language_model.config._attn_implementation == "eager"
    calls = []
    import pvc_internvl.modeling_pvc_internvl as modeling

    original = modeling.eager_attention_forward
    try:
        modeling.eager_attention_forward = lambda *a, **k: calls.append(1) or original(*a, **k)
        eager = model(input_ids=ids, pixel_values=video, **layout).logits
    finally:
        modeling.eager_attention_forward = original
    assert calls, "the vision encoder did not use eager attention after the switch"
    assert torch.allclose(eager, sdpa, atol=1e-5)


def _switch_attention(model, implementation: str) -> None:
    """``set_attn_implementation`` (transformers 5 applies it to every sub-config); transformers 4.57 sets only the
    top-level config, so there the sub-configs are set directly."""
    import transformers
    from packaging import version

    model.set_attn_implementation(implementation)
    if version.parse(transformers.__version__).major < 5:
        model.config.vision_config._attn_implementation = implementation
        model.language_model.config._attn_implementation = implementation


def test_gradient_checkpointing_gives_the_same_gradients():
    """gradient_checkpointing_enable() recomputes the vision blocks and the LLM layers in the backward pass
    (each block runs twice per step) and leaves the loss and every gradient unchanged."""
    from tests.tiny import pixels

    model = tiny_model(pvc=True, temporal_random=True).train()
    context = model.config.img_context_token_id
    ids = torch.tensor([[1] + [context] * (4 * model.config.tokens_per_tile(3)) + [5, 6, 8]])
    inputs = dict(input_ids=ids, pixel_values=pixels(4), data_flag=[3], split_sizes=[4], labels=ids)
    runs = []
    block = model.vision_model.encoder.layers[0]
    block.attn.register_forward_hook(lambda *_: runs.append(1))  # a part of the block: it runs again when recomputed

    def step():
        model.zero_grad(set_to_none=True)
        runs.clear()
        loss = model(**inputs).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(runs)

    loss, grads, plain_runs = step()
    model.gradient_checkpointing_enable()
    assert block.gradient_checkpointing and model.language_model.is_gradient_checkpointing
    ckpt_loss, ckpt_grads, ckpt_runs = step()
    assert (plain_runs, ckpt_runs) == (1, 2)
    assert torch.allclose(loss, ckpt_loss)
    assert grads.keys() == ckpt_grads.keys() and any("temporal_attn" in n for n in grads)
    for name, grad in grads.items():
        assert torch.allclose(grad, ckpt_grads[name], atol=1e-6), name
