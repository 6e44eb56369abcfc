"""The ``simda`` command: demo, generate, edit, train, superres, bench, env.

Every command takes ``--seed``, ``--device``, ``--dtype`` and ``--output`` (default ``out/``),
shows progress bars on long loops and writes mp4 + gif with the settings beside them (JSON).
User errors print one line and exit with code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
from typing import TYPE_CHECKING

import numpy as np

from simda.errors import SimDAError

if TYPE_CHECKING:
    import torch

# torch (and diffusers, through the pipelines) are imported inside the commands, so that
# `simda --help` and argument errors answer at once
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # names in torch


# ----------------------------------------------------------------------------- helpers


def _device(name: str | None) -> torch.device:
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SimDAError(f"--device {name!r} is not a device ({exc})") from exc
    if device.type not in ("cpu", "cuda"):
        raise SimDAError(f"--device {name!r}: simda runs on cpu or cuda (cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SimDAError(f"--device {name} needs a CUDA GPU, and this machine has none")
    return device


def _rank_device(device: torch.device) -> torch.device:
    """Under torchrun (WORLD_SIZE > 1) each rank takes the GPU of its LOCAL_RANK when the
    device names no index, and makes it current (NCCL works on the current device)."""
    import torch

    if device.type != "cuda" or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.index >= torch.cuda.device_count():
        raise SimDAError(
            f"rank with LOCAL_RANK={os.environ.get('LOCAL_RANK')} wants {device}, but this "
            f"machine has {torch.cuda.device_count()} GPU(s)"
        )
    torch.cuda.set_device(device)
    return device


def _dtype(args, device) -> torch.dtype:
    import torch

    dtype = getattr(torch, DTYPES[args.dtype])
    if dtype == torch.float16 and device.type != "cuda":
        raise SimDAError("--dtype fp16 needs --device cuda (use fp32 or bf16 on CPU)")
    if getattr(args, "mixed_precision", None) and device.type != "cuda":
        raise SimDAError("--mixed-precision needs --device cuda")
    return dtype


def load_pipeline(args, device=None):
    """The model of ``--model`` (a folder), else the built-in default."""
    import torch

    from simda.pipelines import SimDAPipeline

    device = device or _device(args.device)
    args.device = str(device)  # the settings JSON records the device used
    dtype = _dtype(args, device)
    torch.manual_seed(args.seed)
    if args.model:
        pipe = SimDAPipeline.from_pretrained(
            args.model, adapters=args.adapters, device=device, dtype=dtype
        )
    else:
        pipe = default_pipeline(device, dtype, args.seed)
        if args.adapters:
            from simda.checkpoint import load_adapters

            load_adapters(pipe.unet, args.adapters)
    if not args.no_optimize:
        from simda.optimization import optimize

        optimize(pipe)
    return pipe


def default_pipeline(device, dtype, seed=0):
    """The model used without ``--model``: the shipped toy-world model when present, else a
    randomly initialised tiny model."""
    from simda import toyworld
    from simda.pipelines import SimDAPipeline

    shipped = toyworld.shipped_folder()
    if shipped is not None:
        return SimDAPipeline.from_pretrained(shipped, device=device, dtype=dtype)
    return SimDAPipeline.from_preset("tiny", seed=seed, device=device, dtype=dtype)


def slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "video"


def write_outputs(output: str, name: str, frames: np.ndarray, settings: dict, fps: int = 8):
    from simda.video import write_video

    os.makedirs(output, exist_ok=True)
    paths = [
        write_video(os.path.join(output, f"{name}.mp4"), frames, fps),
        write_video(os.path.join(output, f"{name}.gif"), frames, fps),
    ]
    png = os.path.join(output, f"{name}.png")
    from PIL import Image

    gap = np.full((frames.shape[1], 2, 3), 128, np.uint8)  # grey line between frames
    strip = [part for frame in frames for part in (frame, gap)][:-1]
    Image.fromarray(np.concatenate(strip, axis=1)).save(png)  # all frames in a row
    meta = os.path.join(output, f"{name}.json")
    with open(meta, "w") as f:
        json.dump(settings, f, indent=1, default=str)
    return [*paths, png, meta]


def _settings(args, **extra) -> dict:
    import torch

    skip = {"func", "debug"}
    return {
        **{k: v for k, v in vars(args).items() if k not in skip},
        **extra,
        "torch": torch.__version__,
    }


# ----------------------------------------------------------------------------- commands


def cmd_generate(args) -> int:
    import torch

    pipe = load_pipeline(args)
    _resolve_sampling(args, pipe)
    generator = torch.Generator().manual_seed(args.seed)
    size = args.size = args.size or pipe.default_size
    start = time.perf_counter()
    out = pipe(
        args.prompt,
        num_frames=args.frames,
        height=size,
        width=size,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        negative_prompt=args.negative,
        generator=generator,
        progress=not args.quiet,
    )
    seconds = time.perf_counter() - start
    name = args.name or f"{slug(args.prompt)}-s{args.seed}"
    for path in write_outputs(
        args.output, name, out.frames[0], _settings(args, seconds=round(seconds, 3))
    ):
        print(path)
    return 0


def cmd_edit(args) -> int:
    from simda import toyworld
    from simda.pipelines import edit_video
    from simda.video import read_video, side_by_side

    pipe = load_pipeline(args)
    if args.guidance is None:
        args.guidance = toyworld.edit_guidance(pipe)
    size = args.size = args.size or pipe.default_size
    frames = read_video(args.video, args.frames, (size, size))
    result = edit_video(
        pipe,
        frames,
        args.prompt,
        args.edit,
        tune_steps=args.tune_steps,
        lr=args.lr,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        cache_dir=os.path.join(args.output, ".cache"),
        mixed_precision=args.mixed_precision,
        progress=not args.quiet,
    )
    name = args.name or slug(args.edit)
    summary = _tuning_summary(result.tuning)
    paths = write_outputs(args.output, name, result.edit, _settings(args, **summary))
    grid = side_by_side(result.source, result.reconstruction, result.edit)
    paths += write_outputs(args.output, f"{name}-side-by-side", grid, _settings(args))
    for path in paths:
        print(path)
    print(_loss_plot(result.tuning.losses, os.path.join(args.output, f"{name}-loss.png")))
    return 0


def cmd_train(args) -> int:
    from simda.pipelines import ClipDataset, TrainConfig, make_superres, train

    if args.save_pipeline:
        _check_new_folder(args.save_pipeline, "--save-pipeline")
    device = _rank_device(_device(args.device))
    pipe = load_pipeline(args, device)
    if args.superres:
        make_superres(pipe, args.superres)
    if args.ablate:
        from simda.unet import remove_components

        remove_components(pipe.unet, **{name: True for name in args.ablate})
    size = args.size = args.size or pipe.default_size
    dataset = ClipDataset(args.data, args.frames, size, size)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        caption_dropout=args.caption_dropout,
        gradient_checkpointing=not args.no_checkpointing,
        mixed_precision=args.mixed_precision,
        superres_scale=args.superres,
    )
    state = train(pipe, dataset, args.output, config, resume=args.resume, progress=not args.quiet)
    from simda.pipelines.training import _rank_world

    if _rank_world()[0] == 0:
        if args.save_pipeline:
            pipe.save_pretrained(args.save_pipeline)
        print(_loss_plot(state.losses, os.path.join(args.output, "loss.png")))
        print(os.path.join(args.output, "adapters.safetensors"))
    return 0


def cmd_superres(args) -> int:
    import torch

    from simda.pipelines import make_superres, upscale
    from simda.video import read_video

    low = read_video(args.video, args.frames)  # a bad clip fails before the model loads
    pipe = load_pipeline(args)
    if not pipe.config.get("superres"):
        print(
            f"simda superres: warning: {args.model or 'the built-in model'} was not trained for "
            "super-resolution (`simda train --superres SCALE`): its new input channels start at "
            "zero, so the output follows the prompt, not the low-resolution clip",
            file=sys.stderr,
        )
        make_superres(pipe)
    _resolve_sampling(args, pipe)
    args.scale = args.scale or pipe.config.get("superres_scale") or 2
    frames = upscale(
        pipe,
        low,
        args.prompt,
        scale=args.scale,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        generator=torch.Generator().manual_seed(args.seed),
        progress=not args.quiet,
    )
    name = args.name or f"{slug(os.path.splitext(os.path.basename(args.video))[0])}-x{args.scale}"
    for path in write_outputs(args.output, name, frames, _settings(args)):
        print(path)
    return 0


def cmd_bench(args) -> int:
    from benchmarks import report

    return report.main(args.bench_args)


def _split_bench(argv: list[str]):
    """``simda bench ARGS``: every argument but ``--debug`` goes to the report's own parser
    (argparse would take its options for ``simda``'s), ``--help`` included: it shows the
    report's real usage."""
    rest = argv[1:]
    return argparse.Namespace(
        command="bench",
        func=cmd_bench,
        debug="--debug" in rest,
        bench_args=[a for a in rest if a != "--debug"],
    )


def cmd_env(args) -> int:
    from simda import env

    info = env.collect()
    print(json.dumps(info, indent=2) if args.json else env.report(info))
    return 0


def cmd_demo(args) -> int:
    from simda.demo import run_demo

    return run_demo(args)


# The options each `simda toyworld` action uses (one parser serves the three).
TOYWORLD_OPTIONS = {
    "data": ("output", "clips", "seed"),
    "base": ("output", "steps", "batch_size", "lr", "seed", "device", "quiet"),
    "ship": ("model",),
}


def _reject_unused_toyworld_options(args) -> None:
    defaults = vars(build_parser().parse_args(["toyworld", args.action]))
    used = set(TOYWORLD_OPTIONS[args.action]) | {"action", "command", "func", "debug"}
    unused = [k for k, v in vars(args).items() if k not in used and v != defaults.get(k)]
    if unused:
        given = ", ".join("--" + k.replace("_", "-") for k in unused)
        takes = ", ".join("--" + k.replace("_", "-") for k in TOYWORLD_OPTIONS[args.action])
        raise SimDAError(f"toyworld {args.action} does not use {given} (it takes {takes})")


def cmd_toyworld(args) -> int:

    from simda import toyworld

    _reject_unused_toyworld_options(args)
    if args.action == "data":
        print(toyworld.write_dataset(args.output, args.clips, args.seed))
        return 0
    if args.action == "ship":
        if not args.model:
            raise SimDAError("toyworld ship needs --model (the trained pipeline folder)")
        print(f"{toyworld.ship(args.model)} (now holds {args.model})")
        return 0
    toyworld.check_new_model_folder(args.output)
    losses = toyworld.train_base(
        args.output,
        steps=args.steps,
        batch=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        progress=not args.quiet,
        device=_device(args.device),
    )
    print(_loss_plot(losses, os.path.join(args.output, "stage1-loss.png")))
    print(args.output)
    return 0


def cmd_eval_toyworld(args) -> int:
    from simda import toyworld

    pipe = load_pipeline(args)
    if not toyworld.is_toyworld(pipe):
        raise SimDAError("eval-toyworld needs a toy-world model (32x32 pixels, space-to-depth)")
    if args.captions is not None and not 1 <= args.captions <= len(toyworld.CAPTIONS):
        raise SimDAError(f"--captions must be in 1..{len(toyworld.CAPTIONS)}, got {args.captions}")
    captions = toyworld.caption_subset(args.captions or len(toyworld.CAPTIONS))
    _resolve_sampling(args, pipe)
    names = list(toyworld.ABLATIONS) if args.ablations else ["full model"]
    variants = {
        name: (lambda name=name: toyworld.ablate(pipe, **toyworld.ABLATIONS[name]))
        for name in names
    }
    for spec in args.variant or []:
        label, sep, folder = spec.partition("=")
        if not sep or not label or not folder:
            raise SimDAError(f"--variant expects LABEL=MODEL_FOLDER, got {spec!r}")
        if not os.path.isfile(os.path.join(folder, "model_index.json")):
            raise SimDAError(
                f"--variant {label!r}: {folder!r} is not a saved simda pipeline folder"
            )
        variants[label] = lambda folder=folder: load_pipeline(
            argparse.Namespace(**{**vars(args), "model": folder, "adapters": None})
        )
    rows = {}
    for name, make in variants.items():
        variant = make()
        rows[name] = toyworld.evaluate(
            variant,
            seeds=range(args.seed, args.seed + args.seeds),
            steps=args.steps,
            guidance=args.guidance,
            captions=captions,
            progress=not args.quiet,
        )
        print(
            f"{name}: colour {rows[name]['colour']:.1%}, direction "
            f"{rows[name]['direction']:.1%}, presence {rows[name]['presence']:.1%}"
        )
    settings = {
        "captions": len(captions),
        "seeds per caption": args.seeds,
        "first seed": args.seed,
        "DDIM steps": args.steps,
        "guidance": args.guidance,
        "model": args.model or "built-in",
    }
    text = toyworld.report(rows, settings)
    print(text)
    report = args.report or os.path.join(args.output, "eval-toyworld.md")
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report, "w") as f:
        f.write(text)
    with open(os.path.splitext(report)[0] + ".json", "w") as f:
        json.dump({"settings": settings, "rows": rows}, f, indent=1)
    print(report)
    return 0


def _tuning_summary(tuning) -> dict:
    return {
        "tuned_parameters": tuning.tuned_parameters,
        "seconds_per_step": round(tuning.seconds_per_step, 4),
        "peak_memory_mib": tuning.peak_memory_mib,
        "final_loss": tuning.losses[-1] if tuning.losses else None,
    }


def _loss_plot(losses, path: str) -> str:
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


# ----------------------------------------------------------------------------- parser


def _check_output_folder(path: str, option: str = "--output") -> None:
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


def _check_new_folder(path: str, option: str) -> None:
    """A folder to save a whole model into: writable and holding no files yet."""
    _check_output_folder(path, option)
    if os.path.isdir(path) and os.listdir(path):
        raise SimDAError(
            f"{option} {path!r} already holds files: pick a new folder or delete it first "
            "(nothing was overwritten)"
        )


def _check_paths(args) -> None:
    """The folders a command will write, checked before it starts (those it uses only)."""
    report = getattr(args, "report", None)
    if report:
        _check_output_folder(os.path.dirname(os.path.abspath(report)), "--report's folder")
    unused = report or getattr(args, "action", None) == "ship"
    if getattr(args, "output", None) is not None and not unused:
        _check_output_folder(args.output)


def _file_name(text: str) -> str:
    """--name: a file name without folders; a video or image extension is dropped (every
    format is written)."""
    if not text or text in (".", "..") or "/" in text or os.sep in text:
        raise argparse.ArgumentTypeError(f"must be a file name without folders, got {text!r}")
    stem, ext = os.path.splitext(text)
    return stem if ext.lower() in (".mp4", ".gif", ".png", ".json") and stem else text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _size(p):
    p.add_argument(
        "--size", type=_positive_int, help="height = width in pixels (default: the model's)"
    )


def _mixed_precision(p):
    p.add_argument(
        "--mixed-precision",
        choices=("fp16", "bf16"),
        help="autocast the UNet on CUDA (fp32 weights; fp16 with loss scaling; default: off)",
    )


def _common(p, model=True):
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default="fp32",
        help="weights and activations of the UNet (default fp32)",
    )
    p.add_argument("--output", default="out", help="output folder (default out/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    if model:
        p.add_argument(
            "--model",
            help="a local diffusers SD-1.x folder (or one saved by simda); "
            "default: the built-in model",
        )
        p.add_argument("--adapters", help="adapter weights (.safetensors) to load")
        p.add_argument(
            "--no-optimize",
            action="store_true",
            help="keep the reference kernels (skip simda.optimize)",
        )


def _resolve_sampling(args, pipe) -> None:
    """Fill ``--steps``/``--guidance`` left unset with the model's recommended settings, so
    the settings JSON records the values used."""
    defaults = pipe.sampling_defaults
    if args.steps is None:
        args.steps = defaults["num_inference_steps"]
    if args.guidance is None:
        args.guidance = defaults["guidance_scale"]


def _sampling(p, steps=None, guidance=None, why="", superres=False, guidance_default=None):
    """Sampling options. ``steps``/``guidance`` fix the defaults (``why`` says where they come
    from); left None, the model's recommendation fills them in (``_resolve_sampling``).
    ``superres``: frames are read from the input clip (default all) and the size follows it."""

    def default(value, fallback):
        return f"{value}{why}" if value else f"the model's recommendation, else {fallback}"

    if superres:
        p.add_argument("--frames", type=int, help="frames of the clip to read (default: all)")
    else:
        p.add_argument("--frames", type=int, default=8, help="number of frames (default 8)")
        _size(p)
    p.add_argument(
        "--steps", type=int, default=steps, help=f"DDIM steps (default: {default(steps, 50)})"
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=guidance,
        help="classifier-free guidance scale (default: "
        f"{guidance_default or default(guidance, 7.5)})",
    )
    p.add_argument("--name", type=_file_name, help="output file name without extension")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simda", description="SimDA text-to-video tools")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="tune, invert and edit a synthetic clip end to end")
    _common(p)
    p.add_argument(
        "--tune-steps", type=int, default=None, help="tuning steps (default: 60 on CPU, 300 on GPU)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="DDIM steps of the inversion and the edit (default: 20 on CPU, 50 on GPU; the "
        "text-to-video part uses the model's own setting)",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="guidance of the edit (default: 4.5 for a toy-world model, else 12.5)",
    )
    _mixed_precision(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("generate", help="text to video")
    p.add_argument("prompt", help="what the clip shows")
    _common(p)
    _sampling(p)
    p.add_argument("--negative", default="", help="negative prompt")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("edit", help="one-shot video editing")
    p.add_argument("video", help="the clip to edit (mp4, gif, ...)")
    p.add_argument("--prompt", required=True, help="what the clip shows")
    p.add_argument("--edit", required=True, help="the edited prompt")
    _common(p)
    # the released editing steps; guidance: toyworld.edit_guidance (kept equal to this help by
    # a test; not imported here: the parser is built without loading the pipelines)
    _sampling(
        p,
        steps=50,
        why=", the released editing setting",
        guidance_default="4.5 for a toy-world model, else 12.5, the released editing setting",
    )
    p.add_argument("--tune-steps", type=int, default=300, help="adapter tuning steps (300)")
    p.add_argument(
        "--lr", type=_positive_float, default=5e-5, help="AdamW learning rate (default 5e-5)"
    )
    _mixed_precision(p)
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("train", help="train the adapters on captioned clips")
    p.add_argument("--data", required=True, help="folder of videos + .txt captions, or a CSV")
    _common(p)
    p.add_argument("--frames", type=_positive_int, default=8, help="frames per clip (default 8)")
    _size(p)
    p.add_argument(
        "--steps", type=_positive_int, default=1000, help="optimizer steps (default 1000)"
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1,
        help="global batch size, over all processes (default 1)",
    )
    p.add_argument(
        "--lr", type=_positive_float, default=5e-5, help="AdamW learning rate (default 5e-5)"
    )
    p.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=100,
        help="write OUTPUT/checkpoint every this many steps (default 100)",
    )
    p.add_argument(
        "--caption-dropout",
        type=float,
        default=0.1,
        help="fraction of empty captions, for classifier-free guidance (default 0.1)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint")
    p.add_argument("--no-checkpointing", action="store_true", help="no gradient checkpointing")
    _mixed_precision(p)
    p.add_argument(
        "--superres",
        type=_positive_int,
        metavar="SCALE",
        help="train the super-resolution variant for this scale",
    )
    p.add_argument("--save-pipeline", metavar="DIR", help="also save the whole trained model")
    p.add_argument(
        "--ablate",
        nargs="+",
        choices=("temporal", "spatial", "lsa"),
        default=[],
        help="train without these components (ablation studies)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("superres", help="video super-resolution")
    p.add_argument("video", help="the low-resolution clip (mp4, gif, ...)")
    p.add_argument("--prompt", default="", help="what the clip shows")
    p.add_argument(
        "--scale",
        type=_positive_int,
        help="upscaling factor (default: the one the model was trained for, else 2)",
    )
    _common(p)
    _sampling(p, superres=True)
    p.set_defaults(func=cmd_superres)

    p = sub.add_parser("toyworld", help="toy-world data set and stage-1 image model")
    p.add_argument(
        "action",
        choices=("data", "base", "ship"),
        help="data: write captioned clips; base: train the stage-1 image model; "
        "ship: store a trained model (--model) in the package, in fp16",
    )
    _common(p, model=False)
    p.add_argument("--model", help="ship: the trained pipeline folder")
    p.add_argument("--clips", type=_positive_int, default=2048, help="data: number of clips")
    p.add_argument("--steps", type=_positive_int, default=3000, help="base: training steps")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="base: frames per step")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="base: peak learning rate")
    p.set_defaults(func=cmd_toyworld)

    p = sub.add_parser(
        "eval-toyworld", help="score generated toy-world clips by colour, direction and presence"
    )
    _common(p)
    p.add_argument(
        "--seeds",
        type=_positive_int,
        default=2,
        help="seeds per caption: --seed, --seed + 1, ... (default 2)",
    )
    p.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    p.add_argument(
        "--guidance",
        type=float,
        help="guidance scale of every row, variants included (default: the --model's "
        "recommendation)",
    )
    p.add_argument(
        "--ablations", action="store_true", help="also score the model without each kind of adapter"
    )
    p.add_argument(
        "--variant",
        action="append",
        metavar="LABEL=MODEL_FOLDER",
        help="also score another saved pipeline under this label (e.g. an ablation retrained "
        "with `simda train --ablate`); repeatable",
    )
    p.add_argument(
        "--captions",
        type=int,
        help="score a fixed random subset of this many captions (default: all 48)",
    )
    p.add_argument(
        "--report",
        help="write the table here (markdown, plus .json; default OUTPUT/eval-toyworld.md)",
    )
    p.set_defaults(func=cmd_eval_toyworld)

    p = sub.add_parser("bench", help="benchmark tables and charts (see benchmarks/)")
    p.add_argument(
        "bench_args", nargs=argparse.REMAINDER, help="arguments of `python -m benchmarks.report`"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "env", help="versions, GPUs and the kernels each op runs (paste it into bug reports)"
    )
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_env)
    return parser


def _one_line_warning(command: str):
    """Warnings of a command as one line each: ``simda CMD: warning: MESSAGE``. Deprecation
    notices (about libraries, for developers) keep Python's own format and filters."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
            return default(message, category, filename, lineno, file, line)
        print(f"simda {command}: warning: {message}", file=sys.stderr if file is None else file)

    return show


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _split_bench(argv) if argv[:1] == ["bench"] else None
    if args is None:
        args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            _check_paths(args)
            return args.func(args)
    except SimDAError as exc:
        if args.debug:
            raise
        print(f"simda {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"simda {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
