"""The toy world: one coloured shape moving on black, with its caption.

Clips are uint8 (F, H, W, 3); the caption is exactly ``"a {colour} {shape} moving
{direction}"``. Everything is a function of the seed.
"""

from __future__ import annotations

import itertools

import numpy as np

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
CAPTIONS = [f"a {c} {s} moving {d}" for c, s, d in itertools.product(COLOURS, SHAPES, DIRECTIONS)]


def caption(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moving {direction}"


def parse_caption(text: str) -> tuple[str, str, str]:
    words = text.split()
    if len(words) != 5 or words[0] != "a" or words[3] != "moving":
        raise ValueError(f"not a toy-world caption: {text!r}")
    return words[1], words[2], words[4]


def shape_mask(shape: str, cy: float, cx: float, radius: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of a shape centred at (cy, cx)."""
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
# position vector), so colour, shape and direction words stay distinct for whatever reads them.

VOCAB = ["a", "moving", *COLOURS, *SHAPES, *DIRECTIONS]
SIZE, FRAMES, FACTOR = 32, 8, 4


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
    text = TinyTextEncoder(tokenizer.vocab_size, config["cross_attention_dim"], 8, layers=0)
    with torch.no_grad():
        text.token.weight.normal_()  # fixed: never trained
        text.position.normal_(0.0, 0.3)
    unet = inflate(UNet2DConditionModel(**config))
    return SimDAPipeline(
        unet,
        SpaceToDepthAutoencoder(FACTOR),
        text,
        tokenizer,
        DDIMScheduler(**SD_SCHEDULER),
        {"preset": "toyworld", "description": "toy-world text-to-video"},
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


def train_base(
    output: str,
    *,
    steps: int = 3000,
    batch: int = 64,
    lr: float = 1e-3,
    caption_dropout: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Stage 1: train the image model on single frames with their captions (the direction
    word is there but carries no signal in one frame). Saves the pipeline to ``output``."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from simda.pipelines.editing import step_generator

    pipe = build_pipeline(seed)
    unet2d = pipe.unet.unet
    base = [p for n, p in unet2d.named_parameters() if "adapter" not in n]
    for p in base:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(base, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.05)
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
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (batch,), generator=g)
        noisy = pipe.scheduler.add_noise(latents, noise, t)
        cond = pipe.encode_prompt(captions)
        loss = F.mse_loss(pipe.unet(noisy, t, cond), noise)
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
    pipe.save_pretrained(output)
    return losses


def write_dataset(output: str, clips: int, seed: int = 0) -> str:
    """``clips`` random clips as GIF + caption .txt, the layout ``simda train --data`` reads."""
    import os

    from simda.video import write_video

    os.makedirs(output, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(clips):
        clip, text = sample(int(rng.integers(2**31)), frames=FRAMES, size=SIZE)
        write_video(os.path.join(output, f"clip{i:05d}.gif"), clip)
        with open(os.path.join(output, f"clip{i:05d}.txt"), "w") as f:
            f.write(text + "\n")
    return output
