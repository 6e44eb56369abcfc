"""SimDAPipeline as a diffusers user meets it: output types and ``export_to_video``, the call's
arguments, components, offloading, ``SimDAAdapters``, and the tools that walk a pipeline."""

import os

import numpy as np
import pytest
import torch
from diffusers.utils import export_to_video

import simda
from simda.checkpoint import SimDAAdapters, adapter_state_dict
from simda.errors import SimDAError
from simda.pipelines import SimDAPipeline
from simda.video import read_video


@pytest.fixture(scope="module")
def pipe():
    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():  # adapters away from the identity, so that they matter
        for p in pipe.unet.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    return pipe


def call(pipe, prompt="a red circle moving right", seed=0, **kwargs):
    args = dict(num_frames=3, num_inference_steps=2, generator=torch.Generator().manual_seed(seed))
    return pipe(prompt, **{**args, **kwargs}).frames


def test_output_types_follow_diffusers(pipe):
    frames = call(pipe)
    assert frames.dtype == np.float32 and frames.shape == (1, 3, 64, 64, 3)
    assert frames.min() >= 0 and frames.max() <= 1 and frames.std() > 0.01
    pt = call(pipe, output_type="pt")
    assert pt.shape == (1, 3, 3, 64, 64) and pt.dtype == torch.float32
    np.testing.assert_allclose(pt.permute(0, 1, 3, 4, 2).numpy(), frames, atol=1e-6)
    pil = call(pipe, output_type="pil")
    assert len(pil) == 1 and len(pil[0]) == 3 and pil[0][0].size == (64, 64)
    np.testing.assert_allclose(np.asarray(pil[0][1]) / 255, frames[0, 1], atol=1 / 255 + 1e-6)
    latents = call(pipe, output_type="latent")
    assert latents.shape == (1, 4, 3, 8, 8)
    (only,) = pipe(
        "a red circle moving right",
        num_frames=3,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        return_dict=False,
    )
    assert np.array_equal(only, frames)


def test_export_to_video_writes_the_frames_not_noise(tmp_path):
    """diffusers' own writer on the pipeline's output gives back the frames (it multiplies by
    255: uint8 frames would wrap around into noise). The built-in model's clips: a shape on
    black, which H.264 keeps close."""
    from simda import toyworld

    model = toyworld.load_shipped()
    model.set_progress_bar_config(disable=True)
    frames = call(model, num_frames=8, num_inference_steps=10)
    path = export_to_video(list(frames[0]), str(tmp_path / "clip.mp4"), fps=8)
    back = read_video(path).astype(np.float32)
    want = frames[0] * 255
    assert back.shape == want.shape
    error = np.abs(back - want).mean()
    # H.264 at diffusers' quality keeps it within 9 (model v2's grain at 10 steps; v1: 6);
    # wrapped uint8 frames are more than 60 away
    assert error < 15, error
    noise = np.abs(((frames[0] * 255).astype(np.uint8) * 255).astype(np.float32) - want).mean()
    assert noise > 10 * error  # what the old uint8 output gave: the check can tell


def test_videos_per_prompt_and_one_generator_per_video(pipe):
    together = call(
        pipe,
        prompt=["a red circle", "a blue square"],
        num_videos_per_prompt=2,
        generator=[torch.Generator().manual_seed(s) for s in range(4)],
        output_type="latent",
    )
    assert together.shape == (4, 4, 3, 8, 8)
    videos = [("a red circle", 0), ("a red circle", 1), ("a blue square", 2), ("a blue square", 3)]
    for i, (prompt, seed) in enumerate(videos):
        alone = call(pipe, prompt=prompt, seed=seed, output_type="latent")
        torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_prompt_embeddings_give_the_same_video(pipe):
    cond, uncond = pipe.encode_prompt("a red circle", negative_prompt="blurry")
    want = call(pipe, prompt="a red circle", negative_prompt="blurry", output_type="latent")
    got = call(
        pipe, prompt=None, prompt_embeds=cond, negative_prompt_embeds=uncond, output_type="latent"
    )
    assert torch.equal(want, got)
    assert not torch.equal(want, call(pipe, prompt="a red circle", output_type="latent"))


def test_callback_on_step_end_sees_and_changes_the_latents(pipe):
    seen = []

    def callback(p, i, t, tensors):
        seen.append((i, int(t), sorted(tensors)))
        return {"latents": tensors["latents"] * 0}

    zeroed = call(
        pipe,
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
        output_type="latent",
    )
    assert [s[0] for s in seen] == [0, 1] and seen[0][2] == ["latents", "prompt_embeds"]
    assert [s[1] for s in seen] == pipe.scheduler.timesteps.tolist()
    assert torch.count_nonzero(zeroed) == 0

    steps = []

    def stop(p, i, t, tensors):
        steps.append(i)
        p._interrupt = True
        return {}

    pipe("x", num_frames=1, num_inference_steps=5, callback_on_step_end=stop, output_type="latent")
    assert steps == [0]  # it stopped after the first of 5 steps

    pipe.set_progress_bar_config(disable=True)
    after = []  # the next denoising loop starts afresh: all of its steps run
    call(pipe, callback_on_step_end=lambda p, i, t, k: after.append(i) or {})
    assert after == [0, 1]
    assert not pipe.interrupt


def test_diffusers_callback_objects_work(pipe):
    """``SDCFGCutoffCallback`` names the tensors it needs and turns guidance off mid-way."""
    from diffusers.callbacks import SDCFGCutoffCallback

    guidance = []
    predict = pipe.predict_noise

    def spy(latents, t, cond, uncond=None, *args, **kwargs):
        guidance.append(uncond is not None)
        return predict(latents, t, cond, uncond, *args, **kwargs)

    pipe.predict_noise = spy
    try:
        cutoff = SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=1)
        call(pipe, num_inference_steps=4, callback_on_step_end=cutoff, guidance_scale=5.0)
    finally:
        del pipe.predict_noise
    assert guidance == [True, True, False, False]


def test_decode_chunk_size_and_vae_slicing_change_nothing(pipe):
    want = call(pipe, num_frames=4)
    np.testing.assert_allclose(call(pipe, num_frames=4, decode_chunk_size=1), want, atol=1e-5)
    pipe.enable_vae_slicing()
    pipe.enable_vae_tiling()
    try:
        np.testing.assert_allclose(call(pipe, num_frames=4), want, atol=1e-5)
    finally:
        pipe.disable_vae_slicing()
        pipe.disable_vae_tiling()


def test_components_and_dtype(pipe):
    assert set(pipe.components) == {"vae", "text_encoder", "tokenizer", "unet", "scheduler"}
    again = SimDAPipeline(**pipe.components)
    assert again.unet is pipe.unet
    half = SimDAPipeline.from_preset("tiny", seed=0).to(torch.bfloat16)
    assert {half.unet.dtype, half.text_encoder.dtype, half.vae.dtype} == {torch.bfloat16}
    half.set_progress_bar_config(disable=True)
    assert call(half).dtype == np.float32


def test_model_cpu_offload_installs_and_samples_the_same(pipe):
    """``enable_model_cpu_offload`` as in diffusers, here onto the CPU itself (the hooks and the
    execution device; moving to a GPU is the GPU test's)."""
    offloaded = SimDAPipeline.from_preset("tiny", seed=0)
    offloaded.set_progress_bar_config(disable=True)
    want = call(offloaded, output_type="latent")
    offloaded.enable_model_cpu_offload(device="cpu")
    assert offloaded._execution_device.type == "cpu"
    torch.testing.assert_close(call(offloaded, output_type="latent"), want)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_model_cpu_offload_moves_each_model_to_the_gpu_when_it_runs():
    offloaded = SimDAPipeline.from_preset("tiny", seed=0)
    offloaded.set_progress_bar_config(disable=True)
    want = call(offloaded.to("cuda"), output_type="latent").cpu()
    offloaded.to("cpu").enable_model_cpu_offload()
    assert offloaded._execution_device.type == "cuda" and offloaded.unet.device.type == "cpu"
    torch.testing.assert_close(call(offloaded, output_type="latent").cpu(), want)


def test_a_super_resolution_model_is_sampled_with_upscale(pipe):
    from simda.pipelines import make_superres

    model = make_superres(SimDAPipeline.from_preset("tiny"), 2)
    with pytest.raises(SimDAError, match="super-resolution model .*upscale"):
        call(model)


def test_defaults_come_from_the_model_then_diffusers(pipe):
    assert pipe.sampling_defaults == {
        "num_frames": 16,
        "num_inference_steps": 50,
        "guidance_scale": 7.5,
        "height": 64,
        "width": 64,
    }
    toy = SimDAPipeline.from_preset("tiny")
    toy.register_to_config(sampling={"num_frames": 2, "num_inference_steps": 1, "height": 16})
    toy.set_progress_bar_config(disable=True)
    assert toy("x").frames.shape == (1, 2, 16, 64, 3)


def test_simda_adapters_round_trip_and_size(pipe, tmp_path):
    adapters = SimDAAdapters.from_unet(pipe.unet)
    assert (
        sum(p.numel() for p in adapters.parameters()) == simda.count_parameters(pipe)["trainable"]
    )
    adapters.save_pretrained(str(tmp_path / "adapters"))
    assert sorted(os.listdir(tmp_path / "adapters")) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    fresh = SimDAPipeline.from_preset("tiny", seed=1)
    fresh.load_adapters(str(tmp_path / "adapters"))
    got, want = adapter_state_dict(fresh.unet), adapter_state_dict(pipe.unet)
    assert all(torch.equal(got[k], want[k]) for k in want)
    loaded = SimDAAdapters.from_pretrained(str(tmp_path / "adapters"))
    assert loaded.config.temporal_act == "gelu" and loaded.config.lsa_layout == "paper"
    assert set(loaded.state_dict()) == {k.removeprefix("unet.") for k in want}
    other = simda.build_unet("tiny", block_out_channels=(32, 32, 64, 64))
    with pytest.raises(SimDAError, match="do not fit this model"):
        loaded.load_into(other)
    with pytest.raises(SimDAError, match="without config.json"):
        fresh.load_adapters(str(tmp_path))


def test_simda_adapters_are_about_50_mb_in_fp16_at_sd15_size():
    from simda.checkpoint import _spec

    unet = simda.build_unet("sd15", device="meta")  # shapes only: count, nothing allocated
    modules = {k.removeprefix("unet."): _spec(m) for k, m in unet.adapter_modules().items()}
    with torch.device("meta"):
        adapters = SimDAAdapters(modules)
    count = sum(p.numel() for p in adapters.parameters())
    assert count == 24_855_680  # SPEC: the released SimDA's tuned parameters
    assert 49e6 < 2 * count < 51e6


def test_a_replaced_attention_processor_is_an_error_not_a_silent_image_model(pipe):
    from diffusers.models.attention_processor import AttnProcessor2_0

    model = SimDAPipeline.from_preset("tiny", seed=0)
    model.set_progress_bar_config(disable=True)
    model.unet.set_attn_processor(AttnProcessor2_0())
    with pytest.raises(SimDAError, match="not latent-shift attention .*set_lsa_layout"):
        call(model)
    model.unet.set_lsa_layout("paper")
    assert call(model).shape == (1, 3, 64, 64, 3)


def test_tomesd_is_refused_with_the_reason(pipe):
    tomesd = pytest.importorskip("tomesd")
    model = SimDAPipeline.from_preset("tiny", seed=0)
    model.set_progress_bar_config(disable=True)
    tomesd.apply_patch(model, ratio=0.5)
    with pytest.raises(SimDAError, match="tomesd's token merging .* latent-shift attention"):
        call(model)
    tomesd.remove_patch(model)
    assert call(model).shape == (1, 3, 64, 64, 3)


def test_deepcache_runs_on_a_simda_pipeline(pipe):
    """DeepCache reuses the deep features of the UNet on most steps: it walks the UNet's
    blocks and wraps its forward, both found on the SimDA UNet. With caching every step it
    computes everything and changes nothing; every third step it skips the deep blocks."""
    deepcache = pytest.importorskip("DeepCache")
    model = SimDAPipeline.from_preset("tiny", seed=0)
    model.set_progress_bar_config(disable=True)
    want = call(model, num_inference_steps=6, output_type="latent")
    calls = []  # the mid block's own layers run only when it computes (DeepCache wraps it)
    model.unet.mid_block.resnets[0].register_forward_hook(lambda *a: calls.append(1))
    helper = deepcache.DeepCacheSDHelper(pipe=model)
    helper.set_params(cache_interval=1, cache_branch_id=0)
    helper.enable()
    try:
        torch.testing.assert_close(call(model, num_inference_steps=6, output_type="latent"), want)
        assert len(calls) == 6
        helper.disable()
        helper.set_params(cache_interval=3, cache_branch_id=0)
        helper.enable()
        calls.clear()
        cached = call(model, num_inference_steps=6, output_type="latent")
    finally:
        helper.disable()
    assert len(calls) == 2  # the mid block ran on steps 0 and 3 only
    assert cached.shape == want.shape and not torch.equal(cached, want)
    assert torch.corrcoef(torch.stack([cached.flatten(), want.flatten()]))[0, 1] > 0.5


def test_from_pretrained_takes_diffusers_arguments_and_the_built_in_model_loads_the_same_way(
    tmp_path,
):
    import diffusers

    from simda import toyworld
    from simda.pipelines.t2v import dtype_argument

    toy = diffusers.DiffusionPipeline.from_pretrained(toyworld.SHIPPED)
    assert type(toy) is SimDAPipeline and toy.config.sampling["num_frames"] == 8
    SimDAPipeline.from_preset("tiny").save_pretrained(str(tmp_path / "m"))
    half = SimDAPipeline.from_pretrained(str(tmp_path / "m"), **dtype_argument(torch.bfloat16))
    assert {half.unet.dtype, half.text_encoder.dtype, half.vae.dtype} == {torch.bfloat16}
    legacy = SimDAPipeline.from_pretrained(str(tmp_path / "m"), torch_dtype=torch.bfloat16)
    assert legacy.unet.dtype == torch.bfloat16  # diffusers' (deprecated there) name works too
