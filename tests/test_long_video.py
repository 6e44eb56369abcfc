"""Long videos: context windows (FreeNoise at the level of the UNet) and prompts over time."""

import json

import numpy as np
import pytest
import torch

from simda import toyworld
from simda.errors import SimDAError
from simda.pipelines import SimDAPipeline, edit_video, make_superres, upscale
from simda.pipelines import windows as W


@pytest.fixture
def pipe():
    pipe = SimDAPipeline.from_preset("tiny", seed=0)
    pipe.register_to_config(sampling={"num_frames": 4})  # the clip length it was "trained" on
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        for p in pipe.unet.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    return pipe


def frames_seen(pipe, monkeypatch):
    """The frame counts of every UNet call, recorded."""
    seen = []
    forward = type(pipe.unet).forward

    def spy(self, sample, *args, **kwargs):
        seen.append(sample.shape[2])
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(type(pipe.unet), "forward", spy)
    return seen


def latents(pipe, prompt="a red circle", frames=4, **kwargs):
    args = dict(num_frames=frames, num_inference_steps=2, output_type="latent")
    g = torch.Generator().manual_seed(0)
    return pipe(prompt, generator=g, **{**args, **kwargs}).frames


@pytest.mark.parametrize("frames, length, stride", [(24, 16, 4), (20, 8, 4), (9, 8, 3), (8, 8, 4)])
def test_windows_cover_the_clip_and_end_with_it(frames, length, stride):
    spans = W.windows(frames, length, stride)
    assert spans[0][0] == 0 and spans[-1][1] == frames
    assert all(end - start == min(length, frames) for start, end in spans)
    assert all(b[0] - a[0] <= stride for a, b in zip(spans, spans[1:], strict=False))
    covered = set().union(*(range(a, b) for a, b in spans))
    assert covered == set(range(frames))
    assert W.windows(24, 16, 4) == [(0, 16), (4, 20), (8, 24)]  # diffusers' example


@pytest.mark.parametrize("scheme", W.WEIGHTINGS)
@pytest.mark.parametrize("frames", [9, 20, 37])
def test_blend_weights_sum_to_one_per_frame(scheme, frames):
    spans = W.windows(frames, 8, 3)
    total = torch.zeros(frames, dtype=torch.float64)
    for (a, b), w in zip(spans, W.blend_weights(frames, spans, scheme), strict=True):
        assert (w > 0).all()
        total[a:b] += w
    torch.testing.assert_close(total, torch.ones(frames, dtype=torch.float64))


def test_the_context_scheme_trusts_a_windows_first_frames_least():
    w = W.position_weights("context", 8, first=False, last=False)
    assert w.tolist() == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 0.5]
    assert W.position_weights("context", 8, first=True, last=True).tolist() == [1.0] * 8
    assert W.position_weights("pyramid", 5, False, False).tolist() == [1, 2, 3, 2, 1]


def test_windows_equal_the_single_pass_when_the_clip_fits(pipe):
    plain = latents(pipe, frames=4)
    pipe.enable_free_noise(context_length=4, context_stride=2)
    assert torch.equal(latents(pipe, frames=4), plain)  # bit for bit
    pipe.enable_free_noise()  # the model's 4 frames
    assert torch.equal(
        latents(pipe, frames=3), latents(pipe.disable_free_noise() or pipe, frames=3)
    )


def test_the_unet_never_sees_more_than_a_window(pipe, monkeypatch):
    seen = frames_seen(pipe, monkeypatch)
    pipe.enable_free_noise(context_stride=2)
    out = latents(pipe, frames=11, guidance_scale=3.0)
    assert out.shape[2] == 11 and torch.isfinite(out).all()
    assert seen and max(seen) == 4 and len(seen) == 2 * len(W.windows(11, 4, 2))
    pipe.disable_free_noise()
    seen.clear()
    latents(pipe, frames=11)
    assert seen == [11, 11]  # windows off: the whole clip


def test_noise_arrangements():
    noise = torch.randn(2, 3, 14, 2, 2)
    assert torch.equal(W.arrange_noise(noise, 4, 2, "random"), noise)
    repeated = W.arrange_noise(noise, 4, 2, "repeat_context")
    assert torch.equal(repeated[:, :, 9], noise[:, :, 1])
    shuffled = W.arrange_noise(noise, 4, 3, "shuffle_context", torch.Generator().manual_seed(0))
    assert torch.equal(shuffled[:, :, :4], noise[:, :, :4])
    for start in range(4, 14, 3):  # each chunk: the chunk one window earlier, reordered
        size = min(3, 14 - start)
        chunk = {tuple(shuffled[0, :, f].flatten().tolist()) for f in range(start, start + size)}
        source = {
            tuple(shuffled[0, :, f].flatten().tolist()) for f in range(start - 4, start - 4 + size)
        }
        assert chunk == source


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(context_stride=0), "context_stride must be an int >= 1"),
        (dict(context_length=4, context_stride=5), "must be at most context_length"),
        (dict(weighting_scheme="gauss"), "weighting_scheme must be one of"),
        (dict(noise_type="pink"), "noise_type must be one of"),
        (dict(context_length=2.5), "context_length must be an int"),
    ],
)
def test_bad_settings_are_one_clear_error(pipe, settings, match):
    with pytest.raises(SimDAError, match=match):
        pipe.enable_free_noise(**settings)


def test_a_stride_beyond_the_models_clip_length_is_refused(pipe):
    """The model's clip length is 4: a stride of 6 would leave frames without a window."""
    with pytest.raises(
        SimDAError, match="context_stride .6. must be at most the context length .4"
    ):
        pipe.enable_free_noise(context_stride=6)


def test_a_context_longer_than_the_clip_and_a_model_without_a_clip_length(pipe, monkeypatch):
    pipe.enable_free_noise(context_length=4)
    monkeypatch.setattr(pipe, "embed_prompts", lambda *a: pytest.fail("work began"))
    with pytest.raises(SimDAError, match="context_length 4 is longer than the clip .3 frames"):
        latents(pipe, frames=3)
    with pytest.raises(SimDAError, match="prompt schedule keys must be frame indices in 0..5"):
        latents(pipe, prompt={0: "a", 6: "b"}, frames=6)
    bare = SimDAPipeline.from_preset("tiny")
    with pytest.raises(SimDAError, match="records no clip length .*context_length="):
        bare.enable_free_noise()


def test_prompts_over_time_interpolate_per_frame():
    a, b = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    per_frame = W.interpolate_prompts({2: a, 6: b}, 9)
    assert per_frame.shape == (1, 9, 2, 3)
    assert per_frame[0, :, 0, 0].tolist() == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    calls = []

    def step(start, end, first, last):  # a hard switch halfway (diffusers' signature)
        calls.append((start, end))
        n = end - start + 1
        return torch.cat([first.expand(n // 2, -1, -1), last.expand(n - n // 2, -1, -1)])

    switched = W.interpolate_prompts({2: a, 6: b}, 9, step)
    assert calls == [(2, 6)] and switched[0, :, 0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    with pytest.raises(SimDAError, match="must return .5, L, D. = .5, 2, 3. for frames 2..6"):
        W.interpolate_prompts({2: a, 6: b}, 9, lambda *args: a)


def test_a_prompt_schedule_conditions_each_frame(pipe, monkeypatch):
    texts = []
    forward = type(pipe.unet).forward

    def spy(self, sample, t, text, **kwargs):
        texts.append(text)
        return forward(self, sample, t, text, **kwargs)

    monkeypatch.setattr(type(pipe.unet), "forward", spy)
    out = latents(pipe, prompt={0: "a red circle", 5: "a blue square"}, frames=6)
    assert out.shape[2] == 6
    cond = texts[0][1]  # (uncond, cond) stacked: the conditional half, one text per frame
    assert texts[0].shape[:2] == (2, 6)
    red, blue = pipe.embed_prompts(["a red circle", "a blue square"])
    torch.testing.assert_close(cond[0], red)
    torch.testing.assert_close(cond[5], blue)
    torch.testing.assert_close(cond[2], torch.lerp(red, blue, 0.4))


def test_editing_a_long_clip_tunes_inverts_and_samples_in_windows(pipe, monkeypatch):
    pipe.enable_free_noise(context_stride=2)
    seen = frames_seen(pipe, monkeypatch)
    frames = toyworld.sample(0, frames=9, size=64)[0]
    result = edit_video(pipe, frames, "a", "b", tune_steps=2, num_inference_steps=2, progress=False)
    assert result.edit.shape == frames.shape and result.edit.dtype == np.uint8
    assert max(seen) == 4
    assert 0 < result.tuning.seconds_per_step < 60  # a timer, not a frame index

    with pytest.raises(SimDAError, match="context_length 12 is longer than the clip"):
        pipe.enable_free_noise(context_length=12)
        edit_video(pipe, frames, "a", "b", tune_steps=2, num_inference_steps=2)


def test_super_resolution_of_a_long_clip_runs_in_windows(pipe, monkeypatch):
    make_superres(pipe, 2)
    pipe.enable_free_noise(context_stride=2)
    seen = frames_seen(pipe, monkeypatch)
    low = toyworld.sample(1, frames=7, size=32)[0]
    out = upscale(pipe, low, "", num_inference_steps=2)
    assert out.shape == (7, 64, 64, 3) and max(seen) == 4


def test_the_command_turns_windows_on_for_long_clips_and_takes_prompts_at_frames(tmp_path, capsys):
    import json

    from simda.cli import common, main

    assert common.WEIGHTINGS == W.WEIGHTINGS
    out = str(tmp_path / "out")
    argv = ["generate", "a red circle moving right", "--steps", "2", "--output", out]
    argv += ["--prompt-at", "6:a blue circle moving right", "--name", "long"]
    assert main([*argv, "--frames", "12", "--context-stride", "3", "--weighting", "context"]) == 0
    err = capsys.readouterr().err
    known = json.load(open(f"{out}/long.json"))
    assert "context windows of" in err and "every 3, blended context" in err
    assert known["frames"] == 12 and known["prompt_at"] == [[6, "a blue circle moving right"]]
    assert main([*argv, "--frames", "8"]) == 0
    assert "context windows" not in capsys.readouterr().err  # fits in one window
    with pytest.raises(SystemExit):
        main([*argv, "--prompt-at", "x:y"])
    assert "--prompt-at: must be FRAME:TEXT" in capsys.readouterr().err


def test_batched_windows_give_the_same_clip(pipe, monkeypatch):
    pipe.enable_free_noise(context_stride=2)
    one = latents(pipe, frames=11, guidance_scale=3.0)
    seen = frames_seen(pipe, monkeypatch)
    sizes = []
    forward = type(pipe.unet).forward

    def spy(self, sample, *args, **kwargs):
        sizes.append(sample.shape[0])
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(type(pipe.unet), "forward", spy)
    pipe.enable_free_noise(context_stride=2, window_batch=3)
    batched = latents(pipe, frames=11, guidance_scale=3.0)
    torch.testing.assert_close(batched, one, rtol=1e-4, atol=1e-5)
    windows = len(W.windows(11, 4, 2))  # 5: calls of 3 and 2 windows, x2 for guidance
    assert sizes == [2 * min(3, windows - i) for i in range(0, windows, 3)] * 2  # 2 steps
    assert seen and max(seen) == 4
    prompts = latents(pipe, prompt={0: "a", 10: "b"}, frames=11)
    pipe.enable_free_noise(context_stride=2)
    torch.testing.assert_close(
        latents(pipe, prompt={0: "a", 10: "b"}, frames=11), prompts, rtol=1e-4, atol=1e-5
    )


def test_the_long_clip_scorer_on_rendered_clips():
    from simda.toyworld import long_video

    rng = np.random.default_rng(0)
    for caption in ("a red circle moving right", "a green square moving up"):
        colour, shape, direction = toyworld.parse_caption(caption)
        clip = toyworld.render(colour, shape, direction, frames=16, speed=1.0, rng=rng)
        got = long_video.score_long(clip, caption)
        assert got["along"] == 1.0 and got["colour"] == 1.0 and got["steps"] == 15
        assert 0.9 < got["jump"] < 1.1
        wrong = long_video.score_long(
            clip, caption.replace(direction, "down" if direction == "up" else "left")
        )
        assert wrong["along"] == 0.0
    still = toyworld.render("red", "circle", "right", frames=16, speed=0.0, rng=rng)
    assert long_video.score_long(still, "a red circle moving right")["along"] == 0.0
    jumpy = np.concatenate([clip[:8], np.roll(clip[8:], 9, axis=1)])
    assert long_video.score_long(jumpy, "a green square moving up")["jump"] > long_video.MAX_JUMP
    gone = clip.copy()
    gone[4:] = 0
    assert long_video.score_long(gone, "a green square moving up")["steps"] == 3
    red = toyworld.render("red", "circle", "right", frames=16, speed=1.0, rng=rng)
    blue = red.copy()
    blue[(red == (255, 0, 0)).all(-1)] = (0, 0, 255)
    switched = np.concatenate([red[:10], blue[10:]])
    assert long_video.switch_frame(switched, "blue") == 10
    assert long_video.switch_frame(red, "blue") is None
    # read as the scorer reads: a frame washed with the colour, or noise, is no shape
    washed = np.concatenate([red[:8], np.full_like(red[8:], 255) * np.uint8([1, 0, 0])])
    got = long_video.score_long(washed, "a red circle moving right")
    assert got["colour"] == 0.5 and got["steps"] == 7
    noise = rng.integers(0, 256, red.shape, dtype=np.uint8)
    got = long_video.score_long(noise, "a red circle moving right")
    assert got["colour"] == 0.0 and got["steps"] == 0


def test_eval_toyworld_frames_scores_windows_and_one_pass_side_by_side(tmp_path, capsys):
    from simda.cli import main
    from simda.toyworld import long_video

    argv = ["eval-toyworld", "--frames", "8", "10", "--captions", "1", "--seeds", "1"]
    argv += ["--steps", "2", "--quiet", "--output", str(tmp_path), "--context-stride", "2"]
    assert main(argv) == 0
    saved = json.load(open(tmp_path / "eval-toyworld-long.json"))
    # 8 frames fit one window (windows are the single pass there): one pass only
    assert [(r["frames"], r["mode"]) for r in saved["rows"]] == [
        (8, "one pass"),
        (10, "windows"),
        (10, "one pass"),
    ]
    for row in saved["rows"]:
        assert row["motion"]["clips"] == 1
        assert row["switch"]["clips"] == len(long_video.SWITCHES)
        assert row["switch"]["key"] == row["frames"] // 2
    text = open(tmp_path / "eval-toyworld-long.md").read()
    assert "| 10 | windows | 1 |" in text and "every 2" in text
    assert main([*argv, "--ablations"]) == 2
    assert "--frames scores the --model alone" in capsys.readouterr().err


def test_the_switch_scorer_on_rendered_clips():
    from simda.toyworld import long_video

    red = toyworld.render(
        "red", "circle", "right", frames=16, speed=1.0, rng=np.random.default_rng(1)
    )
    blue = red.copy()
    blue[(red == (255, 0, 0)).all(-1)] = (0, 0, 255)
    got = long_video.score_switch(
        np.concatenate([red[:9], blue[9:]]),
        "a red circle moving right",
        "a blue circle moving right",
        8,
    )
    assert got["switch"] == 9 and got["delay"] == 1 and 0.9 < got["jump"] < 1.1
    jumpy = np.concatenate([red[:8], blue[:8]])  # back to where it started
    got = long_video.score_switch(
        jumpy, "a red circle moving right", "a blue circle moving right", 8
    )
    assert got["delay"] == 0 and got["jump"] > long_video.MAX_JUMP
    never = long_video.score_switch(
        red, "a red circle moving right", "a blue circle moving right", 8
    )
    assert never["switch"] is None and never["delay"] is None
