"""Pipelines end to end on the tiny model: text-to-video, saving and loading, editing,
super-resolution, adapter files."""

import os
import warnings

import numpy as np
import pytest
import torch

import simda
from simda import toyworld
from simda.errors import SimDAError
from simda.pipelines import SimDAPipeline, edit_video, make_superres, tune, upscale
from simda.pipelines.editing import inverted_latents


@pytest.fixture(scope="module")
def pipe():
    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def clip(frames=4, size=64, seed=0):
    return toyworld.sample(seed, frames=frames, size=size)[0]


def perturb_adapters(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adapter" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_text_to_video_shapes_and_determinism(pipe):
    kwargs = dict(num_frames=3, num_inference_steps=2)
    out = pipe("a red circle moving right", generator=torch.Generator().manual_seed(0), **kwargs)
    assert out.frames.shape == (1, 3, 64, 64, 3) and out.frames.dtype == np.float32
    assert 0 <= out.frames.min() and out.frames.max() <= 1
    latents = pipe(
        "a red circle moving right",
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        **kwargs,
    ).frames
    assert latents.shape == (1, 4, 3, 8, 8)
    again = pipe("a red circle moving right", generator=torch.Generator().manual_seed(0), **kwargs)
    assert np.array_equal(out.frames, again.frames)


def test_size_must_fit_the_vae(pipe):
    with pytest.raises(SimDAError, match="multiples of 8 pixels"):
        pipe("x", num_frames=2, height=60, width=64, num_inference_steps=1)
    with pytest.raises(SimDAError, match="multiples of 8 pixels"):  # 0 is not "the default"
        pipe("x", num_frames=2, height=0, num_inference_steps=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"prompt": []}, "non-empty list of strings"),
        ({"negative_prompt": 3}, "negative_prompt must be None, a string or a list of 1"),
        ({"negative_prompt": ["a", "b"]}, "a list of 1 strings"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
        ({"num_inference_steps": 0}, "num_inference_steps must be an int in 1..1000"),
        ({"num_inference_steps": 2.0}, "num_inference_steps must be an int"),
        ({"latents": torch.randn(1, 4, 2, 4, 4)}, "latents must be a tensor of shape"),
        ({"latents": torch.randn(2, 4, 2, 8, 8)}, "for 1 video"),
        ({"num_videos_per_prompt": 0}, "num_videos_per_prompt must be an int >= 1"),
        ({"eta": -1.0}, "eta must be a finite number >= 0"),
        ({"output_type": "uint8"}, "output_type must be one of"),
        ({"generator": [torch.Generator()] * 2}, "a list of 1 .one per video."),
        ({"decode_chunk_size": 0}, "decode_chunk_size must be an int >= 1"),
        ({"callback_on_step_end": 3}, "callback_on_step_end must be callable"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, "must be among"),
        ({"prompt_embeds": torch.randn(1, 16, 32)}, "exactly one of prompt and prompt_embeds"),
        ({"cross_attention_kwargs": 1}, "cross_attention_kwargs must be a dict"),
    ],
)
def test_sampling_arguments_are_checked_before_sampling(pipe, kwargs, match, monkeypatch):
    args = {"prompt": "x", "num_frames": 2, "num_inference_steps": 1}
    monkeypatch.setattr(pipe, "embed_prompts", lambda *a: pytest.fail("work began"))
    with pytest.raises(SimDAError, match=match):
        pipe(**{**args, **kwargs})


def test_inversion_steps_are_checked(pipe):
    with pytest.raises(SimDAError, match="num_inference_steps must be an int in 1..1000"):
        pipe.invert(torch.randn(1, 4, 2, 8, 8), 0)


def test_video_round_trip_through_the_vae(pipe):
    frames = clip()
    latents = pipe.encode_video(frames, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (1, 4, 4, 8, 8)
    decoded = pipe.decode_latents(latents, decode_chunk_size=3)
    assert decoded.shape == (1, 3, *frames.shape[:3]) and decoded.dtype == torch.float32
    torch.testing.assert_close(decoded, pipe.decode_latents(latents))  # chunks change nothing


def test_save_and_load_pipeline(tmp_path, pipe):
    perturb_adapters(pipe.unet)
    pipe.save_pretrained(str(tmp_path / "model"))
    loaded = SimDAPipeline.from_pretrained(str(tmp_path / "model"))
    loaded.set_progress_bar_config(disable=True)
    kwargs = dict(num_frames=2, num_inference_steps=2, output_type="latent")
    a = pipe("a blue square moving up", generator=torch.Generator().manual_seed(1), **kwargs)
    b = loaded("a blue square moving up", generator=torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(a.frames, b.frames)
    assert all(
        f.endswith((".json", ".safetensors")) for _, _, files in os.walk(tmp_path) for f in files
    )


def test_adapter_files_round_trip(tmp_path):
    model = simda.build_unet("tiny")
    perturb_adapters(model)
    path = str(tmp_path / "adapters.safetensors")
    assert simda.save_adapters(model, path) == simda.count_parameters(model)["trainable"]
    fresh = simda.build_unet("tiny")
    simda.load_adapters(fresh, path)
    for (name, a), b in zip(model.named_parameters(), fresh.parameters(), strict=True):
        if "adapter" in name:
            assert torch.equal(a, b), name
    half = str(tmp_path / "half.safetensors")
    simda.save_adapters(model, half, dtype=torch.float16)
    assert os.path.getsize(half) < os.path.getsize(path) * 0.6
    umask = os.umask(0o022)
    try:
        simda.save_adapters(model, path)  # overwrite: permissions follow the umask, like open()
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_adapter_file_that_does_not_fit(tmp_path):
    path = str(tmp_path / "a.safetensors")
    simda.save_adapters(simda.build_unet("tiny"), path)
    other = simda.build_unet("tiny", block_out_channels=(32, 32, 64, 64))
    with pytest.raises(SimDAError, match="do not fit this model: .*shape mismatches"):
        simda.load_adapters(other, path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SimDAError, match="not a readable safetensors file"):
        simda.load_adapters(other, str(tmp_path / "junk.safetensors"))
    with pytest.raises(SimDAError, match="does not exist"):
        simda.load_adapters(other, str(tmp_path / "missing.safetensors"))


def test_adapter_files_refuse_integer_weights_and_folders(tmp_path):
    from simda.checkpoint import FORMAT, adapter_state_dict, atomic_save

    model = simda.build_unet("tiny")
    with pytest.raises(SimDAError, match="dtype must be a torch floating dtype"):
        simda.save_adapters(model, str(tmp_path / "a.safetensors"), dtype=torch.int8)
    with pytest.raises(SimDAError, match="is a folder"):
        simda.save_adapters(model, str(tmp_path))
    with pytest.raises(SimDAError, match="name the file .safetensors, not"):
        simda.save_adapters(model, str(tmp_path / "adapters.bin"))
    assert os.listdir(tmp_path) == []  # no stray temporary file either
    rounded = {k: v.round().to(torch.int8) for k, v in adapter_state_dict(model).items()}
    atomic_save(rounded, str(tmp_path / "int.safetensors"), {"format": FORMAT})
    with pytest.raises(SimDAError, match="hold non-float weights"):
        simda.load_adapters(model, str(tmp_path / "int.safetensors"))


def test_pickled_checkpoints_are_named_and_never_loaded(tmp_path, monkeypatch):
    import pickle

    model = simda.build_unet("tiny")
    state = simda.checkpoint.adapter_state_dict(model)
    zipped, legacy = str(tmp_path / "a.ckpt"), str(tmp_path / "b.bin")
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled"))
    for path in (zipped, legacy):
        with pytest.raises(SimDAError, match="is a pickled PyTorch checkpoint .* not safetensors"):
            simda.load_adapters(model, path)
    # safetensors files whose header length begins like a pickle (0x280 = b"\x80\x02") or a
    # zip (0x4b50 = b"PK") are still safetensors
    from safetensors.torch import save_file

    from simda.checkpoint import read_safetensors

    def save(path, pad):  # -> the header's length (JSON padded to a multiple of 8)
        save_file({"w": torch.ones(2)}, path, metadata={"pad": "x" * pad})
        with open(path, "rb") as f:
            return int.from_bytes(f.read(8), "little")

    for header in (0x280, 0x380, 0x4B50):
        path = str(tmp_path / f"h{header}.safetensors")
        start = header - save(path, 0)
        pad = next(p for p in range(start, start + 9) if save(path, p) == header)
        tensors, meta = read_safetensors(path)
        assert torch.equal(tensors["w"], torch.ones(2)) and meta["pad"] == "x" * pad


def test_tuning_trains_only_the_adapters():
    pipe = SimDAPipeline.from_preset("tiny", seed=3)
    frozen = {k: v.clone() for k, v in pipe.unet.state_dict().items() if "adapter" not in k}
    result = tune(pipe, clip(), "a red square moving right", steps=3, lr=1e-3, progress=False)
    assert result.tuned_parameters == sum(p.numel() for p in pipe.unet.trainable_parameters())
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    assert result.tuned_parameters == simda.count_parameters(pipe.unet)["trainable"]
    assert all(torch.equal(v, frozen[k]) for k, v in pipe.unet.state_dict().items() if k in frozen)


def test_edit_video_and_inversion_cache(tmp_path):
    pipe = SimDAPipeline.from_preset("tiny", seed=4)
    frames = clip(frames=3)
    cache = str(tmp_path / "cache")
    result = edit_video(
        pipe,
        frames,
        "a red square moving right",
        "a blue square moving right",
        tune_steps=2,
        num_inference_steps=3,
        cache_dir=cache,
        progress=False,
    )
    assert result.edit.shape == frames.shape == result.reconstruction.shape
    assert len(os.listdir(cache)) == 1
    latents = pipe.encode_video(frames, generator=torch.Generator().manual_seed(0))
    pipe.set_progress_bar_config(disable=True)
    first = inverted_latents(pipe, latents, 3, cache)
    assert len(os.listdir(cache)) == 1  # reused, not recomputed
    torch.testing.assert_close(first, pipe.invert(latents, 3))


@pytest.mark.parametrize("eps_scale", [0.0, 0.01])
def test_inversion_then_sampling_reconstructs(eps_scale):
    """DDIM inversion followed by DDIM sampling (same prompt, no guidance) returns to the
    start: exactly when the noise prediction is zero, closely when it is small and smooth
    (a random UNet's large, erratic predictions would make any inversion drift)."""
    pipe = SimDAPipeline.from_preset("tiny", seed=5)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        pipe.unet.unet.conv_out.weight.mul_(eps_scale)
        pipe.unet.unet.conv_out.bias.mul_(eps_scale)
    latents = pipe.encode_video(clip(frames=2), generator=torch.Generator().manual_seed(0))
    noise = pipe.invert(latents, 20, prompt="")
    cond = pipe.embed_prompts([""])
    back = pipe.denoise(noise, cond, None, 20, 1.0)
    err = (back - latents).abs().mean() / latents.abs().mean()
    assert err < (1e-5 if eps_scale == 0 else 0.03), err


def test_superres_variant():
    pipe = make_superres(SimDAPipeline.from_preset("tiny", seed=6))
    conv = pipe.unet.unet.conv_in
    assert conv.in_channels == 8 and conv.weight.requires_grad
    assert torch.count_nonzero(conv.weight[:, 4:]) == 0  # new inputs start at zero
    low = clip(frames=2, size=32)
    pipe.set_progress_bar_config(disable=True)
    out = upscale(pipe, low, "a red square", scale=2, num_inference_steps=2)
    assert out.dtype == np.uint8
    assert out.shape == (2, 64, 64, 3)
    assert "unet.conv_in.weight" in simda.checkpoint.adapter_state_dict(pipe.unet)


def test_superres_scale_is_recorded_and_checked(tmp_path):
    pipe = make_superres(SimDAPipeline.from_preset("tiny", seed=6), scale=2)
    pipe.save_pretrained(str(tmp_path / "sr"))
    pipe = SimDAPipeline.from_pretrained(str(tmp_path / "sr"))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.superres_scale == 2 and pipe.unet.trainable_modules == ["conv_in"]
    assert pipe.unet.unet.conv_in.weight.requires_grad
    low = clip(frames=1, size=16)
    with pytest.warns(UserWarning, match="trained to upscale by 2, not 4"):
        upscale(pipe, low, "", scale=4, num_inference_steps=1)
    for scale in (0, -2, 1.5, True):
        with pytest.raises(SimDAError, match="scale must be an int >= 1"):
            upscale(pipe, low, "", scale=scale, num_inference_steps=1)


def test_upscale_checks_its_arguments_and_follows_the_model(tmp_path):
    pipe = make_superres(SimDAPipeline.from_preset("tiny", seed=6), scale=2)
    pipe.set_progress_bar_config(disable=True)
    low = clip(frames=1, size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the trained scale, no warning
        out = upscale(pipe, low, "", num_inference_steps=1)
    assert out.shape == (1, 32, 32, 3)
    for kwargs, match in (
        (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number"),
        (dict(low_frames=low.astype(np.float32) / 255), "uint8 RGB array .* got float32"),
        (dict(low_frames=list(low)), "low_frames must be a uint8 RGB array .* got list"),
        (dict(low_frames=low[None]), r"got uint8 array of shape \(1, 1, 16, 16, 3\)"),
        (dict(prompt=None), "prompt must be a string"),
        (dict(num_inference_steps=0), "num_inference_steps must be an int"),
        (dict(generator=3), "generator must be None, a torch.Generator"),
    ):
        args = {"low_frames": low, "prompt": "", "num_inference_steps": 1, **kwargs}
        with pytest.raises(SimDAError, match=match):
            upscale(pipe, args.pop("low_frames"), args.pop("prompt"), **args)
    for scale in (0, 1, 2.7, "x", True):
        with pytest.raises(SimDAError, match="scale must be an int >= 2"):
            make_superres(SimDAPipeline.from_preset("tiny"), scale)


def test_sampling_argument_types_are_named(pipe):
    for kwargs, match in (
        (dict(num_frames=2.0), "num_frames must be an int, got 2.0"),
        (dict(num_frames="2"), "num_frames must be an int, got '2'"),
        (dict(num_frames=0), "num_frames must be >= 1, got 0"),
        (dict(num_frames=True), "num_frames must be an int, got True"),
        (dict(height="16"), "height must be an int, got '16'"),
        (dict(generator=3), "generator must be None, a torch.Generator"),
    ):
        with pytest.raises(SimDAError, match=match):
            pipe("a", **{"num_frames": 1, "num_inference_steps": 1, **kwargs})
    latents = torch.randn(1, 4, 2, 8, 8)
    with pytest.raises(SimDAError, match="latents must be a \\(B, C, F, h, w\\) tensor"):
        pipe.invert(None, 2)
    with pytest.raises(SimDAError, match="prompt must be a string, got list \\['a', 'b'\\]"):
        pipe.invert(latents, 2, prompt=["a", "b"])
    with pytest.raises(SimDAError, match="latents must be a \\(B, C, F, h, w\\) tensor"):
        pipe.decode_latents(latents[:, :, 0])


def test_from_preset_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    SimDAPipeline.from_preset("tiny", seed=0)
    assert torch.equal(torch.rand(3), want)
    a, b = (SimDAPipeline.from_preset("tiny", seed=5).unet.state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the seed still fixes the weights


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a CPU-only machine")
def test_moving_to_a_missing_gpu_is_named(pipe):
    with pytest.raises(SimDAError, match="device cuda needs a CUDA GPU, and none is available"):
        pipe.to("cuda")


def test_adapter_files_and_counts_take_a_pipeline_and_either_unet(tmp_path, pipe):
    video_unet = pipe.unet
    assert simda.count_parameters(pipe) == simda.count_parameters(video_unet)
    simda.save_adapters(pipe, str(tmp_path / "p.safetensors"))
    simda.save_adapters(video_unet.unet, str(tmp_path / "inner.safetensors"))
    other = SimDAPipeline.from_preset("tiny", seed=9)
    for path, target in (
        ("p.safetensors", other),
        ("inner.safetensors", other.unet),  # saved without the "unet." prefix
        ("p.safetensors", other.unet.unet),  # saved with it
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the inner UNet records no setup
            report = simda.load_adapters(target, str(tmp_path / path))
        assert report == {"missing": [], "unexpected": []}
        got = simda.checkpoint.adapter_state_dict(other)
        want = simda.checkpoint.adapter_state_dict(pipe)
        assert all(torch.equal(got[k], want[k]) for k in want)
    with pytest.raises(SimDAError, match="must be a SimDA UNet .* got str"):
        simda.count_parameters("unet")


def test_wrong_argument_types_are_named(tmp_path, pipe):
    with pytest.raises(SimDAError, match="give exactly one of prompt and prompt_embeds"):
        pipe(None, num_frames=1, num_inference_steps=1)
    with pytest.raises(SimDAError, match="'fp16' is neither a device nor a torch.dtype"):
        pipe.to("fp16")
    run = tmp_path / "run"  # a training output folder, given as --model
    run.mkdir()
    simda.save_adapters(pipe.unet, str(run / "adapters.safetensors"))
    with pytest.raises(SimDAError, match="holds adapters.safetensors: load those onto a model"):
        SimDAPipeline.from_pretrained(str(run))


def test_the_word_tokenizer_says_what_it_cannot_read():
    import warnings

    from simda.pipelines.text import WordTokenizer

    closed = WordTokenizer(vocab=["a", "red", "square"], max_length=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        closed(["a red square", ""])
        WordTokenizer()("a panda surfing")  # an open vocabulary: any word is a word
    with pytest.warns(UserWarning, match="knows only the words a red square; blue, circle act"):
        closed("a blue circle")
    with pytest.warns(UserWarning, match="has 5 words; the model reads the first 4"):
        closed("a red square a red")


def test_missing_model_folders(tmp_path):
    with pytest.raises(SimDAError, match="does not exist"):
        SimDAPipeline.from_pretrained(str(tmp_path / "nope"))
    (tmp_path / "unet").mkdir()
    with pytest.raises(SimDAError, match="missing vae, text_encoder, tokenizer, scheduler"):
        SimDAPipeline.from_pretrained(str(tmp_path))
    for part in ("vae", "text_encoder", "tokenizer", "scheduler"):
        (tmp_path / part).mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(SimDAError, match="no .safetensors weights"):
        SimDAPipeline.from_pretrained(str(tmp_path))


def test_a_saved_pipeline_without_its_weights_is_refused(tmp_path, pipe):
    pipe.save_pretrained(str(tmp_path / "m"))
    os.remove(tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(SimDAError, match="unet/ has no .safetensors weights"):
        SimDAPipeline.from_pretrained(str(tmp_path / "m"))
    with pytest.raises(SimDAError, match="safetensors weights only"):
        SimDAPipeline.from_pretrained(str(tmp_path / "m"), use_safetensors=False)


def test_read_video_counts_must_be_positive(tmp_path):
    from simda.video import read_video, write_video

    path = write_video(str(tmp_path / "c.gif"), clip(frames=3))
    for kwargs in ({"num_frames": 0}, {"num_frames": 2, "stride": -1}):
        with pytest.raises(SimDAError, match="must be an int >= 1"):
            read_video(path, **kwargs)


def test_clips_must_be_uint8_rgb_arrays(pipe):
    from simda.pipelines import edit_video

    frames = clip(frames=2)
    with pytest.raises(SimDAError, match="uint8 RGB array"):
        pipe.encode_video(frames.astype(np.float32) / 255)  # [0, 1] floats: not silently black
    with pytest.raises(SimDAError, match="uint8 RGB array"):
        pipe.encode_video(frames[..., 0])
    with pytest.raises(SimDAError, match="frames must be one clip"):
        edit_video(pipe, frames[None], "a", "b", tune_steps=0, num_inference_steps=1)


def test_build_unet_argument_types():
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        simda.build_unet("tiny", dtype="float16")
    with pytest.raises(ValueError, match="preset must be one of"):
        simda.build_unet(["tiny"])


def test_model_index_must_be_an_object(tmp_path, pipe):
    pipe.save_pretrained(str(tmp_path / "m"))
    (tmp_path / "m" / "model_index.json").write_text("[1, 2]")
    with pytest.raises(SimDAError, match="must hold a JSON object"):
        SimDAPipeline.from_pretrained(str(tmp_path / "m"))


def test_adapters_loaded_into_another_setup_warn(tmp_path):
    import warnings

    path = str(tmp_path / "a.safetensors")
    simda.save_adapters(simda.build_unet("tiny"), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        simda.load_adapters(simda.build_unet("tiny"), path)  # same setup: silent
    other = simda.build_unet("tiny", temporal_act="none", lsa_layout="tav")
    with pytest.warns(RuntimeWarning, match="temporal_act 'gelu' in the file, 'none'") as record:
        simda.load_adapters(other, path)
    assert "lsa_layout 'paper' in the file, 'tav' in the model" in str(record[0].message)


def test_sampling_and_inversion_build_no_autograd_graph(pipe):
    assert any(p.requires_grad for p in pipe.unet.parameters())  # the adapters train
    latents, cond = torch.randn(1, 4, 2, 8, 8), pipe.embed_prompts(["x"])
    assert not pipe.denoise(latents, cond, None, 1, 1.0).requires_grad
    assert not pipe.invert(latents, 1).requires_grad


def test_tuning_refuses_fp16_weights():
    pipe = SimDAPipeline.from_preset("tiny", seed=3)
    pipe.unet.half()
    with pytest.raises(SimDAError, match="AdamW on fp16 weights"):
        tune(pipe, clip(), "a red square moving right", steps=1, progress=False)
    pipe.unet.bfloat16()
    with pytest.raises(SimDAError, match="AdamW on bf16 weights loses most of its updates"):
        tune(pipe, clip(), "a red square moving right", steps=1, progress=False)
    tune(pipe, clip(), "a red square moving right", steps=0, progress=False)  # nothing trains
