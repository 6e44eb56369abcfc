"""The toy world: one coloured shape moving on black, with its caption.

Clips are uint8 (F, H, W, 3); the caption is exactly ``"a {colour} {shape} moving
{direction}"``. Everything is a function of the seed.
"""

from __future__ import annotations

import itertools
import os

import numpy as np

from simda.errors import SimDAError

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
CAPTIONS = [f"a {c} {s} moving {d}" for c, s, d in itertools.product(COLOURS, SHAPES, DIRECTIONS)]


def caption(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moving {direction}"


def caption_subset(n: int) -> list[str]:
    """A fixed pseudo-random subset of ``n`` of the 48 captions (all 48 in order for n=48)."""
    if n >= len(CAPTIONS):
        return list(CAPTIONS)
    order = np.random.default_rng(0).permutation(len(CAPTIONS))[:n]
    return [CAPTIONS[i] for i in sorted(order)]


def parse_caption(text: str) -> tuple[str, str, str]:
    words = text.split()
    if len(words) != 5 or words[0] != "a" or words[3] != "moving":
        raise ValueError(f"not a toy-world caption: {text!r}")
    return words[1], words[2], words[4]


def shape_mask(shape: str, cy: float, cx: float, radius: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of a shape centred at (cy, cx)."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = y - cy, x - cx
    if shape == "circle":
        return dy**2 + dx**2 <= radius**2
    if shape == "square":
        return (np.abs(dy) <= radius * 0.85) & (np.abs(dx) <= radius * 0.85)
    # upward triangle: inside the apex-down bounds of three half-planes
    top, bottom = -radius, radius * 0.8
    half_width = (dy - top) / (bottom - top) * radius
    return (dy >= top) & (dy <= bottom) & (np.abs(dx) <= half_width)


def render(
    colour: str,
    shape: str,
    direction: str,
    *,
    frames: int = 8,
    size: int = 32,
    start: tuple[float, float] | None = None,
    speed: float | None = None,
    radius: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One clip. Start position and speed are drawn from ``rng`` when not given, so that the
    shape stays fully inside the frame for the whole clip."""
    for name, value, choices in (
        ("colour", colour, tuple(COLOURS)),
        ("shape", shape, SHAPES),
        ("direction", direction, tuple(DIRECTIONS)),
    ):
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    rng = rng or np.random.default_rng(0)
    radius = radius or size * 0.16
    speed = speed if speed is not None else rng.uniform(0.045, 0.07) * size
    travel = speed * (frames - 1)
    margin = radius + 1
    dy, dx = DIRECTIONS[direction]
    if start is None:

        def axis(d):
            lo = margin + (travel if d < 0 else 0)
            hi = size - margin - (travel if d > 0 else 0)
            return rng.uniform(lo, max(lo, hi))

        start = (axis(dy), axis(dx))
    clip = np.zeros((frames, size, size, 3), np.uint8)
    for f in range(frames):
        cy, cx = start[0] + dy * speed * f, start[1] + dx * speed * f
        clip[f][shape_mask(shape, cy, cx, radius, size)] = COLOURS[colour]
    return clip


def sample(seed: int, *, frames: int = 8, size: int = 32) -> tuple[np.ndarray, str]:
    """A random clip and its caption, a function of ``seed`` alone."""
    rng = np.random.default_rng(seed)
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    return render(colour, shape, direction, frames=frames, size=size, rng=rng), caption(
        colour, shape, direction
    )


# ----------------------------------------------------------------------------- the model
#
# Stage 1 is a pixel-space image model: frames of 32x32 RGB are folded 4x4 into channels by a
# fixed space-to-depth "autoencoder" (8x8x48 latents: lossless, nothing to train, colours
# exact), and the text is a fixed, non-learned encoding (one random vector per word plus a
# position vector, plus the mean of the caption's word vectors on every token), so colour,
# shape and direction words stay distinct for whatever reads them. The bag-of-words term is
# there because SimDA's adapters never see the text: they only see what the frozen
# cross-attention passes on. Without it the stage-1 model attended past the (uninformative)
# direction word, so changing it moved the UNet's output 20x less than changing the colour,
# and adapters trained on that signal left shapes standing still (direction 50%).
# The UNet predicts the clean frame ("sample") rather than the noise: on 48 pixel channels, noise
# prediction asks the network for a near-identity map it learns very slowly (measured: loss
# stuck at 0.40 after 4000 steps, outputs noise), while clean flat-coloured shapes are easy.

VOCAB = ["a", "moving", *COLOURS, *SHAPES, *DIRECTIONS]
SIZE, FRAMES, FACTOR = 32, 8, 4
GUIDANCE = 6.0  # recommended classifier-free guidance (saved with the model)
SAMPLING = {"num_inference_steps": 25, "guidance_scale": GUIDANCE}
# One-shot editing (edit_fidelity; CPU defaults of `simda demo`: 60 tuning and 20 DDIM steps;
# seeds 0-5): at guidance 3 a blue shape shows in 20 of 48 frames (three seeds lose it
# entirely), at 4.5 in 44, 3.4 px on average from the source square's centre; higher guidance
# moves it further away and, at the released 12.5, speckles it.
EDIT_GUIDANCE = 4.5


def edit_guidance(pipe) -> float:
    """The default guidance of an edit: EDIT_GUIDANCE for a toy-world model, else the
    released setting (``editing.RELEASED_GUIDANCE``, 12.5)."""
    from simda.pipelines.editing import RELEASED_GUIDANCE

    return EDIT_GUIDANCE if is_toyworld(pipe) else RELEASED_GUIDANCE


def is_toyworld(pipe) -> bool:
    """Whether ``pipe`` is a toy-world pipeline (space-to-depth pixels, 48 channels)."""
    return pipe.unet.config.in_channels == 3 * FACTOR**2


def base_unet_config() -> dict:
    from simda.presets import unet2d_config

    return {
        **unet2d_config("tiny"),
        "in_channels": 3 * FACTOR**2,
        "out_channels": 3 * FACTOR**2,
        "sample_size": SIZE // FACTOR,
    }


def build_pipeline(seed: int = 0):
    """The untrained toy-world pipeline: image UNet (inflated, adapters at identity), fixed text
    encoding, space-to-depth autoencoder, DDIM."""
    import torch
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from simda.pipelines.pixel import SpaceToDepthAutoencoder
    from simda.pipelines.t2v import SD_SCHEDULER, SimDAPipeline
    from simda.pipelines.text import TinyTextEncoder, WordTokenizer
    from simda.unet import inflate

    torch.manual_seed(seed)
    config = base_unet_config()
    tokenizer = WordTokenizer(vocab_size=64, max_length=8, vocab=VOCAB)
    text = TinyTextEncoder(
        tokenizer.vocab_size, config["cross_attention_dim"], 8, layers=0, pooled=1.0
    )
    with torch.no_grad():
        text.token.weight.normal_()  # fixed: never trained
        text.position.normal_(0.0, 0.3)
    unet = inflate(UNet2DConditionModel(**config))
    return SimDAPipeline(
        unet,
        SpaceToDepthAutoencoder(FACTOR),
        text,
        tokenizer,
        DDIMScheduler(**SD_SCHEDULER, prediction_type="sample"),
        {
            "preset": "toyworld",
            "description": "toy-world text-to-video",
            "sampling": dict(SAMPLING),
        },
    )


def frame_batch(seed: int, batch: int):
    """``batch`` single frames (uint8 (B, 32, 32, 3)) of random clips, and their captions."""
    rng = np.random.default_rng(seed)
    frames, captions = [], []
    for _ in range(batch):
        clip, text = sample(int(rng.integers(2**31)), frames=FRAMES, size=SIZE)
        frames.append(clip[rng.integers(FRAMES)])
        captions.append(text)
    return np.stack(frames), captions


def one_cycle(optimizer, lr: float, steps: int):
    """Warm up over the first 5 % of the steps, then cosine down (``OneCycleLR``). Short runs
    warm up over 2 steps: ``OneCycleLR`` divides by zero when the warm-up is exactly 1 step
    (20 steps at 5 %); fewer than 4 steps keep the peak rate."""
    import torch

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps < 4:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    pct_start = 0.05 if steps >= 40 else 2 / steps
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, lr, total_steps=steps, pct_start=pct_start
    )


def train_base(
    output: str,
    *,
    steps: int = 3000,
    batch: int = 64,
    lr: float = 1e-3,
    caption_dropout: float = 0.1,
    seed: int = 0,
    progress: bool = True,
    device="cpu",
) -> list[float]:
    """Stage 1: train the image model on single frames with their captions (the direction
    word is there but carries no signal in one frame) on ``device``. Saves the pipeline to
    ``output``. Noise and timesteps are drawn on the CPU, so a run's inputs do not depend on
    the device."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from simda.pipelines.editing import step_generator
    from simda.pipelines.t2v import diffusion_target, draw_noise

    check_new_model_folder(output)
    pipe = build_pipeline(seed).to(device)
    unet2d = pipe.unet.unet
    base = [p for n, p in unet2d.named_parameters() if "adapter" not in n]
    for p in base:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(base, lr=lr, weight_decay=0.0)
    schedule = one_cycle(optimizer, lr, steps)
    pipe.unet.train()
    pipe.unet.set_lsa_layout("self")  # one frame at a time: plain self-attention
    losses = []
    bar = tqdm(range(steps), desc="stage 1 (image model)", disable=not progress)
    for step in bar:
        frames, captions = frame_batch(seed * 1_000_003 + step, batch)
        g = step_generator(seed, step)
        drop = torch.rand(batch, generator=g) < caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
        latents = pipe.encode_video(frames[:, None])  # (B, 48, 1, 8, 8)
        noise = draw_noise(latents.shape, g).to(latents.device)
        t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (batch,), generator=g)
        t = t.to(latents.device)
        noisy = pipe.scheduler.add_noise(latents, noise, t)
        cond = pipe.encode_prompt(captions)
        loss = F.mse_loss(
            pipe.unet(noisy, t, cond), diffusion_target(pipe.scheduler, latents, noise, t)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    for p in base:
        p.requires_grad_(False)
    pipe.unet.eval()
    pipe.unet.set_lsa_layout("paper")
    pipe.to("cpu").save_pretrained(output)
    return losses


SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "toyworld")


def shipped_folder(target: str = SHIPPED) -> str | None:
    """The built-in model's folder: ``target``, or ``target.old`` when ``ship`` stopped between
    its two renames; None when neither holds a model."""
    for folder in (target, target + ".old"):
        if os.path.isfile(os.path.join(folder, "model_index.json")):
            return folder
    return None


def ship(model: str, target: str = SHIPPED) -> str:
    """Store the trained toy-world pipeline folder ``model`` as the built-in model (fp16) at
    ``target``: written to ``target.tmp``, then swapped in by two renames (the old model to
    ``target.old``, deleted last), so a failure at any point leaves a complete model at
    ``target`` or ``target.old`` (``shipped_folder``)."""
    import glob
    import shutil

    import torch

    from simda.pipelines import SimDAPipeline

    pipe = SimDAPipeline.from_pretrained(model)
    if not is_toyworld(pipe):
        raise SimDAError(f"--model {model!r} is not a toy-world model")
    pipe.config.setdefault("sampling", dict(SAMPLING))
    staging, previous = target + ".tmp", target + ".old"
    if shipped_folder(target) == previous:  # an earlier ship stopped between its renames
        os.replace(previous, target)
    for leftover in [staging, previous, *glob.glob(glob.escape(target) + ".*-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        pipe.save_pretrained(staging, dtype=torch.float16)
        if os.path.exists(target):
            os.replace(target, previous)
        os.replace(staging, target)
    except BaseException:
        if not os.path.exists(target) and os.path.isdir(previous):
            os.replace(previous, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return target


def check_new_model_folder(output: str) -> None:
    """Refuse, before any training, to write a model over one already in ``output``."""

    if os.path.exists(os.path.join(output, "model_index.json")):
        raise SimDAError(
            f"{output!r} already holds a model: write to another folder or delete it first "
            "(nothing was overwritten)"
        )


def write_dataset(output: str, clips: int, seed: int = 0) -> str:
    """``clips`` random clips as GIF + caption .txt, the layout ``simda train --data`` reads,
    into a folder that holds no clips yet (two data sets would mix)."""
    from simda.video import write_video

    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise SimDAError(f"clips (--clips) must be a positive integer, got {clips!r}")
    if os.path.isdir(output):
        held = [n for n in os.listdir(output) if n.endswith((".txt", ".csv"))]
        if held:  # captions make clips a data set (videos alone, e.g. outputs, are ignored)
            raise SimDAError(
                f"{output!r} already holds {len(held)} caption files: write the data set to "
                "another folder (a second set would mix with the first)"
            )
    os.makedirs(output, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(clips):
        clip, text = sample(int(rng.integers(2**31)), frames=FRAMES, size=SIZE)
        write_video(os.path.join(output, f"clip{i:05d}.gif"), clip)
        with open(os.path.join(output, f"clip{i:05d}.txt"), "w") as f:
            f.write(text + "\n")
    return output


# ----------------------------------------------------------------------------- evaluation

COLOUR_TOLERANCE = 100  # per channel, on 0..255
MIN_PIXELS = 10  # a shape covers about 30-80 pixels of a 32x32 frame


def _components(mask: np.ndarray) -> list[int]:
    """Sizes of the 4-connected components of a boolean (H, W) mask."""
    seen = np.zeros_like(mask, dtype=bool)
    sizes = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        stack, size = [start], 0
        seen[start] = True
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if (
                    0 <= ny < mask.shape[0]
                    and 0 <= nx < mask.shape[1]
                    and mask[ny, nx]
                    and not seen[ny, nx]
                ):
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        sizes.append(size)
    return sizes


def centre(mask: np.ndarray) -> np.ndarray:
    """(y, x) centre of the pixels of a non-empty boolean (H, W) mask."""
    ys, xs = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    count = mask.sum()
    return np.array([(ys * mask).sum() / count, (xs * mask).sum() / count])


def colour_masks(clip: np.ndarray) -> dict[str, np.ndarray]:
    """Per colour, the (F, H, W) pixels close to it."""
    pixels = clip.astype(np.int16)
    return {
        name: (np.abs(pixels - np.array(rgb)) <= COLOUR_TOLERANCE).all(-1)
        for name, rgb in COLOURS.items()
    }


def score(clip: np.ndarray, text: str) -> dict:
    """Detect the shape by colour and score a clip against its caption.

    colour: the colour with the most pixels is the caption's; presence: in every frame that
    colour covers >= MIN_PIXELS and one connected blob holds >= 80% of them; direction: the
    larger component of the centroid's least-squares velocity, by sign, is the caption's.
    """
    colour, _shape, direction = parse_caption(text)
    masks = colour_masks(clip)
    found = max(masks, key=lambda c: masks[c].sum())
    mask = masks[found]
    counts = mask.sum((1, 2))
    present = bool((counts >= MIN_PIXELS).all()) and all(
        max(_components(m), default=0) >= 0.8 * m.sum() for m in mask
    )
    moved = None
    frames = np.nonzero(counts >= MIN_PIXELS)[0]
    if len(frames) >= 2:
        cy, cx = np.array([centre(mask[f]) for f in frames]).T
        vy, vx = np.polyfit(frames, cy, 1)[0], np.polyfit(frames, cx, 1)[0]
        if max(abs(vy), abs(vx)) > 0.1:  # pixels per frame
            moved = (
                ("down" if vy > 0 else "up")
                if abs(vy) > abs(vx)
                else ("right" if vx > 0 else "left")
            )
    return {
        "caption": text,
        "colour": found,
        "direction": moved,
        "colour_ok": found == colour,
        "direction_ok": moved == direction,
        "present": present,
    }


def generate_clips(
    pipe,
    captions: list[str],
    seeds,
    *,
    steps: int = 25,
    guidance: float | None = None,
    batch: int = 16,
    progress: bool = True,
):
    """Sample every caption with every seed: yields (caption, seed, clip). ``guidance``
    defaults to the model's recommended scale."""
    import torch
    from tqdm.auto import tqdm

    jobs = [(c, s) for s in seeds for c in captions]
    bar = tqdm(total=len(jobs), desc="sampling", disable=not progress, leave=False)
    for i in range(0, len(jobs), batch):
        chunk = jobs[i : i + batch]
        noise = torch.stack(
            [
                torch.randn(
                    (pipe.unet.config.out_channels, FRAMES, SIZE // FACTOR, SIZE // FACTOR),
                    generator=torch.Generator().manual_seed(
                        s * 7919 + CAPTIONS.index(c) if c in CAPTIONS else s
                    ),
                )
                for c, s in chunk
            ]
        ).to(pipe.device, pipe.dtype)
        out = pipe(
            [c for c, _ in chunk],
            num_frames=FRAMES,
            height=SIZE,
            width=SIZE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            latents=noise,
            progress=False,
        )
        for (c, s), clip in zip(chunk, out.frames, strict=True):
            yield c, s, clip
        bar.update(len(chunk))
    bar.close()


def evaluate(
    pipe,
    *,
    seeds=(0, 1),
    steps: int = 25,
    guidance: float | None = None,
    captions: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Colour, direction and presence accuracy over the captions x seeds."""
    results = [
        score(clip, c)
        for c, _s, clip in generate_clips(
            pipe, captions or CAPTIONS, seeds, steps=steps, guidance=guidance, progress=progress
        )
    ]
    n = len(results)
    return {
        "clips": n,
        "colour": sum(r["colour_ok"] for r in results) / n,
        "direction": sum(r["direction_ok"] for r in results) / n,
        "presence": sum(r["present"] for r in results) / n,
        "results": results,
    }


ABLATIONS = {
    "full model": {},
    "without temporal adapters": {"temporal": False},
    "without latent-shift attention (self-attention)": {"lsa": False},
    "without spatial adapters": {"spatial": False},
    "image model (no adapters, self-attention)": {
        "temporal": False,
        "spatial": False,
        "lsa": False,
    },
}


def ablate(pipe, *, temporal: bool = True, spatial: bool = True, lsa: bool = True):
    """A copy of ``pipe`` with components removed at inference (see
    ``simda.unet.remove_components``); the original is untouched."""
    import copy

    from simda.unet import remove_components

    clone = copy.copy(pipe)
    clone.unet = copy.deepcopy(pipe.unet)
    remove_components(clone.unet, temporal=not temporal, spatial=not spatial, lsa=not lsa)
    return clone


def report(rows: dict[str, dict], settings: dict) -> str:
    lines = ["| model | clips | colour | direction | presence |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['clips']} | {100 * r['colour']:.1f}% | "
            f"{100 * r['direction']:.1f}% | {100 * r['presence']:.1f}% |"
        )
    setting = ", ".join(f"{k} {v}" for k, v in settings.items())
    return "\n".join(lines) + f"\n\n{setting}. Chance is 25% for colour and direction.\n"
