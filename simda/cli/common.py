"""What the ``simda`` commands share: options, the model they load, the files they write.

torch and diffusers are imported inside the functions that need them, so that ``simda --help``
and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import warnings
from typing import TYPE_CHECKING

import numpy as np

from simda.errors import SimDAError

if TYPE_CHECKING:
    import torch

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # names in torch
#: simda.pipelines.windows.WEIGHTINGS, spelled out: the parser is built without torch (tested)
WEIGHTINGS = ("pyramid", "flat", "delayed_reverse_sawtooth", "context")
logger = logging.getLogger("simda")


# ----------------------------------------------------------------------------- devices


def device(name: str | None) -> torch.device:
    """``--device``: cpu, cuda or cuda:N; ``auto`` (or None) takes the GPU when there is one."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError as exc:
        raise SimDAError(f"--device {name!r} is not a device ({exc})") from exc
    if chosen.type not in ("cpu", "cuda"):
        raise SimDAError(f"--device {name!r}: simda runs on cpu or cuda (cuda:N)")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise SimDAError(f"--device {name} needs a CUDA GPU, and this machine has none")
    return chosen


def rank_device(chosen: torch.device) -> torch.device:
    """Under torchrun (WORLD_SIZE > 1) each rank takes the GPU of its LOCAL_RANK when the
    device names no index, and makes it current (NCCL works on the current device)."""
    import torch

    if chosen.type != "cuda" or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return chosen
    if chosen.index is None:
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if chosen.index >= torch.cuda.device_count():
        raise SimDAError(
            f"rank with LOCAL_RANK={os.environ.get('LOCAL_RANK')} wants {chosen}, but this "
            f"machine has {torch.cuda.device_count()} GPU(s)"
        )
    torch.cuda.set_device(chosen)
    return chosen


def torch_dtype(args, chosen: torch.device) -> torch.dtype:
    """``--dtype`` as a torch dtype, refused where it cannot run."""
    import torch

    dtype = getattr(torch, DTYPES[args.dtype])
    if dtype == torch.float16 and chosen.type != "cuda":
        raise SimDAError("--dtype fp16 needs --device cuda (use fp32 or bf16 on CPU)")
    if getattr(args, "mixed_precision", None) and chosen.type != "cuda":
        raise SimDAError("--mixed-precision needs --device cuda")
    return dtype


# ----------------------------------------------------------------------------- the model


def load_pipeline(args, chosen=None):
    """The model of ``--model`` (a folder), else the built-in toy-world model (else a randomly
    initialised tiny one), with ``--adapters``, ``--scheduler``, ``--dtype``, ``--variant`` on
    ``--device``, optimized unless ``--no-optimize``."""
    from simda import toyworld
    from simda.pipelines import SimDAPipeline
    from simda.pipelines.t2v import dtype_argument
    from simda.schedulers import make_scheduler

    chosen = chosen or device(args.device)
    args.device = str(chosen)  # the settings JSON records the device used
    dtype = torch_dtype(args, chosen)
    kwargs = {**dtype_argument(dtype), "adapters": args.adapters}
    if getattr(args, "variant", None):
        kwargs["variant"] = args.variant
    if args.model:
        pipe = SimDAPipeline.from_pretrained(args.model, **kwargs)
    else:
        pipe = toyworld.load_shipped(**kwargs)
        if pipe is None:
            pipe = SimDAPipeline.from_preset("tiny", seed=args.seed).to(dtype)
            if args.adapters:
                pipe.load_adapters(args.adapters)
    pipe.to(chosen)
    if getattr(args, "scheduler", None):
        pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    if args.quiet:
        pipe.set_progress_bar_config(disable=True)
    if not args.no_optimize:
        from simda.optimization import optimize

        optimize(pipe)
    return pipe


def resolve_sampling(args, pipe) -> None:
    """Fill sampling options left unset (steps, guidance, frames, height, width) with the
    model's recommended settings, so that the settings JSON records the values used."""
    size = getattr(args, "size", None)
    if size is not None:  # --size: both sides, but for one given on its own
        args.height = args.height if args.height_given else size
        args.width = args.width if args.width_given else size
    defaults = pipe.sampling_defaults
    for option, key in (
        ("steps", "num_inference_steps"),
        ("guidance", "guidance_scale"),
        ("frames", "num_frames"),
        ("height", "height"),
        ("width", "width"),
    ):
        if getattr(args, option, False) is None:
            setattr(args, option, defaults[key])


# ----------------------------------------------------------------------------- outputs


def slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "video"


def write_outputs(output: str, name: str, frames: np.ndarray, settings: dict, fps: int = 8):
    """uint8 frames (F, H, W, 3) as ``name``.mp4, .gif, .png (all frames in a row) and the
    settings as .json, in ``output``; returns the paths."""
    from PIL import Image

    from simda.video import write_video

    os.makedirs(output, exist_ok=True)
    paths = [
        write_video(os.path.join(output, f"{name}.mp4"), frames, fps),
        write_video(os.path.join(output, f"{name}.gif"), frames, fps),
    ]
    png = os.path.join(output, f"{name}.png")
    gap = np.full((frames.shape[1], 2, 3), 128, np.uint8)  # grey line between frames
    strip = [part for frame in frames for part in (frame, gap)][:-1]
    Image.fromarray(np.concatenate(strip, axis=1)).save(png)
    meta = os.path.join(output, f"{name}.json")
    with open(meta, "w") as f:
        json.dump(settings, f, indent=1, default=str)
    return [*paths, png, meta]


def settings(args, **extra) -> dict:
    """The command's options and ``extra``, with the torch version: the settings JSON."""
    import torch

    skip = {"func", "debug", "height_given", "width_given"}
    return {
        **{k: v for k, v in vars(args).items() if k not in skip},
        **extra,
        "torch": torch.__version__,
    }


def tuning_summary(tuning) -> dict:
    return {
        "tuned_parameters": tuning.tuned_parameters,
        "seconds_per_step": round(tuning.seconds_per_step, 4),
        "peak_memory_mib": tuning.peak_memory_mib,
        "final_loss": tuning.losses[-1] if tuning.losses else None,
    }


def loss_plot(losses, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(losses, lw=1, alpha=0.5, label="loss")
    if len(losses) >= 10:
        k = max(5, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(k - 1, len(losses)), smooth, lw=2, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("diffusion loss (MSE on the model's target)")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- paths


def check_output_folder(path: str, option: str = "--output") -> None:
    """Refuse, before any work, a folder that cannot be made or written (a file in the way, a
    read-only parent), instead of failing when the results are saved."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise SimDAError(f"{option} {path!r} is a file, not a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise SimDAError(f"{option} {path!r}: {existing!r} is a file, so the folder cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SimDAError(f"{option} {path!r}: {existing!r} is not writable")


def check_new_folder(path: str, option: str) -> None:
    """A folder to save a whole model into: writable and holding no files yet."""
    check_output_folder(path, option)
    if os.path.isdir(path) and os.listdir(path):
        raise SimDAError(
            f"{option} {path!r} already holds files: pick a new folder or delete it first "
            "(nothing was overwritten)"
        )


# ----------------------------------------------------------------------------- options


def file_name(text: str) -> str:
    """--name: a file name without folders; a video or image extension is dropped (every
    format is written)."""
    if not text or text in (".", "..") or "/" in text or os.sep in text:
        raise argparse.ArgumentTypeError(f"must be a file name without folders, got {text!r}")
    stem, ext = os.path.splitext(text)
    return stem if ext.lower() in (".mp4", ".gif", ".png", ".json") and stem else text


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


class _Given(argparse.Action):
    """Store the value and note that it was given (``--height`` beside ``--size``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def add_size(p, what: str = "the model's recommendation") -> None:
    """``--size`` (square), ``--height`` and ``--width`` in pixels."""
    p.add_argument("--size", type=positive_int, help=f"height = width in pixels (default: {what})")
    for side in ("height", "width"):
        p.add_argument(
            f"--{side}",
            type=positive_int,
            action=_Given,
            help=f"{side} in pixels, beside or instead of --size (default: {what})",
        )
    p.set_defaults(height_given=False, width_given=False)


def add_context(p) -> None:
    """Context-window options (clips longer than the model's training clips)."""
    p.add_argument(
        "--context-frames",
        type=positive_int,
        help="frames per context window (default: the clip length the model was trained on); "
        "windows turn on by themselves for longer clips",
    )
    p.add_argument(
        "--context-stride",
        type=positive_int,
        default=4,
        help="frames between the starts of two windows (default 4)",
    )
    p.add_argument(
        "--weighting",
        choices=WEIGHTINGS,
        default="pyramid",
        help="how overlapping windows are blended (default pyramid)",
    )
    p.add_argument(
        "--window-batch",
        type=positive_int,
        default=4,
        help="windows per UNet call (memory of that many windows; default 4)",
    )


def apply_context(args, pipe, frames: int) -> None:
    """Context windows on when ``frames`` exceed a window (``--context-frames``, else the
    model's clip length), said in one line."""
    length = args.context_frames or pipe.config.sampling.get("num_frames")
    if length is None or frames <= length:
        return
    pipe.enable_free_noise(
        length, args.context_stride, args.weighting, window_batch=args.window_batch
    )
    logger.info(
        "%d frames, more than the %d-frame clips the model knows: context windows of %d "
        "frames every %d, blended %s",
        frames,
        length,
        length,
        args.context_stride,
        args.weighting,
    )


def add_mixed_precision(p) -> None:
    p.add_argument(
        "--mixed-precision",
        choices=("fp16", "bf16"),
        help="autocast the UNet on CUDA (fp32 weights; fp16 with loss scaling; default: off)",
    )


def add_scheduler(p) -> None:
    from simda.schedulers import SCHEDULERS

    p.add_argument(
        "--scheduler",
        choices=tuple(SCHEDULERS),
        help="sample with this scheduler (default: the model folder's own)",
    )


def add_common(p, model: bool = True) -> None:
    """Options of every command that loads a model: seed, device, dtype, output, quiet, debug,
    and (``model``) the model, its adapters, weight variant and kernels."""
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default="fp32",
        help="weights and activations of the model (default fp32)",
    )
    p.add_argument("--output", default="out", help="output folder (default out/)")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars, and only warnings and errors from simda, diffusers, transformers",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    if model:
        p.add_argument(
            "--model",
            help="a local diffusers SD-1.x folder (or one saved by simda); "
            "default: the built-in model",
        )
        p.add_argument(
            "--adapters",
            help="trained adapters to load: a .safetensors file or a SimDAAdapters folder",
        )
        p.add_argument(
            "--variant", help="weights variant of the model folder, e.g. fp16 (default: none)"
        )
        p.add_argument(
            "--no-optimize",
            action="store_true",
            help="keep the reference kernels (skip simda.optimize)",
        )


def add_sampling(p, steps=None, why="", superres=False, guidance_default=None) -> None:
    """Sampling options. ``steps`` fixes the default (``why`` says where it comes from); left
    None, the model's recommendation fills options in (``resolve_sampling``). ``superres``:
    frames are read from the input clip (default all) and the size follows it."""

    def default(value, fallback):
        return f"{value}{why}" if value else f"the model's recommendation, else {fallback}"

    if superres:
        p.add_argument(
            "--frames", type=positive_int, help="frames of the clip to read (default: all)"
        )
    else:
        p.add_argument(
            "--frames",
            type=positive_int,
            help="number of frames (default: the model's recommendation, else 16)",
        )
        add_size(p)
    p.add_argument(
        "--steps",
        type=positive_int,
        default=steps,
        help=f"denoising steps (default: {default(steps, 50)})",
    )
    p.add_argument(
        "--guidance",
        type=float,
        help=f"classifier-free guidance scale (default: {guidance_default or default(None, 7.5)})",
    )
    add_scheduler(p)
    p.add_argument("--name", type=file_name, help="output file name without extension")


# ----------------------------------------------------------------------------- messages


def one_line_warnings(command: str):
    """Warnings of a command as one line each: ``simda CMD: warning: MESSAGE``. Deprecation
    notices (about libraries, for developers) keep Python's own format and filters."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DeprecationWarning | PendingDeprecationWarning | FutureWarning):
            return default(message, category, filename, lineno, file, line)
        print(f"simda {command}: warning: {message}", file=sys.stderr if file is None else file)

    return show


@contextlib.contextmanager
def logging_for(command: str, quiet: bool):
    """While a command runs, the ``simda`` logger prints ``simda CMD: MESSAGE`` lines on stderr
    (info and above; warnings and above with ``--quiet``, which also quiets diffusers and
    transformers and their progress bars); afterwards every logger is as it was."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"simda {command}: %(message)s"))
    names = ("simda", "diffusers", "transformers")
    before = {n: (logging.getLogger(n).level, logging.getLogger(n).propagate) for n in names}
    saved_handlers = list(logger.handlers)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    bars = _library_progress_bars(False) if quiet else {}
    if quiet:
        for name in ("diffusers", "transformers"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.handlers[:] = saved_handlers
        for name, (level, propagate) in before.items():
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).propagate = propagate
        for restore in bars.values():
            restore()


def _library_progress_bars(enabled: bool) -> dict:
    """Switch diffusers' and transformers' own progress bars (those importable); returns
    functions that put each back."""
    restore = {}
    for name in ("diffusers", "transformers"):
        try:
            module = __import__(f"{name}.utils.logging", fromlist=["x"])
        except ImportError:
            continue
        was = module.is_progress_bar_enabled()
        (module.enable_progress_bar if enabled else module.disable_progress_bar)()
        restore[name] = module.enable_progress_bar if was else module.disable_progress_bar
    return restore
