"""Loading a user's diffusers SD-1.x folder (CLIP tokenizer and text encoder, safetensors
weights): miniatures written in exactly that layout, since no real one can be downloaded here.
``sd_pipe`` / ``sd_folder`` are a ``StableDiffusionPipeline`` and its ``save_pretrained``
folder; ``bare_folder`` holds the same parts under a model_index.json that lists none."""

import json
import os
import shutil

import diffusers
import pytest
import torch
from diffusers import PNDMScheduler

from simda.errors import SimDAError
from simda.pipelines import SimDAPipeline
from simda.unet import SimDAUNet


@pytest.fixture(scope="module")
def sd_pipe(tmp_path_factory, sd_pipeline_factory):
    return sd_pipeline_factory(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def sd_folder(sd_pipe, tmp_path_factory):
    root = tmp_path_factory.mktemp("sd15-mini")
    sd_pipe.save_pretrained(str(root))
    return root


@pytest.fixture(scope="module")
def bare_folder(sd_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("bare") / "sd"
    shutil.copytree(sd_folder, root)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return root


def sample(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    args = dict(num_frames=2, num_inference_steps=2, output_type="latent")
    return pipe("a cat", generator=torch.Generator().manual_seed(0), **{**args, **kwargs}).frames


@pytest.mark.parametrize("which", ["sd_folder", "bare_folder"])
def test_loads_and_generates(which, request):
    pipe = SimDAPipeline.from_pretrained(str(request.getfixturevalue(which)))
    assert type(pipe.tokenizer).__name__.startswith("CLIPTokenizer")
    assert isinstance(pipe.unet, SimDAUNet)
    assert sample(pipe, output_type="np").shape == (1, 2, 64, 64, 3)
    assert all(not p.requires_grad for n, p in pipe.unet.named_parameters() if "adapter" not in n)


def test_save_and_reload_keeps_clip(sd_folder, tmp_path):
    pipe = SimDAPipeline.from_pretrained(str(sd_folder))
    pipe.save_pretrained(str(tmp_path / "copy"))
    again = SimDAPipeline.from_pretrained(str(tmp_path / "copy"))
    ids = ["a cat", "a dog"]
    torch.testing.assert_close(again.embed_prompts(ids), pipe.embed_prompts(ids))
    assert torch.equal(sample(again), sample(pipe))


def test_diffusion_pipeline_loads_a_simda_folder(sd_folder, tmp_path):
    SimDAPipeline.from_pretrained(str(sd_folder)).save_pretrained(str(tmp_path / "simda"))
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(tmp_path / "simda"))
    assert type(pipe) is SimDAPipeline and isinstance(pipe.unet, SimDAUNet)
    assert sample(pipe).shape == (1, 4, 2, 8, 8)


def test_the_folders_scheduler_is_the_pipelines(sd_folder, tmp_path):
    """A folder whose scheduler is PNDM samples with PNDM, not a silent DDIM."""
    pndm = tmp_path / "pndm"
    shutil.copytree(sd_folder, pndm)
    scheduler = PNDMScheduler.from_config(
        PNDMScheduler.load_config(str(sd_folder), subfolder="scheduler"), skip_prk_steps=True
    )
    scheduler.save_pretrained(str(pndm / "scheduler"))
    index = json.loads((pndm / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "PNDMScheduler"]
    (pndm / "model_index.json").write_text(json.dumps(index))
    assert isinstance(SimDAPipeline.from_pretrained(str(pndm)).scheduler, PNDMScheduler)
    (pndm / "model_index.json").write_text(json.dumps({}))  # no index: the config says it
    assert isinstance(SimDAPipeline.from_pretrained(str(pndm)).scheduler, PNDMScheduler)


def test_from_pipe_leaves_the_sd_pipeline_working_and_shares_its_weights(sd_pipe):
    sd_pipe.set_progress_bar_config(disable=True)

    def image():
        return sd_pipe(
            "a cat",
            num_inference_steps=2,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images

    before = image()
    state = {k: v.clone() for k, v in sd_pipe.unet.state_dict().items()}
    grads = {n: p.requires_grad for n, p in sd_pipe.unet.named_parameters()}
    processors = dict(sd_pipe.unet.attn_processors)
    pipe = SimDAPipeline.from_pipe(sd_pipe)
    assert isinstance(pipe.unet, SimDAUNet) and pipe.unet.unet is not sd_pipe.unet
    assert sample(pipe, output_type="np").shape == (1, 2, 64, 64, 3)
    # the SD pipeline is as it was: its UNet, weights, flags, processors and output
    assert type(sd_pipe.unet) is diffusers.UNet2DConditionModel
    assert all(torch.equal(v, state[k]) for k, v in sd_pipe.unet.state_dict().items())
    assert {n: p.requires_grad for n, p in sd_pipe.unet.named_parameters()} == grads
    assert sd_pipe.unet.attn_processors == processors
    assert not any("adapter" in n for n, _ in sd_pipe.unet.named_modules())
    torch.testing.assert_close(image(), before, rtol=0, atol=0)
    # one copy of the image weights in memory: the same storage
    theirs = dict(sd_pipe.unet.named_parameters())
    ours = dict(pipe.unet.unet.named_parameters())
    assert all(ours[n].data_ptr() == p.data_ptr() for n, p in theirs.items())
    assert pipe.text_encoder is sd_pipe.text_encoder and pipe.vae is sd_pipe.vae


def test_a_missing_folder_is_named():
    with pytest.raises(SimDAError, match="does not exist .simda loads local folders only"):
        SimDAPipeline.from_pretrained("runwayml/stable-diffusion-v1-5")


def test_the_adapters_argument_takes_a_model_a_folder_or_a_file(sd_folder, tmp_path):
    from simda.checkpoint import SimDAAdapters, adapter_state_dict

    trained = SimDAPipeline.from_pretrained(str(sd_folder))
    with torch.no_grad():
        for p in trained.unet.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    want = adapter_state_dict(trained.unet)
    trained.save_adapters(str(tmp_path / "folder"))
    adapters = SimDAAdapters.from_pretrained(str(tmp_path / "folder"))
    from simda.checkpoint import save_adapters

    save_adapters(trained.unet, str(tmp_path / "file.safetensors"))
    for given in (adapters, str(tmp_path / "folder"), str(tmp_path / "file.safetensors")):
        pipe = SimDAPipeline.from_pretrained(str(sd_folder), adapters=given)
        got = adapter_state_dict(pipe.unet)
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_folder_in_simda_01s_layout_loads_and_saves_in_the_current_one(tmp_path):
    """simda 0.1 wrote its own layout: the image UNet without adapters, adapters.safetensors,
    the tiny text stack in its own files, the settings in model_index.json."""
    from safetensors.torch import save_file

    from simda.checkpoint import save_adapters

    pipe = SimDAPipeline.from_preset("tiny", seed=2)
    with torch.no_grad():
        for p in pipe.unet.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    old = tmp_path / "old"
    image_weights = {
        k.removeprefix("unet."): v for k, v in pipe.unet.state_dict().items() if "adapter" not in k
    }
    pipe.unet.unet.save_pretrained(str(old / "unet"))  # then overwritten without adapters
    save_file(image_weights, str(old / "unet" / "diffusion_pytorch_model.safetensors"))
    pipe.vae.save_pretrained(str(old / "vae"))
    pipe.scheduler.save_pretrained(str(old / "scheduler"))
    (old / "tokenizer").mkdir()
    (old / "tokenizer" / "word_tokenizer.json").write_text(json.dumps(pipe.tokenizer.settings()))
    (old / "text_encoder").mkdir()
    settings = {k: pipe.text_encoder.config[k] for k in ("vocab_size", "dim", "max_length")}
    settings.update(layers=1, heads=2, pooled=0.0)
    (old / "text_encoder" / "config.json").write_text(json.dumps(settings))
    text = {
        k.replace("blocks.", "layers.", 1): v for k, v in pipe.text_encoder.state_dict().items()
    }
    save_file(
        {k: v.contiguous() for k, v in text.items()},
        str(old / "text_encoder" / "model.safetensors"),
    )
    save_adapters(pipe.unet, str(old / "adapters.safetensors"))
    index = {"_class_name": "SimDAPipeline", "format": "simda-pipeline-1", "text": "tiny"}
    index.update(lsa_layout="paper", temporal_act="gelu", sampling={"num_inference_steps": 3})
    (old / "model_index.json").write_text(json.dumps(index))
    loaded = SimDAPipeline.from_pretrained(str(old))
    assert loaded.config.sampling == {"num_inference_steps": 3}
    assert torch.equal(sample(loaded), sample(pipe))
    loaded.save_pretrained(str(tmp_path / "new"))
    assert torch.equal(sample(SimDAPipeline.from_pretrained(str(tmp_path / "new"))), sample(pipe))
    os.remove(old / "adapters.safetensors")
    with pytest.raises(SimDAError, match="adapters.safetensors is missing"):
        SimDAPipeline.from_pretrained(str(old))
