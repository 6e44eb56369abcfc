"""``simda env``: versions, GPUs, which kernel each op runs and the CPU thread policy in force,
to paste into a bug report.

``collect()`` gathers it as a dict (``simda env --json`` prints that), ``report()`` formats
it as text. Neither builds, compiles or downloads anything: with ``SIMDA_JIT_BUILD=1`` set,
the extension's state is reported as found, not built. On each GPU the extension has kernels
for, ``collect()`` runs the adapter's on-device self-check in every dtype (milliseconds;
``simda_kernels.selfcheck``), as ``backend="auto"`` would on first use; the Triton attention's
check, which compiles its kernels, is reported only where it already ran in this process.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

#: distributions whose versions are reported (``None`` when not installed)
PACKAGES = (
    "torch",
    "triton",
    "diffusers",
    "transformers",
    "safetensors",
    "numpy",
    "imageio",
    "imageio-ffmpeg",
)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ffmpeg() -> dict:
    try:
        import imageio_ffmpeg

        return {"found": True, "path": imageio_ffmpeg.get_ffmpeg_exe()}
    except Exception as exc:  # ImportError, or imageio-ffmpeg's RuntimeError: no binary
        return {"found": False, "error": str(exc).splitlines()[0] if str(exc) else repr(exc)}


def lsa_auto_shapes(capability) -> dict[str, list[dict]]:
    """The measured shapes at which ``backend="auto"`` runs a fast attention path (FlexAttention
    or the Triton kernel) on a GPU of this capability, for inference (``"forward"``) and for
    training (``"forward+backward"``): each ``{"dtype", "D", "N", "backend"}``. Empty lists
    when no ``simda_kernels/measured/lsa-sm*.json`` was recorded on such a card."""
    import torch

    from simda_kernels import dispatch

    wins: dict[str, list[dict]] = {"forward": [], "forward+backward": []}
    for row in dispatch.MEASUREMENTS.get(tuple(capability), ()):
        dtype = getattr(torch, str(row.get("dtype")), None)
        if not isinstance(dtype, torch.dtype) or not row.get("N") or not row.get("D"):
            continue
        for key, backward in (("forward", False), ("forward+backward", True)):
            choice = dispatch.measured_backend(row["N"], row["D"], dtype, capability, backward)
            shape = {"dtype": row["dtype"], "D": row["D"], "N": row["N"], "backend": choice}
            if choice != "reference" and shape not in wins[key]:
                wins[key].append(shape)
    return wins


ADAPTER_DTYPES = ("float16", "bfloat16", "float32")


def _adapter_checks(index: int) -> dict[str, str | None]:
    """The adapter's self-check on GPU ``index`` in every dtype: None where it passed, else
    the error (also what ``backend="auto"`` then does in this process)."""
    import warnings

    import torch

    from simda_kernels import selfcheck

    device = torch.device("cuda", index)
    with warnings.catch_warnings():  # the report says it
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in ADAPTER_DTYPES:
            check = selfcheck.check_temporal_adapter
            selfcheck.passed("fused_temporal_adapter", device, getattr(torch, name), check)
    return {
        str(r.dtype).split(".")[-1]: r.error
        for r in selfcheck.results()
        if r.op == "fused_temporal_adapter" and r.device == index
    }


def _gpus(ext, archs) -> list[dict]:
    """Each GPU and what ``backend="auto"`` runs on it, given the extension (or None) and the
    architectures it was built for."""
    import torch

    from simda_kernels import dispatch, lsa, temporal_adapter

    gpus = []
    if not torch.cuda.is_available():
        return gpus
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        capability = (props.major, props.minor)
        measured = capability in dispatch.MEASUREMENTS
        runs = ext is not None and temporal_adapter.runs_on(capability, archs) is not False
        gpus.append(
            {
                "index": index,
                "name": props.name,
                "capability": list(capability),
                "memory_gib": round(props.total_memory / 2**30, 1),
                "lsa_measured": measured,
                "lsa_auto": lsa_auto_shapes(capability) if lsa.HAS_TRITON else None,
                "adapter_auto": "cuda" if ext is not None else "reference",
                "adapter_arch_note": temporal_adapter.arch_fit(capability, archs),
                "adapter_self_check": _adapter_checks(index) if runs else None,
            }
        )
    return gpus


def collect() -> dict:
    """Everything ``simda env`` reports, as plain data (JSON-serialisable)."""
    import torch

    import simda
    from simda import cpu
    from simda_kernels import dispatch, lsa, selfcheck, temporal_adapter

    ext = temporal_adapter.extension(jit=False)
    archs = temporal_adapter.extension_archs(ext)
    gpus = _gpus(ext, archs)  # (runs the adapter's self-checks)
    return {
        "simda": simda.__version__,
        "simda_path": os.path.dirname(os.path.abspath(simda.__file__)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # torch's own version string carries the build tag (2.14.1+cu130)
        "packages": {name: _version(name) for name in PACKAGES} | {"torch": torch.__version__},
        "torch_cuda": torch.version.cuda,  # None for a CPU build of torch
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpus,
        "triton": {"installed": lsa.HAS_TRITON, "interpreter": lsa.INTERPRET},
        "extension": {
            "built": ext is not None,
            "path": getattr(ext, "__file__", None),
            "archs": list(archs) if archs is not None else None,
            "error": None if ext is not None else temporal_adapter.extension_error(),
            "jit_opt_in": os.environ.get("SIMDA_JIT_BUILD", "0") == "1",
        },
        "lsa_measurements": sorted(f"sm{a}{b}" for a, b in dispatch.MEASUREMENTS),
        "self_checks": [_result(r) for r in selfcheck.results()],
        "ffmpeg": _ffmpeg(),
        "cpu": cpu.collect(),
    }


def _result(r) -> dict:
    return {
        "op": r.op,
        "device": r.device,
        "name": r.name,
        "dtype": str(r.dtype).split(".")[-1],
        "passed": r.passed,
        "error": r.error,
    }


def _adapter_text(gpu: dict) -> str:
    """What ``backend="auto"`` runs for the adapter on this GPU, by dtype where the self-check
    ran."""
    if gpu["adapter_auto"] != "cuda":
        return "reference (the extension is not built)"
    checks = gpu["adapter_self_check"]
    if checks is None:
        text = "cuda (the extension)"
    elif not any(checks.values()):
        text = f"cuda (the extension; self-check passed in {', '.join(checks)})"
    else:
        ok = [name for name, error in checks.items() if error is None]
        failed = "; ".join(f"{name}: {error}" for name, error in checks.items() if error)
        used = ", ".join(ok) or "no dtype"
        text = f"cuda in {used}; the reference where the self-check failed ({failed})"
    if gpu["adapter_arch_note"]:
        text += f"; but {gpu['adapter_arch_note']}"
    return text


def _shapes(shapes: list[dict]) -> str:
    return ", ".join(f"{s['dtype']} D={s['D']} N={s['N']} {s['backend']}" for s in shapes) or "none"


def report(info: dict) -> str:
    """``collect()``'s dict as the text ``simda env`` prints."""
    lines = [
        f"simda {info['simda']} ({info['simda_path']})",
        f"Python {info['python']} ({info['platform']})",
    ]
    packages = info["packages"]
    width = max(map(len, packages))
    for name, version in packages.items():
        extra = ""
        if name == "torch" and version:
            cuda = info["torch_cuda"]
            extra = f" (CUDA {cuda} build)" if cuda else " (CPU build)"
        if name == "triton" and version and info["triton"]["interpreter"]:
            extra = " (TRITON_INTERPRET=1: kernels run in the CPU interpreter)"
        if name == "imageio-ffmpeg":
            ffmpeg = info["ffmpeg"]
            extra = (
                f" (ffmpeg: {ffmpeg['path']})"
                if ffmpeg["found"]
                else (f" (no ffmpeg: {ffmpeg['error']})")
            )
        lines.append(f"  {name:<{width}}  {version or 'not installed'}{extra}")

    from simda import cpu

    lines.append(cpu.describe(info["cpu"]))

    from simda_kernels import temporal_adapter

    ext = info["extension"]
    if ext["built"]:
        archs = temporal_adapter.arch_names(ext["archs"] or ()) or "unknown architectures"
        lines.append(f"CUDA extension simda_kernels._C: built for {archs} ({ext['path']})")
    else:
        how = (
            "SIMDA_JIT_BUILD=1 is set: it compiles on first use"
            if ext["jit_opt_in"]
            else "build it with `pip install --no-build-isolation .` on a CUDA machine, or set "
            "SIMDA_JIT_BUILD=1"
        )
        lines.append(f"CUDA extension simda_kernels._C: {ext['error']}; {how}")
    measured = ", ".join(info["lsa_measurements"]) or "none"
    lines.append(f"Attention measurements (simda_kernels/measured): {measured}")

    if not info["gpus"]:
        why = "" if info["cuda_available"] or info["torch_cuda"] else " (CPU build of torch)"
        lines.append(f"GPU: none{why}")
        lines.append(
            '  backend="auto": the PyTorch reference for both ops on CPU tensors '
            "(the fast paths need CUDA)"
        )
    for gpu in info["gpus"]:
        major, minor = gpu["capability"]
        lines.append(
            f"GPU {gpu['index']}: {gpu['name']} (sm_{major}{minor}, {gpu['memory_gib']} GiB)"
        )
        if gpu["lsa_auto"] is None:
            lsa_text = "reference (triton is not installed)"
        elif not gpu["lsa_measured"]:
            lsa_text = (
                f"reference: no measurement for sm_{major}{minor} (record one with "
                "`python -m benchmarks.bench_lsa --json simda_kernels/measured/"
                f"lsa-sm{major}{minor}.json`); backend='flex' or 'triton' forces a fast path"
            )
        else:
            auto = gpu["lsa_auto"]
            lsa_text = (
                f"the path measured fastest, at these shapes and at N within 2x of them "
                f"(same dtype and D): inference {_shapes(auto['forward'])}; "
                f"training {_shapes(auto['forward+backward'])}; the reference elsewhere"
            )
        lines.append(f'  backend="auto": latent_shift_attention -> {lsa_text}')
        lines.append(f'  backend="auto": fused_temporal_adapter -> {_adapter_text(gpu)}')
        for check in info["self_checks"]:
            if check["op"] == "latent_shift_attention" and check["device"] == gpu["index"]:
                verdict = "passed" if check["passed"] else f"failed: {check['error']}"
                lines.append(f"  self-check of the Triton attention, {check['dtype']}: {verdict}")
    return "\n".join(lines)
