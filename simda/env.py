"""``simda env``: versions, GPUs, which kernel each op runs and the CPU thread policy in force,
to paste into a bug report.

``collect()`` gathers it as a dict (``simda env --json`` prints that), ``report()`` formats
it as text. Neither builds, compiles or downloads anything: with ``SIMDA_JIT_BUILD=1`` set,
the extension's state is reported as found, not built.
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
    """The measured shapes at which ``backend="auto"`` runs the fused attention kernel on a
    GPU of this capability, for inference (``"forward"``) and for training
    (``"forward+backward"``): each ``{"dtype", "D", "N"}``. Empty lists when no
    ``simda_kernels/measured/lsa-sm*.json`` was recorded on such a card."""
    import torch

    from simda_kernels import dispatch

    wins: dict[str, list[dict]] = {"forward": [], "forward+backward": []}
    for row in dispatch.MEASUREMENTS.get(tuple(capability), ()):
        dtype = getattr(torch, str(row.get("dtype")), None)
        if not isinstance(dtype, torch.dtype) or not row.get("N") or not row.get("D"):
            continue
        shape = {"dtype": row["dtype"], "D": row["D"], "N": row["N"]}
        for key, backward in (("forward", False), ("forward+backward", True)):
            if dispatch.triton_wins(row["N"], row["D"], dtype, capability, backward=backward):
                if shape not in wins[key]:
                    wins[key].append(shape)
    return wins


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
            }
        )
    return gpus


def collect() -> dict:
    """Everything ``simda env`` reports, as plain data (JSON-serialisable)."""
    import torch

    import simda
    from simda import cpu
    from simda_kernels import dispatch, lsa, temporal_adapter

    ext = temporal_adapter.extension(jit=False)
    archs = temporal_adapter.extension_archs(ext)
    return {
        "simda": simda.__version__,
        "simda_path": os.path.dirname(os.path.abspath(simda.__file__)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # torch's own version string carries the build tag (2.14.1+cu130)
        "packages": {name: _version(name) for name in PACKAGES} | {"torch": torch.__version__},
        "torch_cuda": torch.version.cuda,  # None for a CPU build of torch
        "cuda_available": torch.cuda.is_available(),
        "gpus": _gpus(ext, archs),
        "triton": {"installed": lsa.HAS_TRITON, "interpreter": lsa.INTERPRET},
        "extension": {
            "built": ext is not None,
            "path": getattr(ext, "__file__", None),
            "archs": list(archs) if archs is not None else None,
            "error": None if ext is not None else temporal_adapter.extension_error(),
            "jit_opt_in": os.environ.get("SIMDA_JIT_BUILD", "0") == "1",
        },
        "lsa_measurements": sorted(f"sm{a}{b}" for a, b in dispatch.MEASUREMENTS),
        "ffmpeg": _ffmpeg(),
        "cpu": cpu.collect(),
    }


def _shapes(shapes: list[dict]) -> str:
    return ", ".join(f"{s['dtype']} D={s['D']} N={s['N']}" for s in shapes) or "none"


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
                f"lsa-sm{major}{minor}.json`); backend='triton' forces the kernel"
            )
        else:
            auto = gpu["lsa_auto"]
            lsa_text = (
                f"triton where measured faster, at these shapes and at N within 2x of them "
                f"(same dtype and D): inference {_shapes(auto['forward'])}; "
                f"training {_shapes(auto['forward+backward'])}; the reference elsewhere"
            )
        lines.append(f'  backend="auto": latent_shift_attention -> {lsa_text}')
        adapter = (
            "cuda (the extension)"
            if gpu["adapter_auto"] == "cuda"
            else "reference (the extension is not built)"
        )
        if gpu["adapter_arch_note"]:
            adapter += f"; but {gpu['adapter_arch_note']}"
        lines.append(f'  backend="auto": fused_temporal_adapter -> {adapter}')
    return "\n".join(lines)
