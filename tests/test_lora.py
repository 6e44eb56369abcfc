"""A user's LoRA and textual inversion for the image model, on a SimDA pipeline: diffusers'
loaders, with files made here the way diffusers' training scripts write them (peft)."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers

from simda import toyworld
from simda.checkpoint import adapter_state_dict
from simda.pipelines import SimDAPipeline, edit_video, tune

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def sd_pipe(tmp_path_factory, sd_pipeline_factory):
    return sd_pipeline_factory(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def lora_folder(sd_pipe, tmp_path_factory):
    """An SD-1.x LoRA of the image UNet's attention projections, rank 4, random (not zero)
    weights, saved in diffusers' format."""
    import copy

    unet = copy.deepcopy(sd_pipe.unet)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=4,
        init_lora_weights=False,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
    )
    torch.manual_seed(0)
    unet.add_adapter(config)
    layers = convert_state_dict_to_diffusers(peft.utils.get_peft_model_state_dict(unet))
    folder = tmp_path_factory.mktemp("lora")
    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=layers)
    return folder


def latents(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        "a cat",
        num_frames=2,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        **kwargs,
    ).frames


def test_lora_loads_changes_the_video_and_fuses_to_the_same(
    lora_folder, sd_pipeline_factory, tmp_path
):
    """Fusing writes into the image weights, which ``from_pipe`` shares with the SD pipeline
    (as diffusers' ``from_pipe`` shares whole components): a pipeline of its own here."""
    sd_pipe = sd_pipeline_factory(tmp_path)
    original = {k: v.clone() for k, v in sd_pipe.unet.state_dict().items()}
    pipe = SimDAPipeline.from_pipe(sd_pipe)
    plain = latents(pipe)
    pipe.load_lora_weights(str(lora_folder), adapter_name="style")
    assert pipe.get_active_adapters() == ["style"]
    loaded = latents(pipe)
    assert (loaded - plain).abs().max() > 1e-3
    half = latents(pipe, cross_attention_kwargs={"scale": 0.5})
    assert not torch.allclose(half, loaded) and not torch.allclose(half, plain)
    pipe.fuse_lora()
    torch.testing.assert_close(latents(pipe), loaded, rtol=1e-4, atol=1e-4)
    pipe.unfuse_lora()
    pipe.unload_lora_weights()
    torch.testing.assert_close(latents(pipe), plain, rtol=1e-4, atol=1e-4)
    assert not any("lora" in n for n, _ in sd_pipe.unet.named_parameters())  # no LoRA layers
    for k, v in sd_pipe.unet.state_dict().items():  # unfused: the shared weights are back
        torch.testing.assert_close(v, original[k], rtol=0, atol=1e-6)


@pytest.mark.parametrize("fused", [False, True])
def test_tuning_and_editing_with_a_lora_train_only_the_adapters(
    lora_folder, fused, sd_pipeline_factory, tmp_path
):
    pipe = SimDAPipeline.from_pipe(sd_pipeline_factory(tmp_path))
    pipe.load_lora_weights(str(lora_folder))
    if fused:
        pipe.fuse_lora()
    lora = {n: p.clone() for n, p in pipe.unet.named_parameters() if "lora" in n}
    frozen = {k: v.clone() for k, v in pipe.unet.state_dict().items() if "adapter" not in k}
    before = {k: v.clone() for k, v in adapter_state_dict(pipe.unet).items()}
    frames = toyworld.sample(0, frames=2, size=64)[0]
    result = tune(pipe, frames, "a red square", steps=2, lr=1e-3, progress=False)
    assert np.isfinite(result.losses).all()
    assert result.tuned_parameters == sum(p.numel() for p in pipe.unet.trainable_parameters())
    after = adapter_state_dict(pipe.unet)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the adapters trained
    assert all(torch.equal(p, lora[n]) for n, p in pipe.unet.named_parameters() if n in lora)
    assert all(torch.equal(v, frozen[k]) for k, v in pipe.unet.state_dict().items() if k in frozen)
    flags = {n: p.requires_grad for n, p in pipe.unet.named_parameters()}
    edit = edit_video(
        pipe, frames, "a red square", "a blue square", tune_steps=1, num_inference_steps=2
    )
    assert edit.edit.shape == frames.shape and edit.edit.dtype == np.uint8
    assert {n: p.requires_grad for n, p in pipe.unet.named_parameters()} == flags  # restored


def test_textual_inversion_adds_a_word(sd_pipe, tmp_path):
    import diffusers
    from packaging.version import Version

    if Version(diffusers.__version__) < Version("0.36") and not hasattr(
        sd_pipe.tokenizer, "_update_trie"
    ):
        pytest.skip("diffusers 0.35's textual inversion loader needs transformers 4's tokenizers")
    from safetensors.torch import save_file

    pipe = SimDAPipeline.from_pipe(sd_pipe)
    dim = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    path = str(tmp_path / "cat-style.safetensors")
    save_file({"emb_params": torch.randn(2, dim, generator=torch.Generator().manual_seed(3))}, path)
    pipe.load_textual_inversion(path, token="<cat-style>")
    assert "<cat-style>" in pipe.tokenizer.get_vocab()
    with_token = pipe.embed_prompts(["a <cat-style> cat"])
    without = pipe.embed_prompts(["a cat"])
    assert not torch.allclose(with_token, without)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a <cat-style> cat", num_frames=2, num_inference_steps=1, output_type="latent")
    assert out.frames.shape == (1, 4, 2, 8, 8)
    pipe.unload_textual_inversion()
