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


def _sd_parts(in_channels: int, attention_type: str = "default", sample_size: int = 16) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        norm_num_groups=8,
        attention_head_dim=8,
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_type=attention_type,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[16, 32],
        norm_num_groups=8,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
        steps_offset=1,
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


def gligen_pipe(sample_size: int = 16):  # noqa: ANN201
    """GLIGEN making images of twice `sample_size` pixels by default (the VAE halves once)."""
    from diffusers import StableDiffusionGLIGENPipeline

    pipe = StableDiffusionGLIGENPipeline(**_sd_parts(4, attention_type="gated", sample_size=sample_size))
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
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    letters = [*chars, *(f"##{c}" for c in chars)]
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


def qwen_tokenizer():  # noqa: ANN201
    """Byte-level BPE without merges (one token per byte), then Qwen's chat and vision markers."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab = {ch: i for i, ch in enumerate(BYTES)}
    vocab |= {t: len(BYTES) + i for i, t in enumerate(QWEN_SPECIAL)}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=1024)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL], special_tokens=True)
    return tokenizer


def _qwen_parts() -> dict:
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                              attention_head_dim=16, num_attention_heads=3, joint_attention_dim=16,
                                              guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    torch.manual_seed(0)
    # Five halvings (pixels per latent 32): the edit pipeline encodes its input at about 1024x1024 whatever the
    # output size, so a shallower VAE would hand the transformer thousands of tokens.
    vae = AutoencoderKLQwenImage(base_dim=4, z_dim=4, dim_mult=[1] * 6, num_res_blocks=1,
                                 temperal_downsample=[False, True, True, True, True], latents_mean=[0.0] * 4,
                                 latents_std=[1.0] * 4)
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": len(tokenizer), "rope_theta": 1000000.0,
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16, vocab_size=len(tokenizer), image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    return {"transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(),
            "text_encoder": text_encoder, "tokenizer": tokenizer}


def qwen_image_pipe():  # noqa: ANN201
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline(**_qwen_parts())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def qwen_image_edit_pipe():  # noqa: ANN201
    """Qwen-Image-Edit; its processor's image side sees at most 56x56 pixels (one 2x2 group of patches)."""
    from diffusers import QwenImageEditPipeline
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    parts = _qwen_parts()
    images = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56)
    parts["processor"] = Qwen2VLProcessor(image_processor=images, tokenizer=parts["tokenizer"],
                                          video_processor=Qwen2VLVideoProcessor())
    pipe = QwenImageEditPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe
