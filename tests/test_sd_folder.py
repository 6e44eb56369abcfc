"""Loading a diffusers SD-1.x folder (CLIP tokenizer and text encoder, safetensors weights):
a miniature written in exactly that layout, since no real one can be downloaded here."""

import json

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from simda.pipelines import SimDAPipeline
from simda.pipelines.t2v import SD_SCHEDULER, TINY_VAE
from simda.presets import unet2d_config

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd15-mini")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [f"{c}</w>" for c in letters]:
        vocab[token] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=16
    )
    tokenizer.save_pretrained(str(root / "tokenizer"))
    text = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    text.save_pretrained(str(root / "text_encoder"), safe_serialization=True)
    UNet2DConditionModel(**unet2d_config("tiny")).save_pretrained(
        str(root / "unet"), safe_serialization=True
    )
    AutoencoderKL(**TINY_VAE).save_pretrained(str(root / "vae"), safe_serialization=True)
    DDIMScheduler(**SD_SCHEDULER).save_pretrained(str(root / "scheduler"))
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return root


def test_loads_and_generates(sd_folder):
    pipe = SimDAPipeline.from_pretrained(str(sd_folder))
    assert type(pipe.tokenizer).__name__.startswith("CLIPTokenizer")
    out = pipe(
        "a cat",
        num_frames=2,
        num_inference_steps=2,
        progress=False,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.frames.shape == (1, 2, 64, 64, 3)
    assert all(not p.requires_grad for n, p in pipe.unet.named_parameters() if "adapter" not in n)


def test_save_and_reload_keeps_clip(sd_folder, tmp_path):
    pipe = SimDAPipeline.from_pretrained(str(sd_folder))
    pipe.save_pretrained(str(tmp_path / "copy"))
    again = SimDAPipeline.from_pretrained(str(tmp_path / "copy"))
    ids = ["a cat", "a dog"]
    torch.testing.assert_close(again.encode_prompt(ids), pipe.encode_prompt(ids))
