"""The headless base model and the head: ``PVCInternVLChatModel`` = ``PVCInternVLModel`` (``model``) + ``lm_head``, as
transformers' InternVL; checkpoints keep the official InternVL2 / PVC names on load and on save."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from pvc_internvl.modeling_pvc_internvl import (
    CHECKPOINT_RENAMES,
    SCOPED_RENAMES,
    PVCInternVLChatModel,
    PVCInternVLModel,
    _TRANSFORMERS_5,
    checkpoint_name,
)
from tests.tiny import pixels, tiny_model

OFFICIAL_PREFIXES = ("vision_model.", "mlp1.", "language_model.model.", "language_model.lm_head.")


def _saved_names(folder) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        return set(weights.keys())


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    theirs = b.state_dict()
    return all(torch.equal(tensor, theirs[name]) for name, tensor in a.state_dict().items())


def test_the_chat_model_is_a_base_model_and_a_head():
    model = tiny_model()
    assert isinstance(model.model, PVCInternVLModel) and model.base_model is (model.model if _TRANSFORMERS_5 else model)
    assert model.get_output_embeddings() is model.lm_head and not hasattr(model.model, "lm_head")
    assert model.get_decoder() is model.language_model is model.model.language_model
    assert type(model.language_model).__name__ == "LlamaModel"  # headless, from AutoModel.from_config
    assert model.vision_model is model.model.vision_model and model.mlp1 is model.model.mlp1
    names = {name.split(".")[0] for name in model.state_dict()}
    assert names == {"model", "lm_head"}


def test_base_forward_gives_the_hidden_states_the_head_reads():
    model = tiny_model(temporal_random=True).eval()
    pixel_values = pixels(2)
    slots = 2 * model.config.tokens_per_tile(1)  # two image tiles
    ids = torch.tensor([[1] + [model.config.img_context_token_id] * slots + [15, 16, 17]])
    layout = dict(data_flag=[1], split_sizes=[2], num_patches_list=[2])
    with torch.no_grad():
        hidden = model.model(input_ids=ids, pixel_values=pixel_values, **layout).last_hidden_state
        out = model(input_ids=ids, pixel_values=pixel_values, **layout)
        last = model(input_ids=ids, pixel_values=pixel_values, logits_to_keep=1, **layout).logits
    assert hidden.shape == (1, ids.shape[1], model.config.llm_config.hidden_size)
    assert torch.allclose(out.logits, model.lm_head(hidden), atol=1e-6)
    assert torch.allclose(last, out.logits[:, -1:], atol=1e-6)
    # inputs_embeds without input_ids: the slots are found from the image-context embedding
    with torch.no_grad():
        embedded = model(inputs_embeds=model.get_input_embeddings()(ids), pixel_values=pixel_values, **layout).logits
    assert torch.allclose(embedded, out.logits, atol=1e-6)
    # the visual tokens reached the decoder: other images give other hidden states
    with torch.no_grad():
        other = model.model(input_ids=ids, pixel_values=pixels(2, seed=5), **layout).last_hidden_state
    assert not torch.allclose(hidden, other)


def test_labels_give_the_shifted_next_token_loss():
    model = tiny_model().eval()
    ids = torch.tensor([[1, 5, 9, 11, 4]])
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[0, :-1], ids[0, 1:])
    assert torch.allclose(out.loss, expected, atol=1e-6)


@pytest.mark.parametrize("tied", [False, True])
def test_saved_checkpoints_keep_the_official_names_and_reload(tmp_path, tied):
    model = tiny_model(llm={"tie_word_embeddings": tied})
    model.save_pretrained(tmp_path)
    saved = _saved_names(tmp_path)
    assert saved and all(name.startswith(OFFICIAL_PREFIXES) for name in saved), sorted(saved)[:5]
    expected = {checkpoint_name(name) for name in model.state_dict()} - ({"language_model.lm_head.weight"} if tied else set())
    assert saved == expected
    again = PVCInternVLChatModel.from_pretrained(tmp_path)
    assert _same_weights(model, again)
    assert (again.lm_head.weight is again.get_input_embeddings().weight) == tied


def test_checkpoint_name_maps_every_in_memory_name():
    assert checkpoint_name("model.language_model.layers.0.mlp.up_proj.weight") == "language_model.model.layers.0.mlp.up_proj.weight"
    assert checkpoint_name("lm_head.weight") == "language_model.lm_head.weight"
    assert checkpoint_name("model.vision_model.embeddings.class_embedding") == "vision_model.embeddings.class_embedding"
    assert checkpoint_name("model.mlp1.3.bias") == "mlp1.3.bias"
    assert checkpoint_name("language_model.layers.0.mlp.up_proj.weight",
                           PVCInternVLModel._checkpoint_conversion_mapping) == "language_model.model.layers.0.mlp.up_proj.weight"
    assert list(CHECKPOINT_RENAMES)[0] == "^language_model.lm_head"  # before the decoder's rule (4.x: first match wins)
    assert set(SCOPED_RENAMES) == {PVCInternVLChatModel.__name__, PVCInternVLModel.__name__}  # registered by name


def test_a_fresh_base_model_saves_the_official_names(tmp_path):
    model = tiny_model()
    PVCInternVLModel(model.config).save_pretrained(tmp_path)
    assert _saved_names(tmp_path) == {checkpoint_name(name) for name in model.state_dict()} - {"language_model.lm_head.weight"}


def test_the_base_model_loads_official_checkpoints_and_the_head_loads_base_ones(tmp_path):
    model = tiny_model(temporal_random=True)
    model.save_pretrained(tmp_path / "official")
    base = PVCInternVLModel.from_pretrained(tmp_path / "official")
    assert _same_weights(model.model, base)
    base.save_pretrained(tmp_path / "base")
    assert _saved_names(tmp_path / "base") == _saved_names(tmp_path / "official") - {"language_model.lm_head.weight"}
    head, info = PVCInternVLChatModel.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["lm_head.weight"]  # the base checkpoint has no head
    assert _same_weights(model.model, head.model)
    with pytest.raises(ValueError, match=r"lacks 1 weights of the model: language_model\.lm_head\.weight"):
        PVCInternVLChatModel.from_pretrained(tmp_path / "base")
