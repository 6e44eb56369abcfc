"""The toy-world model: its parts, and stage 1 of its recipe (the image model).

Stage 1 is a pixel-space image model: frames of 32x32 RGB are folded 4x4 into channels by a
fixed space-to-depth "autoencoder" (8x8x48 latents: lossless, nothing to train, colours
exact), and the text is a fixed, non-learned encoding (one random vector per word plus a
position vector, plus the mean of the caption's word vectors on every token), so colour,
shape and direction words stay distinct for whatever reads them. The bag-of-words term is
there because SimDA's adapters never see the text: they only see what the frozen
cross-attention passes on. Without it the stage-1 model attended past the (uninformative)
direction word, so changing it moved the UNet's output 20x less than changing the colour,
and adapters trained on that signal left shapes standing still (direction 50%).
The UNet predicts the velocity (``v_prediction``), which every diffusers scheduler for SD 1.x
accepts. At low noise the velocity is nearly the noise itself, so the UNet must carry all 48
channels of noise from its input to its output, through a SiLU before the last convolution:
that takes about twice 48 channels at the top level (``WIDTHS``), where 32 left half the noise
in every sample. Stage 1 weights the loss by min-SNR (``MIN_SNR_GAMMA``).
Stage 2 is SimDA itself: ``simda train`` on the frozen stage-1 model (``docs/toyworld.md``).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm

from simda.errors import SimDAError
from simda.pipelines.pixel import SpaceToDepthAutoencoder
from simda.pipelines.t2v import SD_SCHEDULER, SimDAPipeline, draw_noise
from simda.pipelines.text import TinyTextEncoder, WordTokenizer
from simda.pipelines.tuning import diffusion_target, noise_schedule, step_generator
from simda.presets import unet2d_config
from simda.toyworld.world import FRAMES, SIZE, VOCAB, sample
from simda.unet import SimDAUNet

FACTOR = 4  # pixels folded into channels per side (32x32x3 -> 8x8x48)
WIDTHS = (128, 64, 64, 64)  # the UNet's block widths (the tiny preset's are 32, 64, 64, 64)
# Min-SNR weighting (Hang et al. 2023): the x0 error weighted by min(SNR, gamma), i.e. the
# velocity error by min(SNR, gamma) / (SNR + 1), since |x0 error|^2 = |v error|^2 / (SNR + 1)
MIN_SNR_GAMMA = 5.0
GUIDANCE = 6.0  # recommended classifier-free guidance
# One-shot editing (edit_fidelity; CPU defaults of `simda demo`: 60 tuning and 20 DDIM steps;
# seeds 0-5): at guidance 3 a blue shape shows in 20 of 48 frames (three seeds lose it
# entirely), at 4.5 in 44, 3.4 px on average from the source square's centre; higher guidance
# moves it further away and, at the released 12.5, speckles it.
EDIT_GUIDANCE = 4.5
#: the recommended settings saved with the model (``SimDAPipeline.config.sampling``)
SAMPLING = {
    "num_inference_steps": 25,
    "guidance_scale": GUIDANCE,
    "edit_guidance_scale": EDIT_GUIDANCE,
    "num_frames": FRAMES,
    "height": SIZE,
    "width": SIZE,
}


def is_toyworld(pipe) -> bool:
    """Whether ``pipe`` is a toy-world pipeline (space-to-depth pixels, 48 channels)."""
    return isinstance(pipe.vae, SpaceToDepthAutoencoder) and pipe.unet.config.in_channels in (
        3 * FACTOR**2,
        6 * FACTOR**2,
    )


def base_unet_config() -> dict:
    return {
        **unet2d_config("tiny"),
        "in_channels": 3 * FACTOR**2,
        "out_channels": 3 * FACTOR**2,
        "sample_size": SIZE // FACTOR,
        "block_out_channels": WIDTHS,
    }


def build_pipeline(seed: int = 0) -> SimDAPipeline:
    """The untrained toy-world pipeline: image UNet (inflated, adapters at identity), fixed text
    encoding, space-to-depth autoencoder, DDIM, and the recommended settings."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = WordTokenizer(vocab_size=64, max_length=8, vocab=VOCAB)
        config = base_unet_config()
        text = TinyTextEncoder(
            tokenizer.vocab_size, config["cross_attention_dim"], 8, layers=0, pooled=1.0
        )
        with torch.no_grad():
            text.token.weight.normal_()  # fixed: never trained
            text.position.normal_(0.0, 0.3)
        text.requires_grad_(False)
        unet = SimDAUNet.from_unet2d(UNet2DConditionModel(**config))
    for module in (unet, text):
        module.eval()
    return SimDAPipeline(
        SpaceToDepthAutoencoder(FACTOR),
        text,
        tokenizer,
        unet,
        DDIMScheduler(**SD_SCHEDULER, prediction_type="v_prediction"),
        sampling=dict(SAMPLING),
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
    check_new_model_folder(output)
    pipe = build_pipeline(seed).to(device)
    unet2d = pipe.unet.unet
    base = [p for n, p in unet2d.named_parameters() if "adapter" not in n]
    for p in base:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(base, lr=lr, weight_decay=0.0)
    schedule = one_cycle(optimizer, lr, steps)
    noising = noise_schedule(pipe)
    alphas = noising.alphas_cumprod.to(device)
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
        t = torch.randint(0, noising.config.num_train_timesteps, (batch,), generator=g)
        t = t.to(latents.device)
        noisy = noising.add_noise(latents, noise, t)
        cond = pipe.embed_prompts(captions)
        target = diffusion_target(noising, latents, noise, t)
        error = (pipe.unet(noisy, t, cond).sample - target).pow(2).mean((1, 2, 3, 4))
        snr = alphas[t] / (1 - alphas[t])
        loss = (error * snr.clamp(max=MIN_SNR_GAMMA) / (snr + 1)).mean()
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


def check_new_model_folder(output: str) -> None:
    """Refuse, before any training, to write a model over one already in ``output``."""
    if os.path.exists(os.path.join(output, "model_index.json")):
        raise SimDAError(
            f"{output!r} already holds a model: write to another folder or delete it first "
            "(nothing was overwritten)"
        )
