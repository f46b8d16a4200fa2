"""Tiny random configurations shared by the tests (fp32, CPU)."""

from __future__ import annotations

import torch

from pvc_internvl.configuration_pvc_internvl import PVCInternVLConfig
from pvc_internvl.modeling_pvc_internvl import PVCInternVLChatModel
from tests.tokenizer_utils import IMG_CONTEXT_ID, VOCAB_SIZE

IMAGE_SIZE = 112  # 8 x 8 patches of 14 px


def tiny_vision(**overrides) -> dict:
    vision = dict(
        image_size=IMAGE_SIZE,
        patch_size=14,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        num_hidden_layers=2,
        norm_type="layer_norm",
        qkv_bias=True,
        qk_normalization=False,
        time_embed_dim=16,
    )
    vision.update(overrides)
    return vision


def tiny_llm(**overrides) -> dict:
    llm = dict(
        model_type="llama",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        vocab_size=VOCAB_SIZE,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    llm.update(overrides)
    return llm


def tiny_config(pvc: bool = True, vision: dict | None = None, llm: dict | None = None, **overrides) -> PVCInternVLConfig:
    """PVC mode: 4 tokens per frame (downsample 0.25), image tiles repeated 4 times, temporal layers on.
    InternVL2 mode (``pvc=False``): 16 tokens per tile, no temporal modules."""
    settings = dict(
        vision_config=tiny_vision(**(vision or {})),
        llm_config=tiny_llm(**(llm or {})),
        template="internlm2-chat",
        ps_version="v2",
        dynamic_image_size=True,
        use_thumbnail=True,
        max_dynamic_patch=6,
        img_context_token_id=IMG_CONTEXT_ID,
    )
    if pvc:
        settings.update(use_temporal=True, downsample_ratio=0.25, image_repeat_time=4, video_repeat_time=1)
    else:
        settings.update(use_temporal=False, downsample_ratio=0.5, image_repeat_time=1)
    settings.update(overrides)
    return PVCInternVLConfig(**settings)


def randomize_temporal(model: PVCInternVLChatModel, seed: int = 0, std: float = 0.2) -> None:
    """Give the zero-initialised PVC parameters random non-zero values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.vision_model.named_parameters():
            if "temporal_attn" in name or "adaLN_modulation" in name or "time_embedder" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def tiny_model(pvc: bool = True, seed: int = 0, temporal_random: bool = False, **overrides) -> PVCInternVLChatModel:
    torch.manual_seed(seed)
    model = PVCInternVLChatModel(tiny_config(pvc=pvc, **overrides)).eval()
    if temporal_random:
        randomize_temporal(model, seed + 1)
    return model


def pixels(num: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(num, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
