"""gligen end to end on the CPU with a tiny random GLIGEN pipeline: shapes, seeds, boxes by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feedback.synthesis.clusters import attributes_of
from feedback.synthesis.diffusion.diffusers_common import GpuRequired, load_pipeline
from feedback.synthesis.diffusion.gligen import GligenGenerator, cluster_stats, draw_layout, object_count
from feedback.synthesis.port import Generator, SynthesisRequest, SyntheticImage
from store.settings import Settings
from tests.feedback.synthesis.tiny_models import gligen_pipe

CLASSES = ("helmet", "no_helmet", "person")


class Recorder:
    """The pipeline as it is, remembering what each call grounded."""

    def __init__(self, pipe) -> None:  # noqa: ANN001
        self.pipe, self.calls = pipe, []

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):  # noqa: ANN003, ANN204
        self.calls.append(kwargs)
        return self.pipe(**kwargs)


@pytest.fixture(scope="module")
def pipe():  # noqa: ANN201
    return gligen_pipe()


def generator(pipe, **kw) -> GligenGenerator:  # noqa: ANN001
    return GligenGenerator(pipe, CLASSES, {"no_helmet": ["bare head"]}, batch_size=2, steps=2, guidance_scale=1.0, **kw)


def test_images_boxes_and_lineage(pipe) -> None:  # noqa: ANN001
    recorder = Recorder(pipe)
    gen = generator(recorder)
    assert isinstance(gen, Generator)
    request = SynthesisRequest(
        target_class=1,
        count=3,
        seed=5,
        cluster_id="c1",
        prompt="a building site",
        attributes={"rel_size": 0.3, "count": 2},
    )
    out = list(gen.generate(request, []))

    assert len(out) == 3 and all(isinstance(o, SyntheticImage) for o in out)
    assert [len(c["generator"]) for c in recorder.calls] == [2, 1]  # batches of 2, then the rest
    for o in out:
        assert o.image.shape == (32, 32, 3) and o.image.dtype == np.uint8
        assert o.class_ids.tolist() == [1, 1]
        assert o.lineage["phrases"] == ["bare head", "bare head"] and o.lineage["prompt"] == "a building site"
    assert [o.lineage["seed"] for o in out] == [5, 6, 7]
    # Boxes by construction: the label is exactly the box the pipeline grounded the phrase in.
    for o in out:
        call = recorder.calls[o.lineage["batch"]]
        assert call["gligen_phrases"] == ["bare head", "bare head"]
        np.testing.assert_allclose(o.boxes, np.asarray(call["gligen_boxes"]) * 32)
        assert (o.boxes >= 0).all() and (o.boxes <= 32).all()
        assert (o.boxes[:, 2:] > o.boxes[:, :2]).all()


def test_deterministic_by_seed(pipe) -> None:  # noqa: ANN001
    request = SynthesisRequest(target_class=1, count=2, seed=3)
    first = [o.image for o in generator(pipe).generate(request, [])]
    again = [o.image for o in generator(pipe).generate(request, [])]
    other = [o.image for o in generator(pipe).generate(SynthesisRequest(target_class=1, count=2, seed=4), [])]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[1])  # each image has its own seed


def test_layout_follows_the_cluster() -> None:
    # Mining's description format: medians and binned words.
    stats = cluster_stats(
        {
            "medians": {"rel_size": 0.1, "aspect": 0.5, "neighbours": 2.0},
            "bins": {"position": {"value": "centre", "share": 0.8, "fixed": True}},
        }
    )
    assert object_count(stats, max_objects=4) == 3
    boxes = draw_layout(stats | {"rel_size_spread": 0.01}, np.random.default_rng(0), 3)
    assert len(boxes) == 3
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    np.testing.assert_allclose(np.sqrt(w * h), 0.1, rtol=0.05)
    np.testing.assert_allclose(w / h, 0.5, rtol=1e-6)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert (np.abs(centres - 0.5) <= 0.175 + 1e-9).all()
    assert object_count({"count": 9}, max_objects=4) == 4
    # As synthesis hands a cluster over: the description rides under "description".
    description = {"medians": {"rel_size": 0.1, "aspect": 0.5, "neighbours": 2.0},
                   "bins": {"position": {"value": "centre", "share": 0.8, "fixed": True}}}
    handed = cluster_stats(attributes_of(description))
    assert {k: handed[k] for k in ("rel_size", "aspect", "neighbours", "position")} == {
        "rel_size": 0.1, "aspect": 0.5, "neighbours": 2.0, "position": "centre"}


def test_refuses_the_cpu_unless_allowed(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GpuRequired, match="needs a GPU; use swap/paste or a cloud one"):
        load_pipeline("StableDiffusionGLIGENPipeline", tmp_path / "nowhere", allow_cpu=False)


def test_loads_saved_weights_from_settings(pipe, tmp_path) -> None:  # noqa: ANN001
    pipe.save_pretrained(tmp_path / "gligen")
    settings = Settings(
        workspace=tmp_path / "ws",
        gligen_model=str(tmp_path / "gligen"),
        diffusion_allow_cpu=True,
        diffusion_steps=2,
        diffusion_batch_size=1,
    )
    loaded = GligenGenerator.from_settings(settings, CLASSES)
    loaded.guidance_scale = 1.0
    request = SynthesisRequest(target_class=0, count=1, seed=1)
    [a] = loaded.generate(request, [])
    [b] = generator(pipe).generate(request, [])
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.lineage["model"] == str(tmp_path / "gligen") and b.lineage["model"] is None


@pytest.mark.gpu
def test_full_size_gligen_on_a_gpu_reports_images_per_second(record_property: pytest.RecordProperty) -> None:
    """Stable Diffusion 1.4's shapes with random weights, fp16, 512 px, batches of 4: the speed a site can expect."""
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU: CUDA reports none")
    import json
    import time

    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionGLIGENPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.feedback.synthesis.tiny_models import clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_type="gated")  # SD 1.x defaults
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], latent_channels=4, sample_size=512,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
    tokenizer = clip_tokenizer()
    tokenizer.model_max_length = 77
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionGLIGENPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer,
                                         scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                         requires_safety_checker=False).to("cuda", torch.float16)
    pipe.set_progress_bar_config(disable=True)
    gen = GligenGenerator(pipe, CLASSES, batch_size=4, steps=20)
    request = SynthesisRequest(target_class=1, count=4, seed=0, attributes={"count": 2})
    list(gen.generate(request, []))  # warm-up: kernels, cuDNN autotuning
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = list(gen.generate(SynthesisRequest(target_class=1, count=8, seed=1, attributes={"count": 2}), []))
    torch.cuda.synchronize()
    rate = len(out) / (time.perf_counter() - start)
    assert len(out) == 8 and all(o.image.shape == (512, 512, 3) for o in out)
    record_property("gligen_images_per_s", rate)
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "generator": "gligen", "size": 512, "steps": 20,
                      "batch": 4, "dtype": "float16", "images_per_s": round(rate, 3)}))
