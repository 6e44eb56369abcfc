"""simda.optimize / simda.restore on the tiny model (fused LSA in the Triton interpreter)."""

import copy
import warnings

import pytest
import torch
from diffusers import UNet2DConditionModel

import simda
from simda.optimization import backends
from simda.presets import unet2d_config
from simda_kernels import lsa


def small_inputs():
    # 4x4 latents keep the interpreted kernel quick: N = 16, 4, 1 tokens per level.
    return torch.randn(1, 4, 2, 4, 4), torch.tensor([300]), torch.randn(1, 5, 32)


def randomised_model():
    model = simda.build_unet("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # adapters included: they must matter
    return model


@pytest.mark.skipif(not lsa.HAS_TRITON, reason="triton is not installed")
@pytest.mark.interpreter
def test_optimized_matches_unoptimized_and_restore_is_exact():
    model = randomised_model()
    sample, t, text = small_inputs()
    state = copy.deepcopy(model.state_dict())
    classes = [type(m) for m in model.modules()]
    with torch.no_grad():
        before = model(sample, t, text).sample
        assert simda.optimize(model, attention_backend="triton") is model
        assert backends(model) == {"attention": {"triton"}, "adapter": {"auto"}}
        fused = model(sample, t, text).sample
        torch.testing.assert_close(fused, before, rtol=1e-4, atol=1e-5)
        assert simda.restore(model) is model
        after = model(sample, t, text).sample
    assert backends(model) == {"attention": {"reference"}, "adapter": {"reference"}}
    assert torch.equal(after, before)
    assert [type(m) for m in model.modules()] == classes
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_every_transformer_block_attends_through_the_entry_point(monkeypatch):
    """Each self-attention of the video UNet is one call of simda_kernels.latent_shift_attention
    per forward, with the backend that optimize set (not a private path)."""
    import simda_kernels
    from simda.attention import LatentShiftAttnProcessor

    model = simda.build_unet("tiny")
    blocks = [
        m.processor
        for m in model.modules()
        if isinstance(getattr(m, "processor", None), LatentShiftAttnProcessor)
    ]
    assert len(blocks) > 1
    calls = []
    real = simda_kernels.latent_shift_attention

    def spy(*args, **kwargs):
        calls.append(args[8])  # backend
        return real(*args[:8], "reference")

    monkeypatch.setattr(simda_kernels, "latent_shift_attention", spy)
    simda.optimize(model, attention_backend="triton")
    with torch.no_grad():
        model(*small_inputs())
    assert calls == ["triton"] * len(blocks)


def test_optimize_is_idempotent_and_restore_returns_the_original_choice():
    model = simda.build_unet("tiny")
    simda.optimize(model)
    simda.optimize(model, attention_backend="triton")
    assert backends(model)["attention"] == {"triton"}
    simda.restore(model)
    assert backends(model) == {"attention": {"reference"}, "adapter": {"reference"}}
    simda.restore(model)  # restoring twice is harmless
    assert backends(model)["adapter"] == {"reference"}


def test_partial_optimize():
    model = simda.build_unet("tiny")
    simda.optimize(model, attention=False)
    assert backends(model) == {"attention": {"reference"}, "adapter": {"auto"}}


def test_layout_switch_keeps_the_optimization():
    model = simda.build_unet("tiny")
    simda.optimize(model, attention_backend="triton")
    model.set_lsa_layout("released")
    assert backends(model)["attention"] == {"triton"}
    model.set_lsa_layout("self")  # the choice lives in the video context, not the layers
    assert backends(model)["attention"] == {"triton"}
    assert model.context.attention_backend == "triton" and model.context.lsa_layout == "self"
    model.set_lsa_layout("paper")
    assert backends(model)["attention"] == {"triton"}
    simda.restore(model)
    assert backends(model)["attention"] == {"reference"}


def test_plain_image_unet_is_left_alone():
    unet = UNet2DConditionModel(**unet2d_config("tiny"))
    with pytest.warns(RuntimeWarning, match="nothing changed"):
        assert simda.optimize(unet) is unet


def test_pipeline_is_accepted():
    from simda.pipelines import SimDAPipeline

    pipe = SimDAPipeline.from_preset("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert simda.optimize(pipe) is pipe
    assert backends(pipe)["adapter"] == {"auto"}
    simda.restore(pipe)


def test_rejects_other_objects():
    with pytest.raises(TypeError, match="optimize expects"):
        simda.optimize(object())


def test_backend_typos_are_refused_at_once():
    model = simda.build_unet("tiny")
    with pytest.raises(ValueError, match="attention_backend must be one of"):
        simda.optimize(model, attention_backend="trtion")
    with pytest.raises(ValueError, match="adapter_backend must be one of"):
        simda.optimize(model, adapter_backend="triton")
    assert backends(model) == {"attention": {"reference"}, "adapter": {"reference"}}
