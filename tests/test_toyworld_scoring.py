"""The toy-world scorer: rendered clips score 100 %, and every degenerate output scores zero or
chance on the check it fakes (one clip per caption, all 48 captions)."""

import numpy as np
import pytest

from simda import toyworld
from simda.toyworld import scoring

CHECKS = [f"{m}_ok" for m in scoring.METRICS]


def rates(make) -> dict[str, float]:
    """Per check, the fraction of the 48 captions whose clip ``make(colour, shape, direction,
    rng)`` passes it."""
    results = []
    for i, text in enumerate(toyworld.CAPTIONS):
        colour, shape, direction = toyworld.parse_caption(text)
        clip = make(colour, shape, direction, np.random.default_rng(i))
        results.append(toyworld.score(clip, text))
    return {k: float(np.mean([r[k] for r in results])) for k in [*CHECKS, "all_ok"]}


def true(colour, shape, direction, rng):
    return toyworld.render(colour, shape, direction, rng=rng)


@pytest.mark.parametrize("size, seeds", [(32, 3), (64, 1)])
def test_rendered_clips_score_100_percent(size, seeds):
    for seed in range(seeds):
        for text in toyworld.CAPTIONS:
            colour, shape, direction = toyworld.parse_caption(text)
            rng = np.random.default_rng(seed)
            clip = toyworld.render(colour, shape, direction, size=size, rng=rng)
            result = toyworld.score(clip, text)
            assert result["all_ok"] and result["softness"] == 0.0, result
            assert (result["colour"], result["shape"], result["direction"]) == (
                colour,
                shape,
                direction,
            )
            blob = scoring.largest_blobs(clip.max(-1) >= scoring.FOREGROUND)[3]
            assert scoring.shape_match(blob)[shape] > 0.9


def test_a_full_frame_of_the_colour_is_no_shape():
    def full(colour, shape, direction, rng):
        return np.broadcast_to(np.array(toyworld.COLOURS[colour], np.uint8), (8, 32, 32, 3))

    got = rates(full)
    assert got["colour_ok"] == 1.0  # the colour is there: what it fakes is the shape
    assert got["shape_ok"] == got["size_ok"] == got["direction_ok"] == got["speed_ok"] == 0.0


def test_a_static_shape_does_not_move():
    got = rates(lambda *a: np.repeat(true(*a)[:1], 8, axis=0))
    assert got["direction_ok"] == got["speed_ok"] == got["all_ok"] == 0.0
    assert got["shape_ok"] == got["size_ok"] == 1.0


def test_a_huge_slow_blob_has_no_size_shape_or_motion():
    """The 453-pixel blob drifting 0.3 pixels per frame the old detector scored 100 %."""

    def huge(colour, shape, direction, rng):
        return toyworld.render(colour, "circle", direction, start=(16, 16), speed=0.3, radius=12)

    assert toyworld.score(huge("red", 0, "left", 0), "a red circle moving left")["area"] > 440
    got = rates(huge)
    assert got["size_ok"] == got["shape_ok"] == got["direction_ok"] == got["speed_ok"] == 0.0


def test_two_shapes_are_not_one():
    def two(colour, shape, direction, rng):
        dy, dx = toyworld.DIRECTIONS[direction]
        across = (10, 22) if dy == 0 else None  # the two shapes side by side, across the motion
        starts = [(s, 10 if dx > 0 else 22) for s in across] if across else None
        starts = starts or [(10 if dy > 0 else 22, s) for s in (10, 22)]
        return np.maximum(
            *(toyworld.render(colour, shape, direction, start=s, speed=1.5) for s in starts)
        )

    got = rates(two)
    assert got["size_ok"] == got["all_ok"] == 0.0
    assert got["colour_ok"] == got["direction_ok"] == 1.0


def test_noise_scores_nothing():
    got = rates(lambda c, s, d, rng: rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    assert all(v == 0.0 for v in got.values()), got


def test_one_clip_for_every_caption_scores_chance():
    clip = toyworld.render("red", "square", "left", rng=np.random.default_rng(5))
    got = rates(lambda *a: clip)
    assert got["colour_ok"] == got["direction_ok"] == got["speed_ok"] == 0.25
    assert got["shape_ok"] == pytest.approx(1 / 3)
    assert got["all_ok"] == pytest.approx(1 / 48)


def test_always_a_circle_scores_chance_on_shape():
    got = rates(lambda c, s, d, rng: toyworld.render(c, "circle", d, rng=rng))
    assert got["shape_ok"] == got["all_ok"] == pytest.approx(1 / 3)
    assert got["colour_ok"] == got["direction_ok"] == got["speed_ok"] == 1.0


def blur(clip: np.ndarray) -> np.ndarray:
    """A binomial (1 4 6 4 1)/16 blur over height and width."""
    kernel = np.array([1, 4, 6, 4, 1], np.float32) / 16
    x = clip.astype(np.float32)
    for axis in (1, 2):
        x = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, x)
    return x.round().astype(np.uint8)


def test_a_blurred_shape_is_soft_and_only_that():
    got = rates(lambda *a: blur(true(*a)))
    assert got["sharp_ok"] == got["all_ok"] == 0.0
    assert all(got[k] == 1.0 for k in CHECKS if k != "sharp_ok"), got
    clip = blur(toyworld.render("red", "circle", "left"))
    assert toyworld.score(clip, "a red circle moving left")["softness"] > 0.5


def test_motion_outside_the_data_speeds_or_jumping_is_caught():
    slow = rates(lambda c, s, d, rng: toyworld.render(c, s, d, speed=0.3, rng=rng))
    assert slow["direction_ok"] == slow["speed_ok"] == 0.0
    fast = rates(lambda c, s, d, rng: toyworld.render(c, s, d, speed=3.5, frames=8, rng=rng))
    assert fast["direction_ok"] == 1.0 and fast["speed_ok"] == 0.0

    def jumping(colour, shape, direction, rng):  # a new place in every frame: no motion
        frames = [toyworld.render(colour, shape, direction, rng=rng)[0] for _ in range(8)]
        return np.stack(frames)

    got = rates(jumping)
    assert got["speed_ok"] == 0.0 and got["direction_ok"] < 0.5
    assert got["shape_ok"] == got["size_ok"] == 1.0


def test_a_missing_frame_fails_size_but_not_the_rest():
    clip = toyworld.render("blue", "triangle", "up", rng=np.random.default_rng(1))
    clip[4] = 0
    result = toyworld.score(clip, "a blue triangle moving up")
    assert not result["size_ok"]
    assert result["colour_ok"] and result["direction_ok"] and result["speed_ok"]
    # a shape missing from most frames is no shape: the mean match counts them as zero
    clip[1:7] = 0
    assert toyworld.score(clip, "a blue triangle moving up")["shape"] is None
    assert toyworld.score(np.zeros_like(clip), "a blue triangle moving up") == {
        "caption": "a blue triangle moving up",
        "colour": None,
        "shape": None,
        "direction": None,
        "speed": None,
        "area": 0.0,
        "softness": 1.0,
        **dict.fromkeys([*CHECKS, "all_ok"], False),
    }


@pytest.mark.parametrize(
    "clip",
    [
        np.zeros((8, 32, 32, 3), np.float32),
        np.zeros((8, 32, 32), np.uint8),
        np.zeros((8, 32, 16, 3), np.uint8),
        [[0]],
    ],
)
def test_score_names_a_wrong_clip(clip):
    with pytest.raises(ValueError, match=r"^clip must be a uint8 \(F, H, H, 3\) array, got"):
        toyworld.score(clip, "a red circle moving left")


def test_dim_or_mixed_colours_are_no_colour():
    clip = toyworld.render("red", "circle", "left", rng=np.random.default_rng(0))
    dim = (clip * 0.55).astype(np.uint8)  # 140: bright enough to be seen, too dim to be red
    assert toyworld.score(dim, "a red circle moving left")["colour"] is None
    orange = clip.copy()
    orange[..., 1] = np.where(clip[..., 0] > 0, 128, 0)
    assert toyworld.score(orange, "a red circle moving left")["colour"] is None
