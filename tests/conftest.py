import importlib.util
import os

import torch  # noqa: I001 (before pytest: it decides the Triton mode below)

# The Triton mode must be set before any kernel is defined. Without a GPU the interpreter runs
# the kernels on CPU tensors; with one the kernels are compiled, so that the GPU tests check
# the real device code (the interpreter would silently run them on the CPU instead).
os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")
INTERPRET = os.environ["TRITON_INTERPRET"] == "1"

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``interpreter`` run the Triton kernels on CPU tensors: skipped when the
    kernels are compiled (TRITON_INTERPRET=0, the default on a GPU machine)."""
    if INTERPRET:
        return
    skip = pytest.mark.skip(reason="runs Triton kernels on CPU tensors: needs TRITON_INTERPRET=1")
    for item in items:
        if "interpreter" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
#: GPU tests of the Triton kernels: they must check the compiled kernels, not the interpreter
requires_compiled_triton = pytest.mark.skipif(
    INTERPRET, reason="checks the compiled Triton kernels: unset TRITON_INTERPRET"
)


def load_script(name):
    """A module of scripts/ (they are not a package), loaded by path."""
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", f"{name}.py"
    )
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- SD-1.x miniature


def clip_text(root):
    """A CLIP tokenizer over single letters and a 1-layer CLIP text encoder (width 32)."""
    import json

    import transformers

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [f"{c}</w>" for c in letters]:
        vocab[token] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=16
    )
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
    return tokenizer, text.eval()


def make_sd_pipeline(root):
    """A miniature Stable Diffusion 1.x pipeline with a real CLIP tokenizer and text encoder:
    the layout of a user's SD folder (no real one can be downloaded here)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    from simda.pipelines.t2v import SD_SCHEDULER, TINY_VAE
    from simda.presets import unet2d_config

    tokenizer, text = clip_text(root)
    return StableDiffusionPipeline(
        vae=AutoencoderKL(**TINY_VAE).eval(),
        text_encoder=text,
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**unet2d_config("tiny")).eval(),
        scheduler=DDIMScheduler(**SD_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="session")
def sd_pipeline_factory():
    """``factory(folder)``: a new miniature SD-1.x pipeline (see ``make_sd_pipeline``)."""
    return make_sd_pipeline
