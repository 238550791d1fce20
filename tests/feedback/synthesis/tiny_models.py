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


def bert_tokenizer():  # noqa: ANN201
    """A WordPiece vocabulary of letters, with GroundingDINO's separators where its model expects them.

    GroundingDINO finds phrase boundaries by token id: [CLS] 101, [SEP] 102, "." 1012, "?" 1029 (BERT's ids).
    """
    from transformers import BertTokenizer

    fixed = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
    letters = [c for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    ids = iter(i for i in range(1100) if i not in fixed.values())
    vocab = dict(fixed)
    for token in letters:
        vocab[token] = next(ids)
    for i in ids:
        vocab[f"[unused{i}]"] = i
    return BertTokenizer(vocab=dict(sorted(vocab.items(), key=lambda kv: kv[1])), model_max_length=64)


def grounding_dino():  # noqa: ANN201
    """(model, processor): a two-layer GroundingDINO with a tiny Swin and BERT, images at most 64 px."""
    from transformers import (
        GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor,
        SwinConfig,
    )

    tokenizer = bert_tokenizer()
    swin = SwinConfig(window_size=7, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], image_size=64,
                      out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4])
    text = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8,
            "max_position_embeddings": 64, "model_type": "bert", "vocab_size": len(tokenizer)}
    config = GroundingDinoConfig(d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                                 decoder_attention_heads=2, encoder_ffn_dim=8, decoder_ffn_dim=8, num_queries=12,
                                 num_feature_levels=3, encoder_n_points=2, decoder_n_points=2, use_timm_backbone=False,
                                 backbone_config=swin, max_text_len=64, text_config=text)
    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(config).eval()
    images = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})
    return model, GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer)


def sam():  # noqa: ANN201
    """(model, processor): SAM with a two-layer ViT on 32 px inputs."""
    from transformers import (
        SamConfig, SamImageProcessor, SamMaskDecoderConfig, SamModel, SamProcessor, SamPromptEncoderConfig,
        SamVisionConfig,
    )

    vision = SamVisionConfig(image_size=32, patch_size=2, hidden_size=16, projection_dim=16, output_channels=16,
                             num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, window_size=4,
                             global_attn_indexes=[1], num_pos_feats=8)
    prompt = SamPromptEncoderConfig(image_size=32, patch_size=2, hidden_size=16, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2,
                                   iou_head_hidden_dim=16)
    torch.manual_seed(0)
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)).eval()
    images = SamImageProcessor(size={"longest_edge": 32}, pad_size={"height": 32, "width": 32})
    return model, SamProcessor(image_processor=images)
