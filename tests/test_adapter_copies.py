"""The SimDA UNet with the fused temporal adapter copies neither the adapters' input nor their
output nor the gradient of their output: the op writes y in the layout the up-projection reads
next (frame-major, returned as a view) and its backward takes the gradient as autograd hands
it. Checked on CPU with the emulated CUDA kernels behind the registered op (its CPU kernels
disabled): every aten op of a forward and backward is recorded, and no clone or copy reads or
writes memory of an adapter's x, y or dy."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import simda
from simda_kernels import dispatch, temporal_adapter
from tests.conftest import requires_cuda
from tests.test_model import video_inputs

COPIES = {
    torch.ops.aten.clone.default,
    torch.ops.aten.copy_.default,
    torch.ops.aten._to_copy.default,
}
FORWARD = torch.ops.simda.fused_temporal_adapter.default
BACKWARD = torch.ops.simda.fused_temporal_adapter_backward.default


class OpLog(TorchDispatchMode):
    """Every op below autograd: (op, tensor arguments, tensor outputs)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = lambda v: [
            t for t in torch.utils._pytree.tree_leaves(v) if isinstance(t, torch.Tensor)
        ]  # noqa: E731
        self.calls.append((func, flat((args, kwargs)), flat(out)))
        return out


def storage(t):
    return t.untyped_storage().data_ptr()


def adapter_copies(log):
    """The copies that touch memory of an adapter's x, y or dy, and how many adapter calls ran."""
    adapter = set()
    for func, inputs, outputs in log.calls:
        if func is FORWARD:
            adapter |= {storage(inputs[0]), storage(outputs[0])}
        if func is BACKWARD:
            adapter |= {storage(inputs[0]), storage(inputs[1])}
    copies = [
        (func, [tuple(t.shape) for t in inputs])
        for func, inputs, outputs in log.calls
        if func in COPIES and adapter & {storage(t) for t in (*inputs, *outputs)}
    ]
    counts = (
        sum(func is FORWARD for func, _, _ in log.calls),
        sum(func is BACKWARD for func, _, _ in log.calls),
    )
    return copies, counts


@pytest.fixture
def emulated_op(monkeypatch):
    """The registered op on CPU tensors runs the emulated sm_90 kernels, as on a GPU."""
    from tests import cuda_emulator

    if cuda_emulator.cuda_include_dir() is None:
        pytest.skip("the CUDA emulator needs the CUDA headers (a toolkit or torch's nvidia wheels)")
    ext = cuda_emulator.EmulatedExtension(cuda_emulator.load().sm90)
    monkeypatch.setattr(temporal_adapter, "_EXT", ext)
    monkeypatch.setattr(dispatch, "_adapter_backend", lambda backend, x: "cuda")
    forward, backward = temporal_adapter.adapter_op, temporal_adapter.adapter_backward_op
    with forward.set_kernel_enabled("cpu", False), backward.set_kernel_enabled("cpu", False):
        yield ext


def step(model, device="cpu", dtype=torch.float32):
    """A forward and backward of the UNet, every op logged."""
    sample, t, text = (v.to(device) for v in video_inputs(b=2, frames=3))
    sample, text = sample.to(dtype), text.to(dtype)
    log = OpLog()
    with log:
        model(sample, t, text).sample.square().mean().backward()
    return log


def tiny_unet(device="cpu", dtype=torch.float32):
    model = simda.build_unet("tiny").to(device, dtype).train()
    with torch.no_grad():  # non-zero up-projections: gradients flow into every adapter
        for m in model.modules():
            if isinstance(m, simda.TemporalAdapter):
                m.w_up.normal_(std=0.02)
    return model


def test_unet_step_copies_no_adapter_tensor(emulated_op):
    model = tiny_unet()
    copies, counts = adapter_copies(step(model))
    assert counts == (16, 16)  # every temporal adapter ran the kernels, forward and backward
    assert emulated_op.calls == 32
    assert copies == []
    for m in model.modules():
        if isinstance(m, simda.TemporalAdapter):
            assert m.w_down.grad is not None and m.w_down.grad.abs().sum() > 0


def test_the_check_sees_the_copy_of_an_output_in_the_old_layout(emulated_op, monkeypatch):
    """y returned as contiguous (B, R, F, H, W), as before: the model's read-back as
    (B*F, R, H, W) copies it, 16 times, and the check says so."""
    real = emulated_op.temporal_adapter_forward
    monkeypatch.setattr(emulated_op, "temporal_adapter_forward", lambda *a: real(*a).contiguous())
    copies, _ = adapter_copies(step(tiny_unet()))
    assert len([c for c in copies if c[0] is torch.ops.aten.clone.default]) >= 16


def test_the_check_sees_a_copy_of_the_gradient(emulated_op, monkeypatch):
    """The backward making the gradient contiguous first, as before: seen 16 times."""
    real = temporal_adapter.adapter_backward_op
    monkeypatch.setattr(
        temporal_adapter, "adapter_backward_op", lambda grad, *a: real(grad.contiguous(), *a)
    )
    copies, _ = adapter_copies(step(tiny_unet()))
    assert len([c for c in copies if c[0] is torch.ops.aten.clone.default]) >= 16


@requires_cuda
@pytest.mark.gpu
def test_gpu_unet_step_copies_no_adapter_tensor():
    """The same on a GPU, fp16, through the extension (backend='cuda')."""
    if temporal_adapter.extension() is None:
        pytest.skip(temporal_adapter.extension_error())
    model = tiny_unet("cuda", torch.float16)
    simda.optimize(model, attention=False, adapter_backend="cuda")
    copies, counts = adapter_copies(step(model, "cuda", torch.float16))
    assert counts == (16, 16) and copies == []
