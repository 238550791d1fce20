"""Tiny randomly initialised diffusers pipelines and open-vocabulary models for the local generators' tests.

Every part is built here from a small config and a byte-level vocabulary: nothing is read from a hub.
"""

from __future__ import annotations

import torch
from tokenizers.pre_tokenizers import ByteLevel

BYTES = sorted(ByteLevel.alphabet())  # one token per byte: any text tokenizes without merges
QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def clip_tokenizer():  # noqa: ANN201
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in BYTES:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32)


def clip_text_encoder(vocab_size: int):  # noqa: ANN201
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    return CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=vocab_size,
            max_position_embeddings=32,
        )
    )


def _sd_parts(in_channels: int, attention_type: str = "default") -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_type=attention_type,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
    )
    tokenizer = clip_tokenizer()
    return {
        "unet": unet,
        "vae": vae,
        "scheduler": scheduler,
        "tokenizer": tokenizer,
        "text_encoder": clip_text_encoder(len(tokenizer)),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def gligen_pipe():  # noqa: ANN201
    """GLIGEN at 32x32 pixels (latents 16x16: the VAE halves once)."""
    from diffusers import StableDiffusionGLIGENPipeline

    pipe = StableDiffusionGLIGENPipeline(**_sd_parts(4, attention_type="gated"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inpaint_pipe():  # noqa: ANN201
    """Stable Diffusion inpainting: the UNet reads latents, mask and masked-image latents (4 + 1 + 4 channels)."""
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline(**_sd_parts(9))
    pipe.set_progress_bar_config(disable=True)
    return pipe
