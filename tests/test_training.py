"""Adapter training on a folder of clips: data, checkpoints, exact resume."""

import json
import os

import numpy as np
import pytest
import torch

from simda import toyworld
from simda.checkpoint import adapter_state_dict
from simda.errors import SimDAError
from simda.pipelines import ClipDataset, SimDAPipeline, TrainConfig, train
from simda.video import write_video


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for seed in range(3):
        frames, caption = toyworld.sample(seed, frames=3, size=64)
        suffix = ".gif" if seed % 2 else ".mp4"
        write_video(str(root / f"clip{seed}{suffix}"), frames)
        (root / f"clip{seed}.txt").write_text(caption + "\n")
    (root / "orphan.gif").write_bytes(b"")  # no caption: ignored
    return root


def run(data_dir, out, steps, resume=False, dropout=0.5, frames=3, size=(64, 64), **settings):
    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    settings = {"batch_size": 2, "lr": 1e-3, "checkpoint_every": 2, "seed": 7, **settings}
    config = TrainConfig(steps=steps, caption_dropout=dropout, **settings)
    state = train(
        pipe,
        ClipDataset(str(data_dir), frames, *size),
        str(out),
        config,
        resume=resume,
        progress=False,
    )
    return pipe, state


def files(folder):
    """The bytes of every file under ``folder``, by name."""
    return {p.name: files(p) if p.is_dir() else p.read_bytes() for p in folder.iterdir()}


def test_dataset_from_folder_and_csv(data_dir, tmp_path):
    folder = ClipDataset(str(data_dir), 3, 64, 64)
    assert len(folder) == 3
    assert folder.frames(0).shape == (3, 64, 64, 3)
    assert folder.caption(1) == toyworld.sample(1, frames=3, size=64)[1]
    csv = tmp_path / "clips.csv"
    csv.write_text("path,caption\n" + f"{data_dir}/clip1.gif,hello world\n")
    listed = ClipDataset(str(csv), 3, 64, 64)
    assert len(listed) == 1 and listed.caption(0) == "hello world"
    csv.write_text("path,caption\n" + f"{data_dir}/clip1.gif,hello\n{data_dir}/clip2.mp4, \n")
    with pytest.warns(UserWarning, match="1 of 2 clips .* have an empty caption .*clip2.mp4"):
        ClipDataset(str(csv), 3, 64, 64)


def test_dataset_errors(tmp_path):
    with pytest.raises(SimDAError, match="no captioned clips"):
        ClipDataset(str(tmp_path), 3, 64, 64)
    with pytest.raises(SimDAError, match="neither a folder nor a .csv"):
        ClipDataset(str(tmp_path / "nope"), 3, 64, 64)


def test_resume_continues_exactly(data_dir, tmp_path):
    whole, whole_state = run(data_dir, tmp_path / "whole", 4)
    run(data_dir, tmp_path / "split", 2)  # "killed" after its step-2 checkpoint
    resumed, resumed_state = run(data_dir, tmp_path / "split", 4, resume=True)
    assert resumed_state.step == whole_state.step == 4
    assert resumed_state.losses == whole_state.losses
    a, b = adapter_state_dict(whole.unet), adapter_state_dict(resumed.unet)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    files = sorted(os.listdir(tmp_path / "split" / "checkpoint"))
    assert files == ["adapters.safetensors", "optimizer.safetensors", "state.json"]
    assert os.path.isfile(tmp_path / "split" / "adapters.safetensors")


def test_resume_refuses_other_settings_and_steps_it_has_done(data_dir, tmp_path):
    out = tmp_path / "r"
    run(data_dir, out, 2)
    written = files(out)
    refused = [
        (dict(dropout=0.0), "caption_dropout 0.5 there, 0.0 now"),
        (dict(frames=2), "frames 3 there, 2 now"),
        (dict(size=(64, 32)), r"size \[64, 64\] there, \[64, 32\] now"),
        (dict(superres_scale=2), r"superres_scale=2 .* make_superres\(pipe, 2\)"),
        (dict(steps=1), r"at step 2, and steps=1 leaves nothing to train: pass steps > 2"),
        (dict(steps=2), r"at step 2, and steps=2 leaves nothing to train: pass steps > 2"),
    ]
    for change, message in refused:
        with pytest.raises(SimDAError, match=message):
            run(data_dir, out, **{"steps": 4, **change}, resume=True)
    assert files(out) == written  # nothing was written: a finished run is not run again


def test_the_loss_log_holds_a_line_every_log_every_steps(data_dir, tmp_path):
    _, state = run(data_dir, tmp_path / "log", 5, log_every=2, checkpoint_every=10)
    lines = [
        json.loads(line) for line in (tmp_path / "log" / "losses.jsonl").read_text().splitlines()
    ]
    assert [line["step"] for line in lines] == [2, 4, 5]  # and the last step, before its save
    want = [np.mean(state.losses[a:b]) for a, b in ((0, 2), (2, 4), (4, 5))]
    assert [line["loss"] for line in lines] == pytest.approx(want)
    assert all(line["seconds_per_step"] > 0 for line in lines)


def test_resume_without_checkpoint(data_dir, tmp_path):
    with pytest.raises(SimDAError, match="no checkpoint"):
        run(data_dir, tmp_path / "empty", 2, resume=True)


def test_short_training_lowers_the_loss(data_dir, tmp_path):
    _, state = run(data_dir, tmp_path / "fit", 40, dropout=0.0)
    first, last = np.mean(state.losses[:10]), np.mean(state.losses[-10:])
    assert last < first, (first, last)


@pytest.mark.parametrize(
    "field, value",
    [
        ("checkpoint_every", 0),
        ("steps", 0),
        ("batch_size", -1),
        ("caption_dropout", 1.5),
        ("lr", 0.0),
        ("mixed_precision", "fp61"),
        ("superres_scale", 1),
        ("caption_dropout", "0.1"),
        ("caption_dropout", True),
    ],
)
def test_train_config_rejects_values_that_cannot_work(field, value):
    from simda.errors import SimDAError

    with pytest.raises(SimDAError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})


def test_a_checkpoint_is_never_overwritten_or_half_loaded(data_dir, tmp_path):
    out = tmp_path / "run"
    _, state = run(data_dir, out, 2)
    saved = (out / "checkpoint" / "state.json").read_text()
    with pytest.raises(SimDAError, match="already holds a training checkpoint"):
        run(data_dir, out, 4)  # a new run into the same folder, without resume
    assert (out / "checkpoint" / "state.json").read_text() == saved
    # a damaged state.json: a clear error, and the model keeps its weights
    (out / "checkpoint" / "state.json").write_text('{"state": {"step": 2, "colour": 1}}')
    pipe = SimDAPipeline.from_preset("tiny", seed=3)
    before = {k: v.clone() for k, v in adapter_state_dict(pipe.unet).items()}
    from simda.pipelines.training import load_checkpoint
    from simda.pipelines.tuning import trainable_parameters

    optimizer = torch.optim.AdamW(trainable_parameters(pipe))

    with pytest.raises(SimDAError, match="not a simda training state"):
        load_checkpoint(str(out / "checkpoint"), pipe.unet, optimizer)
    after = adapter_state_dict(pipe.unet)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fp16_loss_scaling_is_checkpointed_and_resumed(data_dir, tmp_path, monkeypatch):
    """fp16 autocast on a GPU trains through a GradScaler; its state is part of the
    checkpoint, so a resumed run continues with the same scale. (Loss scaling is off on CPU;
    here it is switched on to run its code path.)"""
    from simda.pipelines import training, tuning

    def enabled_scaler(pipe, mixed_precision):
        return torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)

    monkeypatch.setattr(training, "grad_scaler", enabled_scaler)
    whole, whole_state = run(data_dir, tmp_path / "whole", 4)
    assert whole_state.grad_scaler["scale"] == 1024.0 * 2**4  # grew after each finite step
    run(data_dir, tmp_path / "split", 2)
    resumed, resumed_state = run(data_dir, tmp_path / "split", 4, resume=True)
    assert resumed_state.grad_scaler == whole_state.grad_scaler
    a, b = adapter_state_dict(whole.unet), adapter_state_dict(resumed.unet)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not tuning.grad_scaler(whole, "fp16").is_enabled()  # CPU: off


@pytest.mark.parametrize(
    "dtype, message",
    [
        (torch.float16, "AdamW on fp16 weights.*--mixed-precision fp16"),
        (torch.bfloat16, "AdamW on bf16 weights.*fp32.*--mixed-precision bf16"),
    ],
)
def test_low_precision_weights_are_refused_for_training(data_dir, tmp_path, dtype, message):
    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    pipe.unet.to(dtype)
    config = TrainConfig(steps=1, batch_size=1)
    with pytest.raises(SimDAError, match=message):
        train(pipe, ClipDataset(str(data_dir), 3, 64, 64), str(tmp_path), config, progress=False)
    assert not os.path.exists(tmp_path / "checkpoint")


def test_latent_cache_encodes_in_chunks_and_keeps_posteriors_on_the_host(data_dir, monkeypatch):
    from simda.pipelines.training import LatentCache

    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    dataset = ClipDataset(str(data_dir), 3, 64, 64)
    whole = LatentCache(pipe, dataset).posterior(0)
    calls = []
    encode = pipe.vae.encode
    monkeypatch.setattr(pipe.vae, "encode", lambda x: calls.append(len(x)) or encode(x))
    monkeypatch.setattr(LatentCache, "CHUNK", 2)
    chunked = LatentCache(pipe, dataset).posterior(0)
    assert calls == [2, 1]
    for a, b in zip(whole, chunked, strict=True):
        assert a.device.type == "cpu"
        # fp32 convolutions round differently at another batch size (up to ~6e-5 here)
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-4)


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def six_steps(data_dir, tmp_path_factory):
    pipe, state = run(data_dir, tmp_path_factory.mktemp("whole") / "out", 6)
    return adapter_state_dict(pipe.unet), state.losses


@pytest.mark.parametrize(
    "crash, kept",
    [
        ("writing adapters", 2),
        ("writing optimizer", 2),
        ("syncing", 2),  # every file written, none synced
        ("moving the old checkpoint aside", 2),
        ("moving the new checkpoint in", 2),  # only checkpoint.old is left
        ("deleting the old checkpoint", 4),
    ],
)
def test_a_crash_during_a_save_resumes_the_last_complete_checkpoint(
    data_dir, tmp_path, monkeypatch, six_steps, crash, kept
):
    from simda import checkpoint
    from simda.pipelines import training

    out = tmp_path / "run"
    run(data_dir, out, 2)
    step2 = files(out / "checkpoint")
    replace, rmtree = os.replace, checkpoint.shutil.rmtree
    atomic_save, fsync = training.atomic_save, checkpoint.fsync
    saves = []

    def crashing_save(*args, **kwargs):
        saves.append(args[1])
        if crash == f"writing {'adapters' if len(saves) == 1 else 'optimizer'}":
            raise Crash(crash)
        return atomic_save(*args, **kwargs)

    def crashing_fsync(path):
        if crash == "syncing":
            raise Crash(crash)
        return fsync(path)

    def crashing_replace(src, dst):
        moves = {
            str(out / "checkpoint.old"): "moving the old checkpoint aside",
            str(out / "checkpoint"): "moving the new checkpoint in",
        }
        if os.path.isdir(src) and crash == moves.get(str(dst)):
            raise Crash(crash)
        return replace(src, dst)

    def crashing_rmtree(path, *args, **kwargs):
        if crash == "deleting the old checkpoint" and str(path) == str(out / "checkpoint.old"):
            raise Crash(crash)
        return rmtree(path, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(training, "atomic_save", crashing_save)  # the optimizer's file
        m.setattr(checkpoint, "atomic_save", crashing_save)  # save_adapters'
        m.setattr(checkpoint, "fsync", crashing_fsync)
        m.setattr(os, "replace", crashing_replace)
        m.setattr(checkpoint.shutil, "rmtree", crashing_rmtree)
        with pytest.raises(Crash):
            run(data_dir, out, 4, resume=True)  # crashes in its step-4 save
    # a killed save also leaves its own folder: never read, removed by the next save
    (out / "checkpoint.tmp-1").mkdir()
    (out / "checkpoint.tmp-1" / "state.json").write_text('{"state": {"step": 99}}')
    folder = training.find_checkpoint(str(out / "checkpoint"))
    if kept == 2:
        assert files(out / os.path.basename(folder)) == step2  # bit for bit
    else:
        assert folder == str(out / "checkpoint") and os.path.isdir(out / "checkpoint.old")
    with pytest.raises(SimDAError, match="already holds a training checkpoint"):
        run(data_dir, out, 6)
    loaded, load = [], training.load_checkpoint

    def spy(*args):
        loaded.append(load(*args).step)
        return load(*args)

    with monkeypatch.context() as m:
        m.setattr(training, "load_checkpoint", spy)
        resumed, state = run(data_dir, out, 6, resume=True)
    assert loaded == [kept]
    assert state.losses == six_steps[1]
    after = adapter_state_dict(resumed.unet)
    assert all(torch.equal(after[k], six_steps[0][k]) for k in six_steps[0])
    assert sorted(os.listdir(out)) == ["adapters.safetensors", "checkpoint", "losses.jsonl"]
    # the loss log counts each step once: lines written after the checkpoint resumed from,
    # before the crash, are dropped and written again
    lines = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4, 6]
    want = [np.mean(six_steps[1][i : i + 2]) for i in (0, 2, 4)]
    assert [line["loss"] for line in lines] == pytest.approx(want)


def test_a_checkpoint_mixed_from_two_saves_is_refused_and_old_ones_still_load(data_dir, tmp_path):
    import json
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from simda.pipelines.training import load_checkpoint
    from simda.pipelines.tuning import trainable_parameters

    out = tmp_path / "run"
    run(data_dir, out, 2)
    shutil.copytree(out / "checkpoint", tmp_path / "step2")
    run(data_dir, out, 4, resume=True)
    for name in ("adapters.safetensors", "optimizer.safetensors", "state.json"):
        mixed = tmp_path / f"mixed-{name}"
        shutil.copytree(out / "checkpoint", mixed)
        shutil.copy(tmp_path / "step2" / name, mixed / name)  # one file of the step-2 save
        pipe = SimDAPipeline.from_preset("tiny", seed=0)
        before = {k: v.clone() for k, v in adapter_state_dict(pipe.unet).items()}
        optimizer = torch.optim.AdamW(trainable_parameters(pipe))
        with pytest.raises(SimDAError, match=f"come from different saves.*{name} at step 2"):
            load_checkpoint(str(mixed), pipe.unet, optimizer)
        after = adapter_state_dict(pipe.unet)
        assert all(torch.equal(before[k], after[k]) for k in before)
    # a checkpoint of an older simda: no step stamps, no clip shape
    old = out / "checkpoint"
    shutil.rmtree(old)
    shutil.copytree(tmp_path / "step2", old)
    for name in ("adapters.safetensors", "optimizer.safetensors"):
        with safe_open(str(old / name), framework="pt") as f:
            meta = f.metadata()
        assert meta.pop("step") == "2"
        save_file(load_file(str(old / name)), str(old / name), metadata=meta)
    saved = json.loads((old / "state.json").read_text())
    del saved["clip"]
    (old / "state.json").write_text(json.dumps(saved))
    _, state = run(data_dir, out, 4, resume=True)
    assert state.step == 4 and len(state.losses) == 4


def test_the_progress_bar_shows_the_recent_mean_loss_at_every_step(data_dir, tmp_path, monkeypatch):
    from simda.pipelines import training

    bars = []

    class Bar:
        def __init__(self, iterable, disable=False, **kwargs):
            self.iterable, self.disable, self.losses = iterable, disable, []
            bars.append(self)

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix(self, refresh=True, **postfix):
            self.losses.append(postfix["loss"])

    monkeypatch.setattr(training, "tqdm", Bar)
    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    dataset = ClipDataset(str(data_dir), 3, 64, 64)
    config = TrainConfig(steps=3, batch_size=1, checkpoint_every=10, log_every=2)
    losses = train(pipe, dataset, str(tmp_path / "shown"), config).losses
    assert bars[0].losses == [f"{np.mean(losses[max(0, i - 1) : i + 1]):.4f}" for i in range(3)]
    train(pipe, dataset, str(tmp_path / "quiet"), config, progress=False)
    assert bars[1].disable and bars[1].losses == []


def test_train_restores_eval_mode_and_checkpointing_after_a_failure(
    data_dir, tmp_path, monkeypatch
):
    from simda.pipelines import training

    calls = []
    target = training.diffusion_target

    def failing_target(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected failure in step 2")
        return target(*args)

    monkeypatch.setattr(training, "diffusion_target", failing_target)
    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    config = TrainConfig(steps=3, batch_size=1, checkpoint_every=10)
    dataset = ClipDataset(str(data_dir), 3, 64, 64)
    with pytest.raises(RuntimeError, match="injected failure"):
        train(pipe, dataset, str(tmp_path / "fail"), config, progress=False)
    assert len(calls) == 2
    assert not pipe.unet.training and not pipe.unet.unet.is_gradient_checkpointing


def test_train_checks_its_dataset_and_config(data_dir, tmp_path):
    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    config = TrainConfig(steps=1, batch_size=1)
    with pytest.raises(SimDAError, match=r"dataset must be a ClipDataset, got str .*ClipDataset\("):
        train(pipe, str(data_dir), str(tmp_path), config, progress=False)
    with pytest.raises(SimDAError, match="config must be a TrainConfig, got dict"):
        train(pipe, ClipDataset(str(data_dir), 3, 64, 64), str(tmp_path), {"steps": 1})
    assert not os.path.exists(tmp_path / "checkpoint")


def test_superres_training_needs_the_superres_variant_and_records_its_scale(data_dir, tmp_path):
    from simda.pipelines import make_superres

    dataset = ClipDataset(str(data_dir), 3, 64, 64)
    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    sr = TrainConfig(steps=1, batch_size=1, superres_scale=2)
    with pytest.raises(SimDAError, match=r"superres_scale=2 .*make_superres\(pipe, 2\)"):
        train(pipe, dataset, str(tmp_path / "a"), sr, progress=False)
    make_superres(pipe)  # the variant, no scale recorded yet
    plain = TrainConfig(steps=1, batch_size=1)
    with pytest.raises(SimDAError, match="super-resolution variant .*superres_scale"):
        train(pipe, dataset, str(tmp_path / "b"), plain, progress=False)
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")
    assert pipe.config.superres_scale is None
    train(pipe, dataset, str(tmp_path / "c"), sr, progress=False)
    assert pipe.config.superres_scale == 2


def test_training_records_the_clip_shape_it_trained_on(data_dir, tmp_path):
    pipe, _ = run(data_dir, tmp_path / "a", 1)
    assert pipe.config.sampling == {"num_frames": 3, "height": 64, "width": 64}
    every = SimDAPipeline.from_preset("tiny", seed=0)
    config = TrainConfig(steps=1, checkpoint_every=1)
    train(
        every, ClipDataset(str(data_dir), None, 64, 64), str(tmp_path / "b"), config, progress=False
    )
    assert every.config.sampling == {"height": 64, "width": 64}  # every frame: no clip length
