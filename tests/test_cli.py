"""The ``simda`` command: every subcommand writes readable files; user errors exit 2."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from simda import toyworld
from simda.cli import main
from simda.video import read_video, write_video


@pytest.fixture
def clip_file(tmp_path):
    frames, _ = toyworld.sample(0, frames=3, size=64)
    return write_video(str(tmp_path / "clip.gif"), frames)


#: frame size of the built-in model: the shipped toy-world model (32) or the random tiny model
#: (64) in a checkout without it
SIZE = 32 if toyworld.shipped_folder() else 64


def outputs(folder, name):
    return [os.path.join(folder, f"{name}.{ext}") for ext in ("mp4", "gif", "json")]


def assert_video(path, frames, size):
    video = read_video(path)
    assert video.shape[0] == frames and video.shape[1:3] == size


def test_generate_writes_mp4_gif_json(tmp_path, capsys):
    out = str(tmp_path / "out")
    code = main(
        [
            "generate",
            "a red circle moving right",
            "--seed",
            "3",
            "--frames",
            "3",
            "--steps",
            "2",
            "--output",
            out,
            "--quiet",
        ]
    )
    assert code == 0
    mp4, gif, meta = outputs(out, "a-red-circle-moving-right-s3")
    assert_video(mp4, 3, (SIZE, SIZE))
    assert_video(gif, 3, (SIZE, SIZE))
    settings = json.load(open(meta))
    assert settings["prompt"] == "a red circle moving right" and settings["seed"] == 3
    assert settings["device"] == "cpu"  # the values used
    assert settings["height"] == settings["width"] == SIZE
    assert mp4 in capsys.readouterr().out
    from PIL import Image

    strip = np.asarray(Image.open(mp4[: -len("mp4")] + "png"))  # the frames in a row
    assert strip.shape == (SIZE, 3 * SIZE + 2 * 2, 3)
    assert (strip[:, SIZE : SIZE + 2] == 128).all()  # a grey line between frames


def test_edit(tmp_path, clip_file, capsys):
    out = str(tmp_path / "out")
    assert (
        main(
            [
                "edit",
                clip_file,
                "--prompt",
                "a red square moving right",
                "--edit",
                "a blue square moving right",
                "--frames",
                "3",
                "--tune-steps",
                "2",
                "--steps",
                "2",
                "--output",
                out,
                "--quiet",
            ]
        )
        == 0
    )
    assert_video(os.path.join(out, "a-blue-square-moving-right.mp4"), 3, (SIZE, SIZE))
    grid = read_video(os.path.join(out, "a-blue-square-moving-right-side-by-side.gif"))
    assert grid.shape[2] == 3 * SIZE + 2 * 2  # input | reconstruction | edit
    assert os.path.isfile(os.path.join(out, "a-blue-square-moving-right-loss.png"))
    printed = capsys.readouterr().out.split()
    written = sorted(n for n in os.listdir(out) if not n.startswith("."))
    assert sorted(os.path.basename(p) for p in printed) == written  # every file it wrote
    settings = json.load(open(os.path.join(out, "a-blue-square-moving-right.json")))
    if SIZE == 32:  # the shipped toy-world model: its edit guidance, not the released 12.5
        assert settings["guidance"] == toyworld.EDIT_GUIDANCE


def test_train_refuses_a_size_the_vae_cannot_take_before_reading_clips(tmp_path, capsys):
    data = tmp_path / "data"
    toyworld.write_dataset(str(data), clips=1)
    argv = ["train", "--data", str(data), "--size", "30", "--steps", "1", "--quiet"]
    assert main([*argv, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "positive multiples of" in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "run")


def test_train_superres_refuses_a_size_its_scale_does_not_divide(tmp_path, capsys):
    data = tmp_path / "data"
    toyworld.write_dataset(str(data), clips=1)
    argv = ["train", "--data", str(data), "--superres", "3", "--steps", "1", "--quiet"]
    assert main([*argv, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be downsampled by --superres 3" in err[0], err
    assert not os.path.exists(tmp_path / "run")


def test_train_then_generate_with_the_adapters(tmp_path, clip_file):
    data = tmp_path / "data"
    data.mkdir()
    os.replace(clip_file, data / "clip.gif")
    (data / "clip.txt").write_text("a red square moving right")
    out = str(tmp_path / "run")
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--frames",
                "3",
                "--steps",
                "3",
                "--checkpoint-every",
                "2",
                "--output",
                out,
                "--quiet",
            ]
        )
        == 0
    )
    adapters = os.path.join(out, "adapters.safetensors")
    assert os.path.isfile(adapters) and os.path.isfile(os.path.join(out, "loss.png"))
    assert (
        main(
            [
                "generate",
                "a red square",
                "--adapters",
                adapters,
                "--frames",
                "2",
                "--steps",
                "1",
                "--output",
                out,
                "--name",
                "with-adapters",
                "--quiet",
            ]
        )
        == 0
    )
    assert_video(os.path.join(out, "with-adapters.mp4"), 2, (SIZE, SIZE))


def test_superres(tmp_path, capsys):
    frames, _ = toyworld.sample(1, frames=2, size=32)
    low = write_video(str(tmp_path / "low.mp4"), frames)
    out = str(tmp_path / "out")
    assert main(["superres", low, "--scale", "2", "--steps", "2", "--output", out, "--quiet"]) == 0
    assert_video(os.path.join(out, "low-x2.mp4"), 2, (64, 64))
    # the built-in model is no super-resolution model: said, not hidden
    assert "was not trained for super-resolution" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the size follows the clip: no --size to ignore
        main(["superres", low, "--size", "64"])
    # a model trained for x4 (recorded in its folder) upscales by 4 unless told otherwise
    from simda.pipelines import SimDAPipeline, make_superres

    model = str(tmp_path / "x4")
    tiny = SimDAPipeline.from_preset("tiny")  # 64 px frames: 16 px in, 64 out
    make_superres(tiny, 4).save_pretrained(model)
    low16 = write_video(str(tmp_path / "low16.gif"), frames[:, ::2, ::2])
    argv = ["superres", low16, "--model", model, "--steps", "1", "--output", out, "--quiet"]
    assert main(argv) == 0
    assert_video(os.path.join(out, "low16-x4.mp4"), 2, (64, 64))
    assert "warning" not in capsys.readouterr().err
    assert main([*argv, "--scale", "2"]) == 0
    assert "simda superres: warning: this model was trained to upscale by 4, not 2" in (
        capsys.readouterr().err
    )


def test_demo(tmp_path):
    out = str(tmp_path / "out")
    assert main(["demo", "--tune-steps", "2", "--steps", "2", "--output", out, "--quiet"]) == 0
    for name in ("demo.mp4", "demo.gif", "demo-loss.png", "demo-summary.md"):
        assert os.path.isfile(os.path.join(out, name)), name
    summary = open(os.path.join(out, "demo-summary.md")).read()
    assert "tuned parameters" in summary and "edit: frames showing a blue shape" in summary


def test_demo_help_states_the_edit_guidance(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert f"{toyworld.EDIT_GUIDANCE:g} for the toy world, else 12.5" in text


def test_edit_fidelity_counts_frames_and_measures_the_offset():
    from simda.toyworld import edit_fidelity

    source = toyworld.render("red", "square", "right", rng=np.random.default_rng(0))
    blue = source.copy()
    blue[(source == (255, 0, 0)).all(-1)] = (0, 0, 255)
    assert edit_fidelity(source, blue, "red", "blue") == (8, 0.0)
    shifted = np.roll(blue, 2, axis=2)  # 2 px to the right
    shown, offset = edit_fidelity(source, shifted, "red", "blue")
    assert shown == 8 and offset == pytest.approx(2.0)
    half = blue.copy()
    half[4:] = 0  # the edit loses the shape after frame 3
    assert edit_fidelity(source, half, "red", "blue") == (4, 0.0)
    assert edit_fidelity(source, np.zeros_like(source), "red", "blue") == (0, None)
    gone = source.copy()
    gone[4:] = 0  # the source loses its shape after frame 3: the edit still counts there
    assert edit_fidelity(gone, blue, "red", "blue") == (8, 0.0)
    assert edit_fidelity(np.zeros_like(source), blue, "red", "blue") == (8, None)


def test_reader_errors_are_one_line():
    from simda.video import _reason

    ffmpeg = RuntimeError(
        "Could not load\n=== stderr ===\n\nffmpeg version 9\n  lots\nInvalid data"
    )
    assert _reason(ffmpeg) == "Could not load (Invalid data)"
    assert _reason(ValueError("no backend\n  pip install imageio[pyav]")) == "no backend"
    assert _reason(OSError()) == "OSError"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "x", "--model", "/no/such/folder"], "does not exist"),
        (["generate", "x", "--size", "30", "--steps", "1"], "positive multiples of"),
        (["generate", "x", "--steps", "1001"], "num_inference_steps must be an int in 1..1000"),
        (["generate", "x", "--dtype", "fp16", "--device", "cpu"], "fp16 needs --device cuda"),
        (["edit", "/no/such.mp4", "--prompt", "a", "--edit", "b"], "does not exist"),
        (["train", "--data", "/no/such/dir"], "neither a folder nor a .csv"),
        (["generate", "x", "--adapters", "/no/such.safetensors"], "does not exist"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--output", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("size", ["0", "-8", "big"])
def test_size_must_be_a_positive_integer(size, capsys):
    for argv in (
        ["generate", "x"],
        ["train", "--data", "d"],
        ["edit", "v", "--prompt", "a", "--edit", "b"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--size", size])
        assert exit_.value.code == 2
        assert "--size: must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_unreadable_video(tmp_path, capsys, suffix):
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b"this is not a video")
    for argv in (["edit", str(bad), "--prompt", "a", "--edit", "b"], ["superres", str(bad)]):
        assert main([*argv, "--output", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "cannot read video" in err
        assert len(err.strip().splitlines()) == 1, err  # not ffmpeg's banner and log


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a CPU-only machine")
def test_gpu_option_on_a_cpu_machine(capsys, tmp_path):
    assert main(["generate", "x", "--device", "cuda", "--output", str(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_console_script_exit_code_and_debug(tmp_path):
    cmd = [sys.executable, "-m", "simda.cli", "generate", "x", "--model", str(tmp_path / "no")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_every_command_has_help():
    for command in (
        "demo",
        "generate",
        "edit",
        "train",
        "superres",
        "bench",
        "toyworld",
        "eval-toyworld",
    ):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0


def test_every_option_says_what_it_does():
    from simda.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    missing = [
        f"{name} {action.dest}"
        for name, sub in commands.items()
        for action in sub._actions
        if not action.help and action.dest != "help"
    ]
    assert not missing


def run_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (what a new process imports), which must succeed."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result


def test_help_and_argument_errors_import_neither_torch_nor_diffusers():
    """`simda --help` and a bad option answer without loading torch or diffusers (seconds)."""
    probe = (
        "import sys\n"
        "from simda.cli import main\n"
        "for argv in (['--help'], ['generate', '--help'], ['generate', 'x', '--dtype', 'fp61']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        print('EXIT', argv[-1], exc.code)\n"
        "print('LOADED', sorted(m for m in ('torch', 'diffusers', 'triton') if m in sys.modules))\n"
    )
    result = run_python(probe)
    lines = [line for line in result.stdout.splitlines() if line.startswith(("EXIT", "LOADED"))]
    assert lines == ["EXIT --help 0", "EXIT --help 0", "EXIT fp61 2", "LOADED []"], lines
    assert "invalid choice: 'fp61'" in result.stderr


def test_public_names_load_on_first_use():
    """`import simda` is lazy; every public name resolves, and `simda.optimize` is the
    function even when its module was imported first (a module named like the function would
    replace it)."""
    probe = (
        "import sys\n"
        "import simda\n"
        "print('torch' in sys.modules)\n"
        "import simda.optimization\n"
        "print(callable(simda.optimize), simda.optimize.__module__)\n"
        "print(sorted(simda._EXPORTS) == simda.__all__)\n"
        "print(all(getattr(simda, n).__module__ == simda._EXPORTS[n] for n in simda.__all__\n"
        "          if hasattr(getattr(simda, n), '__module__')))\n"
        "print(set(simda.__all__) <= set(dir(simda)))\n"
        "import os\n"
        "root = os.path.dirname(simda.__file__)\n"
        "here = [f[:-3] for f in os.listdir(root) if f.endswith('.py') and f != '__init__.py']\n"
        "here += [d for d in os.listdir(root) if os.path.isfile(f'{root}/{d}/__init__.py')]\n"
        "print(sorted(here) == sorted(simda._SUBMODULES), simda.toyworld.CAPTIONS[0])\n"
        "ns = {}\n"
        "exec('from simda import *', ns)\n"
        "print(sorted(k for k in ns if not k.startswith('__')) == simda.__all__)\n"
        "try:\n"
        "    simda.no_such_name\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    result = run_python(probe)
    assert result.stdout.splitlines() == [
        "False",
        "True simda.optimization",
        "True",
        "True",
        "True",
        "True a red circle moving left",
        "True",
        "module 'simda' has no attribute 'no_such_name'",
    ]


def test_edit_defaults_and_its_help(capsys):
    """50 DDIM steps (released); guidance from the model: its recommended edit guidance (the
    toy world's 4.5), else the released 12.5 (editing.edit_guidance), as the help says."""
    from simda.cli import build_parser
    from simda.pipelines import SimDAPipeline, editing

    args = build_parser().parse_args(["edit", "clip.mp4", "--prompt", "a", "--edit", "b"])
    assert (args.steps, args.guidance) == (50, None)
    assert editing.edit_guidance(SimDAPipeline.from_preset("tiny")) == editing.RELEASED_GUIDANCE
    assert editing.edit_guidance(toyworld.build_pipeline()) == toyworld.EDIT_GUIDANCE
    with pytest.raises(SystemExit):
        main(["edit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        f"(default: the model's recommended edit guidance ({toyworld.EDIT_GUIDANCE:g} for the "
        f"toy world), else {editing.RELEASED_GUIDANCE:g}, the released editing setting)" in text
    )
    assert "7.5" not in text


def test_bench_passes_its_arguments_to_the_report(monkeypatch, tmp_path):
    from simda.cli import bench as report

    seen = []
    monkeypatch.setattr(report, "main", lambda argv: seen.append(argv) or 0)
    assert main(["bench", "--output", str(tmp_path), "r.json", "--debug"]) == 0
    assert seen == [["--output", str(tmp_path), "r.json"]]


def test_torchrun_ranks_take_the_gpu_of_their_local_rank(monkeypatch):
    from simda.cli import common
    from simda.errors import SimDAError

    chosen = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert common.rank_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", 1)]
    assert common.rank_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(SimDAError, match="LOCAL_RANK=2"):
        common.rank_device(torch.device("cuda"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert common.rank_device(torch.device("cuda")) == torch.device("cuda")


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "x"],
        ["edit", "CLIP", "--prompt", "a", "--edit", "b"],
        ["train", "--data", "DATA"],
        ["superres", "CLIP"],
        ["demo"],
        ["eval-toyworld"],
        ["toyworld", "data"],
        ["toyworld", "base"],
    ],
)
def test_an_output_that_cannot_be_a_folder_fails_before_any_work(argv, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    argv = [str(tmp_path) if a in ("CLIP", "DATA") else a for a in argv]
    for output, message in (
        (afile, f"--output {str(afile)!r} is a file, not a folder"),
        (afile / "sub", f"{str(afile)!r} is a file, so the folder cannot be made"),
    ):
        assert main([*argv, "--output", str(output), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert afile.read_text() == "not a folder"


def test_only_the_folders_a_command_writes_are_checked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").write_text("the default --output is a file here")
    assert main(["toyworld", "ship", "--model", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err  # not about --output
    assert main(["eval-toyworld", "--report", str(tmp_path / "r" / "e.md"), "--captions", "0"]) == 2
    assert "--captions must be in 1.." in capsys.readouterr().err  # --output unused: unchecked


def test_eval_report_and_saved_pipeline_folders_are_checked_first(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    report = str(afile / "eval.md")
    assert main(["eval-toyworld", "--report", report, "--output", str(tmp_path)]) == 2
    assert "--report's folder" in capsys.readouterr().err
    saved = tmp_path / "model"
    saved.mkdir()
    (saved / "model_index.json").write_text("{}")
    argv = ["train", "--data", "/no/such/data", "--save-pipeline", str(saved), "--quiet"]
    assert main([*argv, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"--save-pipeline {str(saved)!r} already holds files" in err  # before the data


@pytest.mark.parametrize(
    "argv, option",
    [
        (["eval-toyworld", "--seeds", "0"], "--seeds"),
        (["generate", "x", "--frames", "0"], "--frames"),
        (["generate", "x", "--steps", "0"], "--steps"),
        (["generate", "x", "--height", "-64"], "--height"),
        (["train", "--data", "d", "--log-every", "0"], "--log-every"),
        (["superres", "c.gif", "--scale", "0"], "--scale"),
        (["superres", "c.gif", "--scale", "-2"], "--scale"),
        (["toyworld", "data", "--clips", "0"], "--clips"),
        (["train", "--data", "d", "--batch-size", "0"], "--batch-size"),
        (["train", "--data", "d", "--checkpoint-every", "0"], "--checkpoint-every"),
        (["train", "--data", "d", "--superres", "0"], "--superres"),
        (["edit", "v", "--prompt", "a", "--edit", "b", "--lr", "-1"], "--lr"),
        (["edit", "v", "--prompt", "a", "--edit", "b", "--lr", "nan"], "--lr"),
        (["train", "--data", "d", "--lr", "0"], "--lr"),
        (["generate", "x", "--name", "../escape"], "--name"),
        (["generate", "x", "--name", "sub/clip"], "--name"),
    ],
)
def test_option_values_are_checked_by_the_parser(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"argument {option}: must be" in capsys.readouterr().err


def test_name_drops_a_video_extension():
    from simda.cli import build_parser

    for given, name in (("a.mp4", "a"), ("clip.GIF", "clip"), ("v1.2", "v1.2"), ("x", "x")):
        assert build_parser().parse_args(["generate", "p", "--name", given]).name == name


def test_devices_simda_cannot_use_are_named(tmp_path, capsys):
    assert main(["generate", "x", "--device", "mps", "--output", str(tmp_path)]) == 2
    assert "--device 'mps': simda runs on cpu or cuda" in capsys.readouterr().err


@pytest.mark.skipif(SIZE != 32, reason="needs the shipped toy-world model (a closed vocabulary)")
def test_warnings_print_one_line_each(tmp_path, capsys):
    argv = ["generate", "a panda surfing", "--frames", "1", "--steps", "1", "--quiet"]
    assert main([*argv, "--output", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "simda generate: warning: prompt 'a panda surfing': this model knows only" in err
    assert "panda, surfing act as noise" in err
    assert "UserWarning" not in err and "warnings.warn" not in err


def test_bench_refuses_files_that_are_not_benchmark_results(tmp_path, capsys):
    bad, empty = tmp_path / "bad.json", tmp_path / "empty.json"
    bad.write_text("{not json")
    empty.write_text("{}")
    assert main(["bench", str(bad), "--output", str(tmp_path / "r")]) == 2
    assert "is not readable JSON" in capsys.readouterr().err
    assert main(["bench", str(empty), "--output", str(tmp_path / "r")]) == 2
    assert "is not a pytest-benchmark result" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_generate_takes_height_width_and_a_scheduler(tmp_path):
    from simda.schedulers import SCHEDULERS

    out = str(tmp_path / "out")
    argv = ["generate", "a red circle moving right", "--frames", "2", "--steps", "2", "--quiet"]
    width = 2 * SIZE
    assert main([*argv, "--width", str(width), "--scheduler", "euler", "--output", out]) == 0
    mp4, _, meta = outputs(out, "a-red-circle-moving-right-s0")
    assert_video(mp4, 2, (SIZE, width))
    settings = json.load(open(meta))
    assert (settings["height"], settings["width"], settings["scheduler"]) == (SIZE, width, "euler")
    assert main([*argv, "--size", str(width), "--height", str(SIZE), "--output", out]) == 0
    assert_video(mp4, 2, (SIZE, width))  # --height beside --size: the other side is --size's
    with pytest.raises(SystemExit):
        main([*argv, "--scheduler", "ddpm"])
    assert "euler-ancestral" in " ".join(SCHEDULERS)


def test_the_command_loads_the_named_scheduler(tmp_path, monkeypatch):
    from diffusers import UniPCMultistepScheduler

    from simda.cli import common

    seen = []
    load = common.load_pipeline

    def spy(args, chosen=None):
        pipe = load(args, chosen)
        seen.append(type(pipe.scheduler))
        return pipe

    monkeypatch.setattr(common, "load_pipeline", spy)
    argv = ["generate", "x", "--frames", "1", "--steps", "1", "--quiet", "--output", str(tmp_path)]
    assert main([*argv, "--scheduler", "unipc"]) == 0
    assert seen == [UniPCMultistepScheduler]


def test_variant_loads_the_folders_fp16_weights(tmp_path):
    from simda.pipelines import SimDAPipeline

    folder = str(tmp_path / "model")
    SimDAPipeline.from_preset("tiny").to(torch.float16).save_pretrained(folder, variant="fp16")
    assert os.path.isfile(os.path.join(folder, "unet", "diffusion_pytorch_model.fp16.safetensors"))
    argv = ["generate", "x", "--model", folder, "--frames", "1", "--steps", "1", "--quiet"]
    assert main([*argv, "--variant", "fp16", "--output", str(tmp_path)]) == 0
    assert main([*argv, "--output", str(tmp_path)]) == 2  # no plain weights in that folder


def test_quiet_silences_diffusers_and_transformers_too(tmp_path):
    """While the command runs, diffusers and transformers log errors only and show no progress
    bars; afterwards the process's logging is as it was (in-process callers keep theirs)."""
    code = (
        "import logging\n"
        "from simda.cli import generate, main\n"
        "real = generate.run\n"
        "def spy(args):\n"
        "    print('INSIDE', *(logging.getLogger(n).getEffectiveLevel()\n"
        "                      for n in ('diffusers', 'transformers')))\n"
        "    return real(args)\n"
        "generate.run = spy\n"
        "main(['generate', 'x', '--frames', '1', '--steps', '1', '--quiet',\n"
        f"      '--output', {str(tmp_path)!r}])\n"
        "print('AFTER', *(logging.getLogger(n).getEffectiveLevel()\n"
        "                 for n in ('diffusers', 'transformers')))\n"
    )
    result = run_python(code)
    lines = [line.split() for line in result.stdout.splitlines() if line[:5] in ("INSID", "AFTER")]
    assert lines == [
        ["INSIDE", str(logging.ERROR), str(logging.ERROR)],
        ["AFTER", str(logging.WARNING), str(logging.WARNING)],
    ]
    assert "it/s" not in result.stderr and "Loading pipeline" not in result.stderr


def test_messages_go_through_the_simda_logger(tmp_path, capsys):
    """Library messages are ``logging`` records of the ``simda`` logger: the command prints
    them as ``simda CMD: ...`` lines, ``--quiet`` drops them."""
    data = tmp_path / "data"
    toyworld.write_dataset(str(data), clips=1)
    argv = ["train", "--data", str(data), "--frames", "2", "--steps", "1", "--batch-size", "1"]
    argv += ["--checkpoint-every", "1", "--device", "cpu", "--output", str(tmp_path / "run")]
    assert main([*argv, "--quiet"]) == 0
    argv[argv.index("--steps") + 1] = "2"
    assert main([*argv, "--resume", "--quiet"]) == 0
    assert "resumed" not in capsys.readouterr().err
    argv[argv.index("--steps") + 1] = "3"
    assert main([*argv, "--resume"]) == 0
    assert "simda train: resumed from the checkpoint at step 2" in capsys.readouterr().err
