"""The SimDA video UNet: parameter counts, equivalence at initialisation, training, errors."""

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel

import simda
from simda.presets import unet2d_config


def image_unet(preset="tiny"):
    return UNet2DConditionModel(**unet2d_config(preset)).eval()


def randomise_base(unet):
    """Make every frozen weight non-trivial so equivalence tests can fail."""
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return unet


def video_inputs(b=2, frames=3, h=8, w=8, c=4, text=32):
    return torch.randn(b, c, frames, h, w), torch.tensor([10, 500])[:b], torch.randn(b, 5, text)


def per_frame(unet2d, sample, t, text):
    b, c, f, h, w = sample.shape
    frames = [unet2d(sample[:, :, i], t, text).sample for i in range(f)]
    return torch.stack(frames, 2)


def test_sd15_parameter_counts_on_meta():
    model = simda.build_unet("sd15", device="meta")
    counts = simda.count_parameters(model)
    assert counts["spatial_adapters"] == 12_421_600
    assert counts["temporal_adapters"] == 12_434_080
    assert counts["trainable"] == 24_855_680
    assert counts["frozen"] == 859_520_964
    assert counts["total"] == 859_520_964 + 24_855_680
    assert next(model.parameters()).device.type == "meta"


def test_adapter_placement():
    model = simda.build_unet("tiny")
    temporal = [m for m in model.modules() if isinstance(m, simda.TemporalAdapter)]
    spatial = [m for m in model.modules() if isinstance(m, simda.SpatialAdapter)]
    assert len(temporal) == 16 and len(spatial) == 32
    assert all(p.requires_grad for m in temporal + spatial for p in m.parameters())
    base = model.unet.conv_in.weight
    assert not base.requires_grad


def test_forward_shape_and_dtype():
    model = simda.build_unet("tiny")
    sample, t, text = video_inputs(frames=4, h=8, w=12)
    out = model(sample, t, text).sample
    assert out.shape == sample.shape and out.dtype == sample.dtype
    assert torch.isfinite(out).all()


def test_single_frame_paper_equals_image_model():
    unet2d = randomise_base(image_unet())
    model = simda.inflate(copy.deepcopy(unet2d), lsa_layout="paper")
    sample, t, text = video_inputs(frames=1)
    with torch.no_grad():
        torch.testing.assert_close(
            model(sample, t, text).sample, per_frame(unet2d, sample, t, text), rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("hw", [(8, 8), (6, 10)])
def test_self_layout_equals_image_model_per_frame(hw):
    unet2d = randomise_base(image_unet())
    model = simda.inflate(copy.deepcopy(unet2d), lsa_layout="self")
    sample, t, text = video_inputs(frames=4, h=hw[0], w=hw[1])
    with torch.no_grad():
        torch.testing.assert_close(
            model(sample, t, text).sample, per_frame(unet2d, sample, t, text), rtol=1e-4, atol=1e-5
        )


def test_latent_shift_mixes_frames():
    model = simda.build_unet("tiny")
    randomise_base(model.unet)
    sample, t, text = video_inputs(frames=3)
    with torch.no_grad():
        shifted = model(sample, t, text).sample
        model.set_lsa_layout("self")
        plain = model(sample, t, text).sample
    assert model.lsa_layout == "self"
    assert (shifted - plain).abs().max() > 1e-3


def test_trained_adapters_change_the_output():
    model = simda.build_unet("tiny")
    sample, t, text = video_inputs(frames=2)
    with torch.no_grad():
        before = model(sample, t, text).sample
        for m in model.modules():
            if isinstance(m, simda.TemporalAdapter):
                m.w_up.normal_()
        assert (model(sample, t, text).sample - before).abs().max() > 1e-3


@pytest.mark.parametrize("checkpointing", [True, False])
def test_every_adapter_trains(checkpointing):
    """The released SimDA code skips 15 of 16 temporal adapters under checkpointing."""
    model = simda.build_unet("tiny").train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    adapters = [
        m for m in model.modules() if isinstance(m, simda.SpatialAdapter | simda.TemporalAdapter)
    ]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sample, t, text = video_inputs(frames=3)
    for step in range(2):
        opt.zero_grad()
        model(sample, t, text).sample.square().mean().backward()
        for m in adapters:
            # Step 1: only the zero-initialised up-projections get gradients; step 2: everything.
            out_params = [m.fc2.weight] if isinstance(m, simda.SpatialAdapter) else [m.w_up]
            params = out_params if step == 0 else list(m.parameters())
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params), m
        opt.step()


def test_mixed_precision_autocast_trains_fp32_adapters():
    """Under autocast (here CPU bf16; fp16/bf16 on GPU) the feature maps reach the temporal
    adapters in low precision while their weights stay fp32: the adapters cast like autocast's
    GEMMs instead of refusing the mix, and the fp32 weights get gradients."""
    model = simda.build_unet("tiny").train()
    with torch.no_grad():  # non-zero up-projections, so every adapter affects the output
        for m in model.modules():
            if isinstance(m, simda.TemporalAdapter):
                m.w_up.normal_(std=0.02)
    sample, t, text = video_inputs(frames=3)
    want = model(sample, t, text).sample
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(sample, t, text).sample
    assert got.dtype == torch.float32 or got.dtype == torch.bfloat16
    err = (got.float() - want).abs().max() / want.abs().max()
    assert 0 < err < 0.05, err
    got.float().square().mean().backward()
    adapters = [m for m in model.modules() if isinstance(m, simda.TemporalAdapter)]
    for m in adapters:
        assert m.w_down.dtype == torch.float32
        assert m.w_down.grad is not None and m.w_down.grad.abs().sum() > 0, m


def test_gradients_stay_out_of_the_frozen_model():
    model = simda.build_unet("tiny")
    sample, t, text = video_inputs(frames=2)
    model(sample, t, text).sample.mean().backward()
    assert all(p.grad is None for p in model.unet.conv_in.parameters())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_build_in_low_precision(dtype):
    model = simda.build_unet("tiny", dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}


def test_bad_sample_rank():
    model = simda.build_unet("tiny")
    with pytest.raises(ValueError, match="sample must be a 5-D video latent"):
        model(torch.randn(2, 4, 8, 8), 10, torch.randn(2, 5, 32))


def test_bad_text_batch():
    model = simda.build_unet("tiny")
    with pytest.raises(ValueError, match="encoder_hidden_states must be"):
        model(torch.randn(2, 4, 2, 8, 8), 10, torch.randn(3, 5, 32))


def test_bad_channels():
    model = simda.build_unet("tiny")
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 3, 2, 8, 8), 10, torch.randn(1, 5, 32))


@pytest.mark.parametrize(
    "sample, timestep, text, error, match",
    [
        ((1, 4, 0, 8, 8), 10, (1, 5, 32), ValueError, "B, F, H, W >= 1"),
        ((1, 4, 2, 8, 8), 10, (1, 5, 31), ValueError, "D=32"),
        ((1, 4, 2, 8, 8), 10, None, ValueError, "got NoneType"),
        ((1, 4, 2, 8, 8), "10", (1, 5, 32), TypeError, "timestep must be a number"),
        ((1, 4, 2, 8, 8), 10, torch.float64, TypeError, "encoder_hidden_states is torch.float64"),
    ],
)
def test_forward_checks_its_inputs(sample, timestep, text, error, match):
    model = simda.build_unet("tiny")
    if isinstance(text, tuple):
        text = torch.randn(text)
    elif isinstance(text, torch.dtype):
        text = torch.randn(1, 5, 32, dtype=text)
    with pytest.raises(error, match=match):
        model(torch.randn(sample), timestep, text)


def test_forward_names_a_tensor_on_another_device():
    model = simda.build_unet("tiny")
    sample, text = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 5, 32)
    with pytest.raises(ValueError, match="encoder_hidden_states is on meta but the UNet's"):
        model(sample, 10, text.to("meta"))
    with pytest.raises(ValueError, match="sample is on meta but the UNet's weights are on cpu"):
        model(sample.to("meta"), 10, text)


def test_unknown_preset_and_layout():
    with pytest.raises(ValueError, match="preset must be one of"):
        simda.build_unet("sdxl")
    with pytest.raises(ValueError, match="lsa_layout must be one of"):
        simda.build_unet("tiny", lsa_layout="diagonal")
    with pytest.raises(ValueError, match="temporal_act must be one of"):
        simda.build_unet("tiny", temporal_act="relu")


def test_inflate_checks_its_argument():
    with pytest.raises(TypeError, match="UNet2DConditionModel"):
        simda.inflate(torch.nn.Linear(2, 2))
    model = simda.build_unet("tiny")
    with pytest.raises(ValueError, match="already inflated"):
        simda.inflate(model.unet)


def test_image_state_dict_loads_into_the_video_unet():
    unet2d = randomise_base(image_unet())
    model = simda.build_unet("tiny")
    result = model.unet.load_state_dict(unet2d.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all("adapter" in k for k in result.missing_keys)


def test_remove_components_for_ablations():
    from simda.unet import remove_components

    model = simda.build_unet("tiny")
    full = simda.count_parameters(model)
    remove_components(model, temporal=True, lsa=True)
    counts = simda.count_parameters(model)
    assert counts["trainable"] == full["spatial_adapters"]
    assert model.lsa_layout == "self"
    for m in model.modules():
        if isinstance(m, simda.TemporalAdapter):
            assert not m.w_up.any() and not m.w_up.requires_grad
    remove_components(model, spatial=True)
    assert simda.count_parameters(model)["trainable"] == 0


def test_temporal_adapter_and_inflate_check_their_arguments_first():
    from simda.adapters import TemporalAdapter

    adapter = TemporalAdapter(8)
    with pytest.raises(ValueError, match="frames must be an int >= 1 that divides"):
        adapter(torch.randn(6, 8, 4, 4), 4)
    with pytest.raises(ValueError, match="x must be 4-D"):
        adapter(torch.randn(1, 6, 8, 4, 4), 2)
    with pytest.raises(ValueError, match="channels must be an int >= 2"):
        TemporalAdapter(1)
    unet = UNet2DConditionModel(**unet2d_config("tiny"))
    before = copy.deepcopy(unet.state_dict())
    with pytest.raises(ValueError, match="temporal_act must be one of"):
        simda.inflate(unet, temporal_act="relu")
    assert unet.state_dict().keys() == before.keys()  # untouched: inflating again works
    assert isinstance(simda.inflate(unet), simda.SimDAUNet)
