"""Adapter training on a folder of clips with captions, with checkpoints and exact resume.

Data: a folder of videos (mp4, gif, ...) each with a caption file of the same name (.txt), or
a CSV with columns ``path,caption`` (paths relative to the CSV). Every training step draws its
clips, timesteps and noise from a generator seeded by (seed, step), so a run resumed from a
checkpoint continues exactly as if it had never stopped. Checkpoints (adapters, AdamW state,
step, losses) are written as one unit every ``checkpoint_every`` steps: a killed run loses at
most that many steps, and never resumes from a mix of two saves.

Under ``torchrun --nproc_per_node N`` (or ``accelerate launch``) the adapters train with
DistributedDataParallel (gloo on CPU, NCCL on GPU): each rank takes its share of the global
batch, rank 0 writes checkpoints.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from tqdm.auto import tqdm

from simda.checkpoint import (
    atomic_save,
    complete_folder,
    load_adapters,
    read_safetensors,
    replace_folder,
    save_adapters,
)
from simda.errors import SimDAError
from simda.pipelines.checks import check_factor, is_int
from simda.pipelines.superres import check_scale, degrade, is_superres, low_res_condition
from simda.pipelines.t2v import SimDAPipeline, draw_noise
from simda.pipelines.tuning import (
    autocast,
    check_mixed_precision,
    check_trainable_dtype,
    diffusion_target,
    grad_scaler,
    noise_schedule,
    step_generator,
    trainable_parameters,
    training,
)
from simda.video import VIDEO_SUFFIXES, read_video

logger = logging.getLogger(__name__)


class ClipDataset:
    """Captioned clips from a folder (video + .txt) or a CSV (path, caption)."""

    def __init__(self, source: str, num_frames: int, height: int, width: int):
        self.num_frames, self.size = num_frames, (height, width)
        self.items = self._index(source)
        if not self.items:
            raise SimDAError(
                f"no captioned clips in {source!r} (expected videos with a .txt "
                "caption of the same name, or a CSV with path,caption)"
            )
        empty = [os.path.basename(path) for path, caption in self.items if not caption.strip()]
        if empty:
            warnings.warn(
                f"{len(empty)} of {len(self.items)} clips in {source!r} have an empty caption "
                f"(e.g. {empty[0]}): they train as unconditional, like caption dropout",
                UserWarning,
                stacklevel=2,
            )
        self._frames: dict[int, np.ndarray] = {}

    @staticmethod
    def _index(source: str) -> list[tuple[str, str]]:
        if os.path.isfile(source) and source.endswith(".csv"):
            root = os.path.dirname(os.path.abspath(source))
            with open(source, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows and not {"path", "caption"} <= set(rows[0]):
                raise SimDAError(f"{source!r} needs the columns path,caption")
            return [(os.path.join(root, r["path"]), r["caption"]) for r in rows]
        if not os.path.isdir(source):
            raise SimDAError(f"training data {source!r} is neither a folder nor a .csv file")
        items = []
        for name in sorted(os.listdir(source)):
            stem, suffix = os.path.splitext(name)
            caption = os.path.join(source, stem + ".txt")
            if suffix.lower() in VIDEO_SUFFIXES and os.path.isfile(caption):
                with open(caption) as f:
                    items.append((os.path.join(source, name), f.read().strip()))
        return items

    def __len__(self) -> int:
        return len(self.items)

    def frames(self, index: int) -> np.ndarray:
        if index not in self._frames:
            self._frames[index] = read_video(self.items[index][0], self.num_frames, self.size)
        return self._frames[index]

    def caption(self, index: int) -> str:
        return self.items[index][1]


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 1  # global batch (all ranks together)
    lr: float = 5e-5
    checkpoint_every: int = 100
    seed: int = 0
    caption_dropout: float = 0.0  # replace captions by "" (classifier-free guidance)
    gradient_checkpointing: bool = True
    mixed_precision: str | None = None
    superres_scale: int | None = None
    log_every: int = 10

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise SimDAError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < float("inf")):
            raise SimDAError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        check_mixed_precision(self.mixed_precision, "TrainConfig.mixed_precision")
        if self.superres_scale is not None:
            check_factor("TrainConfig.superres_scale", self.superres_scale, 2)
        if (
            isinstance(self.caption_dropout, bool)
            or not isinstance(self.caption_dropout, (int, float))
            or not 0.0 <= self.caption_dropout <= 1.0
        ):
            raise SimDAError(
                f"TrainConfig.caption_dropout must be in [0, 1], got {self.caption_dropout!r}"
            )


@dataclass
class TrainState:
    step: int = 0
    losses: list[float] = field(default_factory=list)
    #: the fp16 loss scaler's state (empty when no scaling is done)
    grad_scaler: dict = field(default_factory=dict)


def rank_world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when launched by torchrun / accelerate (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank_world()


class LatentCache:
    """Per clip: the VAE posterior (mean, std), computed once (``CHUNK`` frames per VAE call)
    and kept in host memory. Latents are sampled from it with the step's generator."""

    CHUNK = 8

    def __init__(self, pipe: SimDAPipeline, dataset: ClipDataset, superres_scale=None):
        self.pipe, self.dataset, self.scale = pipe, dataset, superres_scale
        self._posterior: dict[int, tuple] = {}
        self._low: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def posterior(self, index: int):
        if index not in self._posterior:
            frames = self.dataset.frames(index)
            pixels = torch.from_numpy(frames).to(self.pipe.device).permute(0, 3, 1, 2)
            means, stds = [], []
            for dist_ in self.pipe.vae_posteriors(pixels, self.CHUNK):
                means.append(dist_.mean.cpu())
                stds.append(dist_.std.cpu())
            # kept in host memory: one clip's posterior is MBs, a data set's would fill a GPU
            self._posterior[index] = (torch.cat(means), torch.cat(stds))
        return self._posterior[index]

    def latents(self, indices, generator) -> torch.Tensor:
        out = []
        for i in indices:
            mean, std = self.posterior(i)
            noise = draw_noise(mean.shape, generator).to(mean)
            out.append((mean + std * noise).transpose(0, 1))  # (4, F, h, w)
        latents = torch.stack(out) * self.pipe.vae.config.scaling_factor
        return latents.to(self.pipe.device)

    @torch.no_grad()
    def low_res(self, indices) -> torch.Tensor:
        for i in indices:
            if i not in self._low:
                frames = self.dataset.frames(i)
                low = degrade(frames, self.scale)
                self._low[i] = low_res_condition(
                    self.pipe, low, *frames.shape[1:3], torch.Generator().manual_seed(i)
                )[0]
        return torch.stack([self._low[i] for i in indices])


CHECKPOINT_FILES = ("adapters.safetensors", "optimizer.safetensors", "state.json")


def find_checkpoint(path: str) -> str | None:
    """The complete checkpoint saved at ``path`` (see ``checkpoint.complete_folder``): the
    folder itself or, after a crash between the two renames of a save, the old folder."""
    return complete_folder(path, "state.json")


def save_checkpoint(
    path: str, unet, optimizer, state: TrainState, config: TrainConfig, clip: dict | None = None
) -> None:
    """Write the checkpoint as one unit (``checkpoint.replace_folder``, synced to disk): its
    three files, each stamped with ``state.step``. A crash at any point leaves ``path`` or
    ``path.old`` complete (``find_checkpoint``)."""
    step = {"step": str(state.step)}

    def write(folder: str) -> None:
        save_adapters(unet, os.path.join(folder, "adapters.safetensors"), metadata=step)
        opt = optimizer.state_dict()
        tensors = {
            f"{i}.{k}": v
            for i, s in opt["state"].items()
            for k, v in s.items()
            if isinstance(v, torch.Tensor)
        }
        atomic_save(
            tensors,
            os.path.join(folder, "optimizer.safetensors"),
            {"param_groups": json.dumps(opt["param_groups"]), **step},
        )
        saved = {"state": asdict(state), "config": asdict(config)}
        if clip is not None:
            saved["clip"] = clip
        with open(os.path.join(folder, "state.json"), "w") as f:
            json.dump(saved, f)

    replace_folder(path, write, sync=True)


#: Settings a resumed run must share with its checkpoint (``steps`` may grow).
RESUME_SETTINGS = (
    "batch_size",
    "lr",
    "seed",
    "caption_dropout",
    "mixed_precision",
    "superres_scale",
)


def _step_stamp(path: str) -> str | None:
    """The step ``save_checkpoint`` recorded in a safetensors file (None in older files)."""
    if not os.path.isfile(path):
        raise SimDAError(f"the checkpoint file {path!r} is missing")
    try:
        with safe_open(path, framework="pt") as f:
            return (f.metadata() or {}).get("step")
    except Exception as exc:  # not a safetensors file
        raise SimDAError(f"{path!r} is not a readable safetensors file: {exc}") from exc


def load_checkpoint(
    path: str, unet, optimizer, config: TrainConfig | None = None, clip: dict | None = None
) -> TrainState:
    """Restore adapters and optimizer from the checkpoint saved at ``path`` (see
    ``find_checkpoint``). Everything is read and checked before anything is loaded, so a
    damaged checkpoint leaves the model as it was; files from different saves (their step
    stamps differ) are refused. With ``config``, the settings of ``RESUME_SETTINGS`` must equal
    the checkpoint's and ``config.steps`` must go beyond its step (a run at its last step is
    finished: resuming it is refused, nothing is rewritten); with ``clip`` (``frames``,
    ``size``), so must the clip shape (an exact resume)."""
    folder = find_checkpoint(path)
    if folder is None:
        raise SimDAError(f"--resume: no checkpoint in {path!r}")
    state_file = os.path.join(folder, "state.json")
    try:
        with open(state_file) as f:
            saved = json.load(f)
        state = TrainState(**saved["state"])
        saved_config = saved.get("config", {})
        saved_clip = saved.get("clip") or {}
        if not isinstance(state.step, int) or state.step < 0:
            raise ValueError(f"step {state.step!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SimDAError(f"{state_file} is not a simda training state ({exc})") from exc
    if config is not None:
        changed = [
            f"{k} {saved_config[k]!r} there, {getattr(config, k)!r} now"
            for k in RESUME_SETTINGS
            if k in saved_config and saved_config[k] != getattr(config, k)
        ]
        changed += [
            f"{k} {saved_clip[k]!r} there, {clip[k]!r} now"
            for k in (clip or {})
            if k in saved_clip and saved_clip[k] != clip[k]
        ]
        if changed:
            raise SimDAError(
                f"--resume continues the run in {folder!r} with its own settings: "
                + "; ".join(changed)
            )
        if config.steps <= state.step:
            raise SimDAError(
                f"--resume: the checkpoint in {folder!r} is at step {state.step}, and "
                f"steps={config.steps} leaves nothing to train: pass steps > {state.step} "
                f"(--steps) to continue (its adapters are in {folder}/adapters.safetensors; "
                "nothing was written)"
            )
    adapters_file = os.path.join(folder, "adapters.safetensors")
    optimizer_file = os.path.join(folder, "optimizer.safetensors")
    tensors, meta = read_safetensors(optimizer_file)
    stamps = {
        "adapters.safetensors": _step_stamp(adapters_file),
        "optimizer.safetensors": meta.get("step"),
    }
    if any(s is not None for s in stamps.values()):  # older checkpoints have none
        stamps = {"state.json": str(state.step), **stamps}
        if len(set(stamps.values())) > 1:
            raise SimDAError(
                f"the files of the checkpoint in {folder!r} come from different saves ("
                + ", ".join(
                    f"{name} {'at step ' + s if s is not None else 'without a step'}"
                    for name, s in stamps.items()
                )
                + "): resume from a whole checkpoint folder, as training wrote it"
            )
    per_param: dict[int, dict] = {}
    try:
        for key, value in tensors.items():
            index, name = key.split(".", 1)
            per_param.setdefault(int(index), {})[name] = value
        groups = json.loads(meta["param_groups"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SimDAError(f"{optimizer_file} is not a simda optimizer state") from exc
    load_adapters(unet, adapters_file)
    try:
        optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise SimDAError(f"{optimizer_file} does not fit these adapters ({exc})") from exc
    return state


def check_superres(pipe: SimDAPipeline, scale: int | None) -> None:
    """``TrainConfig.superres_scale`` set exactly when ``pipe`` is the super-resolution
    variant (its UNet takes the noisy latents and the low-res clip's latents on channels)."""
    config = pipe.unet.config
    superres = is_superres(pipe)
    if scale and not superres:
        raise SimDAError(
            f"TrainConfig.superres_scale={scale} trains the super-resolution variant, but this "
            f"pipeline's UNet takes {config.in_channels} input channels (text-to-video): turn "
            f"it into the variant first with make_superres(pipe, {scale}) (--superres)"
        )
    if superres and not scale:
        raise SimDAError(
            "this pipeline is the super-resolution variant (its UNet takes "
            f"{config.in_channels} input channels): set TrainConfig.superres_scale to the "
            "upscaling factor to train it for (--superres)"
        )


def train(
    pipe: SimDAPipeline,
    dataset: ClipDataset,
    output_dir: str,
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
) -> TrainState:
    """Train the adapters of ``pipe.unet``; returns the step reached and the loss history.

    Writes ``output_dir/checkpoint/`` every ``config.checkpoint_every`` steps,
    ``output_dir/losses.jsonl`` (one line every ``config.log_every`` steps: the step, the mean
    loss since the last line, seconds per step) and ``output_dir/adapters.safetensors`` at the
    end. With ``config.superres_scale`` the pipeline must be the super-resolution variant
    (``make_superres``), and its config records the scale it was trained for; the clip shape
    trained on becomes the pipeline's recommended ``num_frames``, ``height`` and ``width``.
    Only the adapters (and ``trainable_modules``) train. Afterwards, also when training fails
    or is interrupted, the UNet is in eval mode with its ``requires_grad`` flags and gradient
    checkpointing as they were (``tuning.training``).
    """
    if not isinstance(dataset, ClipDataset):
        raise SimDAError(
            f"dataset must be a ClipDataset, got {type(dataset).__name__} {dataset!r}: pass "
            "ClipDataset(path, frames, height, width)"
        )
    if not isinstance(config, TrainConfig):
        raise SimDAError(f"config must be a TrainConfig, got {type(config).__name__}")
    check_superres(pipe, config.superres_scale)
    # sizes first, before any clip is read or encoded (num_frames None: every frame of a clip)
    pipe.check_size(dataset.num_frames or 1, *dataset.size)
    if config.superres_scale:
        check_scale(*dataset.size, config.superres_scale)
    rank, world = init_distributed(pipe.device)
    if config.batch_size % world:
        raise SimDAError(
            f"batch size {config.batch_size} must be a multiple of the number of "
            f"processes ({world})"
        )
    unet = pipe.unet
    params = trainable_parameters(pipe)
    check_trainable_dtype(params)
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    scaler = grad_scaler(pipe, config.mixed_precision)
    checkpoint = os.path.join(output_dir, "checkpoint")
    clip = {"frames": dataset.num_frames, "size": list(dataset.size)}
    if not resume and find_checkpoint(checkpoint) is not None:
        raise SimDAError(
            f"{output_dir!r} already holds a training checkpoint: resume it (resume=True, "
            "--resume) or write to another output folder (nothing was overwritten)"
        )
    state = load_checkpoint(checkpoint, unet, optimizer, config, clip) if resume else TrainState()
    if resume:
        logger.info("resumed from the checkpoint at step %d in %s", state.step, checkpoint)
    if state.grad_scaler and scaler.is_enabled():
        scaler.load_state_dict(state.grad_scaler)
    with training(unet, params, config.gradient_checkpointing):
        model = unet
        if world > 1:  # after `training` set requires_grad: DDP reduces what trains
            model = torch.nn.parallel.DistributedDataParallel(
                unet, device_ids=[pipe.device.index] if pipe.device.type == "cuda" else None
            )
        _train_loop(
            pipe, dataset, config, model, optimizer, scaler, state, checkpoint, clip, progress
        )
    if config.superres_scale:
        pipe.register_to_config(superres_scale=config.superres_scale)
    trained = {
        "num_frames": dataset.num_frames,
        "height": dataset.size[0],
        "width": dataset.size[1],
    }
    trained = {k: v for k, v in trained.items() if v is not None}  # None: every frame of a clip
    pipe.register_to_config(sampling={**pipe.config.sampling, **trained})
    if rank == 0:
        save_adapters(unet, os.path.join(output_dir, "adapters.safetensors"))
    return state


def _train_loop(pipe, dataset, config, model, optimizer, scaler, state, checkpoint, clip, progress):
    """The steps of ``train`` from ``state.step`` to ``config.steps``."""
    rank, world = rank_world()
    local = config.batch_size // world
    unet = pipe.unet
    cache = LatentCache(pipe, dataset, config.superres_scale)
    schedule = noise_schedule(pipe)
    log = LossLog(os.path.join(os.path.dirname(checkpoint), "losses.jsonl"), config.log_every)
    embeddings: dict[str, torch.Tensor] = {}

    def embed(caption: str) -> torch.Tensor:
        if caption not in embeddings:
            embeddings[caption] = pipe.embed_prompts([caption])[0]
        return embeddings[caption]

    steps = schedule.config.num_train_timesteps
    bar = tqdm(
        range(state.step, config.steps),
        desc="training",
        initial=state.step,
        total=config.steps,
        disable=not progress or rank != 0,
    )
    for step in bar:
        g = step_generator(config.seed, step)
        indices = torch.randint(len(dataset), (config.batch_size,), generator=g).tolist()
        drop = (torch.rand(config.batch_size, generator=g) < config.caption_dropout).tolist()
        latents = cache.latents(indices, g)
        noise = draw_noise(latents.shape, g).to(latents)
        t = torch.randint(0, steps, (config.batch_size,), generator=g).to(latents.device)
        mine = slice(rank * local, (rank + 1) * local)
        captions = ["" if d else dataset.caption(i) for i, d in zip(indices, drop, strict=True)]
        cond = torch.stack([embed(c) for c in captions[mine]])
        noisy = schedule.add_noise(latents[mine], noise[mine], t[mine])
        if config.superres_scale:
            noisy = torch.cat([noisy, cache.low_res(indices[mine])], 1)
        optimizer.zero_grad(set_to_none=True)
        with autocast(pipe, config.mixed_precision):
            pred = model(noisy.to(unet.dtype), t[mine], cond).sample
            target = diffusion_target(schedule, latents[mine], noise[mine], t[mine])
            loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss = loss.detach()
        if world > 1:  # log the global mean
            dist.all_reduce(loss)
            loss /= world
        state.losses.append(loss.item())
        state.step = step + 1
        if rank == 0:
            log.add(state.step, state.losses[-1])
        if not bar.disable:  # rank 0, with progress: the mean of the last log_every losses
            bar.set_postfix(loss=f"{np.mean(state.losses[-config.log_every :]):.4f}", refresh=False)
        if rank == 0 and (state.step % config.checkpoint_every == 0 or state.step == config.steps):
            state.grad_scaler = scaler.state_dict()  # read here only: it syncs with the GPU
            log.flush()
            save_checkpoint(checkpoint, unet, optimizer, state, config, clip)


class LossLog:
    """``losses.jsonl``: one line ``{"step", "loss", "seconds_per_step"}`` every ``every``
    steps (and before each checkpoint), with the mean loss of the steps since the last line.
    A resumed run appends, after dropping the lines beyond the step it resumes from (written
    after its last checkpoint), so that each step is counted once."""

    def __init__(self, path: str, every: int):
        self.path, self.every = path, every
        self.pending: list[float] = []
        self.step, self.started = 0, False
        self.clock = time.perf_counter()

    def add(self, step: int, loss: float) -> None:
        if not self.started:
            self._drop_beyond(step - 1)
            self.started = True
        self.pending.append(loss)
        self.step = step
        if step % self.every == 0:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        now = time.perf_counter()
        line = {
            "step": self.step,
            "loss": float(np.mean(self.pending)),
            "seconds_per_step": round((now - self.clock) / len(self.pending), 6),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        self.pending, self.clock = [], now

    def _drop_beyond(self, step: int) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if not os.path.isfile(self.path):
            return
        with open(self.path) as f:
            lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self.path, "w") as f:
            f.writelines(lines)
