"""The toy world: data, detector, stage-1 training, the shipped model, multi-process training."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from simda import toyworld
from simda.checkpoint import read_safetensors
from simda.pipelines import ClipDataset, SimDAPipeline

# the built-in model's guard (test_shipped_model_draws_what_it_is_asked): mean edge softness
GUARD_SOFTNESS = 0.16


def test_samples_are_deterministic_and_varied():
    a, caption_a = toyworld.sample(5)
    b, caption_b = toyworld.sample(5)
    assert np.array_equal(a, b) and caption_a == caption_b
    others = {toyworld.sample(s)[1] for s in range(200)}
    assert len(others) > 40  # most of the 48 captions appear
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8


def test_background_is_black_and_colours_exact():
    clip, caption = toyworld.sample(11)
    colour = toyworld.COLOURS[toyworld.parse_caption(caption)[0]]
    values = {tuple(v) for v in clip.reshape(-1, 3)}
    assert values == {(0, 0, 0), colour}


@pytest.mark.parametrize("slot", [0, 1, 2])
def test_render_names_an_unknown_word(slot):
    words = ["red", "circle", "left"]
    words[slot] = "purple-hexagon-sideways"
    name = ("colour", "shape", "direction")[slot]
    with pytest.raises(ValueError, match=f"^{name} must be one of .* got 'purple-hexagon"):
        toyworld.render(*words)
    with pytest.raises(ValueError, match="shape must be one of"):
        toyworld.shape_mask("hexagon", 16, 16, 4, 32)


def test_caption_parsing():
    assert toyworld.parse_caption("a green triangle moving up") == ("green", "triangle", "up")
    with pytest.raises(ValueError, match="not a toy-world caption"):
        toyworld.parse_caption("a cat")


def test_text_encoding_keeps_every_word_apart():
    pipe = toyworld.build_pipeline()
    ids = pipe.tokenizer.convert_tokens_to_ids(toyworld.VOCAB)
    assert len(set(ids)) == len(ids)
    emb = pipe.embed_prompts(["a red circle moving left", "a red circle moving right"])
    assert not torch.allclose(emb[0], emb[1])
    assert not any(p.requires_grad for p in pipe.text_encoder.parameters())


def test_stage1_schedule_runs_for_any_number_of_steps():
    """OneCycleLR divides by zero at 20 steps with a 5 % warm-up; one_cycle never fails, peaks
    at the requested rate and is OneCycleLR's 5 % schedule from 40 steps on (the shipped
    model's 3000)."""

    def rates(schedule_of, steps):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))], lr=1e-3)
        schedule, out = schedule_of(opt, steps), []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
        return out

    with pytest.raises(ValueError, match="steps must be >= 1"):
        toyworld.one_cycle(torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))]), 1e-3, 0)
    for steps in range(1, 61):
        lrs = rates(lambda opt, n: toyworld.one_cycle(opt, 1e-3, n), steps)
        assert len(lrs) == steps and max(lrs) == pytest.approx(1e-3, rel=0.01), steps
        if steps >= 40:
            expected = rates(
                lambda opt, n: torch.optim.lr_scheduler.OneCycleLR(
                    opt, 1e-3, total_steps=n, pct_start=0.05
                ),
                steps,
            )
            assert lrs == expected


def test_stage1_training_saves_a_loadable_model(tmp_path):
    losses = toyworld.train_base(str(tmp_path / "base"), steps=3, batch=8, progress=False)
    assert len(losses) == 3 and np.isfinite(losses).all()
    pipe = SimDAPipeline.from_pretrained(str(tmp_path / "base"))
    assert pipe.default_size == 32 and pipe.unet.lsa_layout == "paper"
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red circle moving right", num_inference_steps=2)
    assert out.frames.shape == (1, 8, 32, 32, 3)  # 8 frames of 32x32: the recommendation


def test_dataset_for_simda_train(tmp_path):
    folder = toyworld.write_dataset(str(tmp_path / "data"), clips=3, seed=1)
    data = ClipDataset(folder, 8, 32, 32)
    assert len(data) == 3
    frames, caption = data.frames(0), data.caption(0)
    assert toyworld.score(frames, caption)["direction_ok"]


def test_data_and_stage1_refuse_to_write_over_what_is_there(tmp_path, monkeypatch):
    from simda.errors import SimDAError

    folder = toyworld.write_dataset(str(tmp_path / "data"), clips=2, seed=1)
    before = sorted(os.listdir(folder))
    with pytest.raises(SimDAError, match="already holds 2 caption files"):
        toyworld.write_dataset(folder, clips=1, seed=5)
    assert sorted(os.listdir(folder)) == before
    with pytest.raises(SimDAError, match="clips .* must be a positive integer"):
        toyworld.write_dataset(str(tmp_path / "none"), clips=0)
    outputs = tmp_path / "out"  # videos without captions, e.g. `simda generate` outputs
    outputs.mkdir()
    (outputs / "a-red-circle-s0.gif").write_bytes(b"GIF89a")
    assert len(os.listdir(toyworld.write_dataset(str(outputs), clips=1))) == 3
    model = tmp_path / "base"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    monkeypatch.setattr(toyworld, "build_pipeline", lambda seed: pytest.fail("trained anyway"))
    with pytest.raises(SimDAError, match="already holds a model"):
        toyworld.train_base(str(model), steps=1, batch=2, progress=False)


def assert_names_no_origin(folder, source=None):
    """No JSON config in ``folder`` records where it was saved from (a path of the training
    machine, the tokenizer's load flags)."""
    from simda.toyworld.ship import ORIGIN_KEYS

    configs = [
        os.path.join(root, name)
        for root, _, files in os.walk(folder)
        for name in files
        if name.endswith(".json")
    ]
    assert len(configs) >= 4  # model_index, unet, scheduler, tokenizer, ...
    for path in configs:
        text = open(path, encoding="utf-8").read()
        config = json.loads(text)
        leaked = [key for key in ORIGIN_KEYS if key in config]
        assert not leaked, f"{path} keeps {leaked}"
        assert source is None or source not in text, f"{path} names {source}"


def test_shipped_model_names_no_local_path():
    folder = toyworld.shipped_folder()
    if folder is None:
        pytest.skip("no built-in model")
    assert_names_no_origin(folder)


def test_ship_swaps_the_model_in_whole(tmp_path, monkeypatch):
    """ship replaces the built-in model by renames; a failed save leaves the old one as is."""
    from simda.errors import SimDAError

    source = str(tmp_path / "trained")
    toyworld.build_pipeline(0).save_pretrained(source)
    target = tmp_path / "assets" / "toyworld"
    target.mkdir(parents=True)
    (target / "model_index.json").write_text('{"old": true}')
    assert toyworld.ship(source, str(target)) == str(target)
    assert json.load(open(target / "model_index.json"))["sampling"] == toyworld.SAMPLING
    assert SimDAPipeline.from_pretrained(str(target)).default_size == 32
    assert sorted(os.listdir(tmp_path / "assets")) == ["toyworld"]  # no leftovers
    assert_names_no_origin(str(target), source)
    shipped = sorted(os.listdir(target))

    def broken_save(self, path, **kwargs):
        raise OSError("disk full")

    tiny = str(tmp_path / "tiny")
    SimDAPipeline.from_preset("tiny").save_pretrained(tiny)
    with pytest.raises(SimDAError, match="not a toy-world model"):
        toyworld.ship(tiny, str(target))
    with monkeypatch.context() as m:
        m.setattr(SimDAPipeline, "save_pretrained", broken_save)
        with pytest.raises(OSError, match="disk full"):
            toyworld.ship(source, str(target))
    assert sorted(os.listdir(target)) == shipped
    assert sorted(os.listdir(tmp_path / "assets")) == ["toyworld"]
    replace = os.replace

    def no_move_in(src, dst):
        if dst == str(target) and ".tmp-" in src:
            raise OSError("killed")
        return replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", no_move_in)
        with pytest.raises(OSError, match="killed"):
            toyworld.ship(source, str(target))
    assert sorted(os.listdir(target)) == shipped  # the old model moved back
    assert sorted(os.listdir(tmp_path / "assets")) == ["toyworld"]
    # a process killed between the renames leaves only target.old: still the built-in model
    os.replace(target, str(target) + ".old")
    assert toyworld.shipped_folder(str(target)) == str(target) + ".old"
    toyworld.ship(source, str(target))
    assert toyworld.shipped_folder(str(target)) == str(target)
    assert sorted(os.listdir(tmp_path / "assets")) == ["toyworld"]


def test_the_shipped_model_is_there():
    """The built-in model ships with the package (a test that skipped without it would guard
    nothing), small, with trained adapters in its UNet."""
    folder = toyworld.shipped_folder()
    assert folder is not None, "no built-in toy-world model in simda/assets/toyworld"
    size = sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files
    )
    assert size < 20 * 2**20
    tensors, _ = read_safetensors(
        os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors")
    )
    # the adapters' output layers start at zero: nonzero ones were trained
    outputs = [k for k in tensors if k.endswith(("adapter.fc2.weight", "temporal_adapter.w_up"))]
    assert len(outputs) == 3 * 16 and all(tensors[k].abs().max() > 0 for k in outputs)


#: the shipped model's scores on the same 12 captions, seed 0, by its prediction type, as
#: measured on 2026-12-03, less one clip (softness + 0.05). v1 (x0): colour, size and direction
#: 12/12, speed 11/12, shape 7/12 (squares come out round), softness 0.63. v2 (velocity):
#: colour, shape and direction 12/12, size 10/12, sharp 5/12, speed 1/12 (the speed along the
#: caption's direction is in range, but the path wobbles), softness 0.20.
SHIPPED_FLOOR = {
    "sample": ({"colour": 11, "shape": 6, "size": 11, "direction": 11, "speed": 10}, 0.68),
    "v_prediction": (
        {"colour": 11, "shape": 11, "size": 9, "direction": 11, "speed": 0, "sharp": 4},
        0.25,
    ),
}
#: why the shipped model misses the targets (strict xfail: remove when a model meets them)
SHORT_OF_TARGETS = {
    "sample": "the shipped model is v1",
    "v_prediction": "model v2's paths wobble (speed) and its edges are soft (docs/toyworld.md)",
}


@pytest.fixture(scope="module")
def shipped_scores():
    """The built-in model on the scheduler test's 12 captions, seed 0 (one to two minutes on 2
    CPU cores)."""
    pipe = toyworld.load_shipped()
    captions = toyworld.caption_subset(12)
    results = [
        toyworld.score(clip, c)
        for c, _, clip in toyworld.generate_clips(pipe, captions, seeds=[0], progress=False)
    ]
    return pipe.scheduler.config.prediction_type, toyworld.summarise(results), results


def test_shipped_model_keeps_its_scores(shipped_scores):
    """Whatever model is shipped does not get worse than measured when it shipped."""
    prediction, summary, results = shipped_scores
    floors, softness = SHIPPED_FLOOR[prediction]
    failed = [r for r in results if not r["all_ok"]]
    for metric, floor in floors.items():
        assert summary[metric] >= floor / 12, (metric, failed)
    assert summary["softness"] <= softness, failed


def test_shipped_model_draws_what_it_is_asked(shipped_scores, request):
    """Every check at the model's 48 x 4 target less one clip, softness at its target. A known
    failure (strict) while the shipped model falls short."""
    prediction, summary, results = shipped_scores
    if prediction in SHORT_OF_TARGETS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=SHORT_OF_TARGETS[prediction]))
    failed = [r for r in results if not r["all_ok"]]
    for metric in toyworld.METRICS:
        assert summary[metric] >= 11 / 12, (metric, failed)
    assert summary["softness"] <= GUARD_SOFTNESS, failed


def test_two_processes_match_one(tmp_path):
    """`simda train` under torchrun (2 processes, gloo) equals one process with the same
    global batch, within float tolerance."""
    data = toyworld.write_dataset(str(tmp_path / "data"), clips=4, seed=2)
    common = [
        "train",
        "--data",
        data,
        "--frames",
        "2",
        "--size",
        "64",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--caption-dropout",
        "0",
        "--quiet",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "simda.cli", *common, "--output", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "simda.cli",
            *common,
            "--output",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert multi.returncode == 0, multi.stderr[-2000:]
    one, _ = read_safetensors(str(tmp_path / "one" / "adapters.safetensors"))
    two, _ = read_safetensors(str(tmp_path / "two" / "adapters.safetensors"))
    assert one.keys() == two.keys()
    losses = [
        json.load(open(tmp_path / run / "checkpoint" / "state.json"))["state"]["losses"]
        for run in ("one", "two")
    ]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    # AdamW's first steps move every weight by about lr whatever the gradient's size, so
    # float-rounding differences in tiny gradients show up at the 1e-5 level, not below.
    moved = 0
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-3, atol=1e-4, msg=key)
        moved += int(one[key].abs().sum() > 0)
    assert moved > 0


def test_bag_of_words_puts_every_word_on_every_token():
    from simda.pipelines.text import TinyTextEncoder, WordTokenizer, tokenize

    tokenizer = WordTokenizer(vocab_size=64, max_length=8, vocab=toyworld.VOCAB)
    plain = TinyTextEncoder(64, 32, 8, layers=0)
    mixed = TinyTextEncoder(64, 32, 8, layers=0, pooled=1.0)
    mixed.load_state_dict(plain.state_dict())
    ids = tokenize(tokenizer, ["a red circle moving left", "a red circle moving right"])
    for encoder, changes_first_word in ((plain, False), (mixed, True)):
        with torch.no_grad():
            out = encoder(ids)[0]
        # token 1 is "a": only the bag of words lets it see the direction word
        assert (not torch.allclose(out[0, 1], out[1, 1])) == changes_first_word


def test_eval_toyworld_command_writes_every_row(tmp_path, capsys):
    from simda.cli import main

    base = str(tmp_path / "base")
    toyworld.train_base(base, steps=1, batch=4, progress=False)
    report = str(tmp_path / "docs" / "toy.md")
    argv = ["eval-toyworld", "--model", base, "--seeds", "1", "--steps", "1", "--captions", "3"]
    argv.append("--quiet")
    assert main([*argv, "--ablations", "--compare", f"retrained={base}", "--report", report]) == 0
    text = open(report).read()
    for row in [*toyworld.ABLATIONS, "retrained"]:
        assert f"| {row} | 3 |" in text, row
    rows = json.load(open(report[:-3] + ".json"))["rows"]
    assert set(rows) == {*toyworld.ABLATIONS, "retrained"}
    assert main([*argv, "--compare", "no-equals-sign"]) == 2
    assert "LABEL=MODEL_FOLDER" in capsys.readouterr().err
    assert len(set(toyworld.caption_subset(12))) == 12
    assert {toyworld.parse_caption(c)[2] for c in toyworld.caption_subset(12)} == set(
        toyworld.DIRECTIONS
    )


def test_stage1_cli_trains_on_the_requested_device_and_refuses_other_dtypes(
    tmp_path, monkeypatch, capsys
):
    from simda.cli import main

    seen = {}

    def fake_train_base(output, **kwargs):
        seen.update(kwargs)
        return [1.0, 0.5]

    monkeypatch.setattr(toyworld, "train_base", fake_train_base)
    argv = ["toyworld", "base", "--steps", "2", "--quiet", "--output", str(tmp_path)]
    assert main([*argv, "--device", "cpu"]) == 0
    assert seen["device"] == torch.device("cpu") and seen["steps"] == 2
    seen.clear()
    for wrong in (
        [*argv, "--dtype", "bf16"],
        ["toyworld", "ship", "--model", str(tmp_path), "--output", str(tmp_path)],
        ["toyworld", "data", "--steps", "5", "--output", str(tmp_path)],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(wrong)
        assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    assert not seen


def test_stage1_training_moves_the_model_to_its_device(tmp_path, monkeypatch):
    """train_base trains where it is told (the model's parameters) and saves from the CPU."""
    devices = []
    original = toyworld.build_pipeline

    def spy(seed=0):
        pipe = original(seed)
        to = pipe.to

        def record(device):
            devices.append(torch.device(device))
            return to(device)

        pipe.to = record
        return pipe

    monkeypatch.setattr(toyworld.model, "build_pipeline", spy)
    toyworld.train_base(str(tmp_path / "base"), steps=1, batch=2, progress=False, device="cpu")
    assert devices == [torch.device("cpu"), torch.device("cpu")]


def test_eval_toyworld_seeds_start_at_seed_and_the_report_goes_to_output(tmp_path, monkeypatch):
    from simda.cli import main

    seen = []
    evaluate = toyworld.evaluate

    def spy(pipe, *, seeds, **kwargs):
        seen.append(list(seeds))
        return evaluate(pipe, seeds=seeds, **kwargs)

    monkeypatch.setattr(toyworld, "evaluate", spy)
    argv = ["eval-toyworld", "--seed", "5", "--seeds", "2", "--steps", "1", "--captions", "1"]
    assert main([*argv, "--quiet", "--output", str(tmp_path)]) == 0
    assert seen == [[5, 6]]
    saved = json.load(open(tmp_path / "eval-toyworld.json"))
    assert saved["settings"]["first seed"] == 5 and (tmp_path / "eval-toyworld.md").is_file()
