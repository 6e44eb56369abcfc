"""Text-to-video with the SimDA UNet: prompt -> DDIM with classifier-free guidance -> frames."""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm

from simda.checkpoint import adapter_state_dict, atomic_save, load_adapters, save_adapters
from simda.errors import SimDAError
from simda.pipelines.pixel import SpaceToDepthAutoencoder
from simda.pipelines.text import TinyTextEncoder, WordTokenizer, tokenize
from simda.presets import unet2d_config
from simda.unet import SimDAUNet, inflate

PIPELINE_FORMAT = "simda-pipeline-1"
SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
TINY_VAE = dict(
    block_out_channels=(16, 32, 32, 32),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1,
    norm_num_groups=8,
    latent_channels=4,
    sample_size=64,
    mid_block_add_attention=False,
)
SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def draw_noise(shape, generator=None) -> torch.Tensor:
    """fp32 standard normal noise drawn on the generator's device (CPU without one), so that a
    ``torch.Generator("cuda")`` works as in diffusers and a CPU one gives the same noise on
    every device."""
    device = generator.device if generator is not None else "cpu"
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)


def diffusion_target(scheduler, latents, noise, t):
    """What the UNet learns to output, by the scheduler's ``prediction_type``: the noise
    (SD's epsilon), the clean latents ("sample") or the velocity."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return latents
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise SimDAError(f"unsupported prediction_type {kind!r}")


def to_epsilon(scheduler, output, sample, t):
    """The noise implied by a UNet output at noisy ``sample`` and timestep ``t``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return output
    alpha = scheduler.alphas_cumprod.to(sample.device)[t].to(sample.dtype)
    if kind == "sample":
        return (sample - alpha.sqrt() * output) / (1 - alpha).sqrt()
    return alpha.sqrt() * output + (1 - alpha).sqrt() * sample  # v_prediction


@dataclass
class VideoOutput:
    frames: np.ndarray  # (B, F, H, W, 3) uint8
    latents: torch.Tensor  # (B, C, F, h, w), before decoding


class SimDAPipeline:
    """Text encoder, tokenizer, VAE, SimDA video UNet and a DDIM scheduler.

    ``SimDAPipeline.from_pretrained(path)`` loads a local diffusers SD-1.x folder (or a folder
    written by ``save_pretrained``); ``SimDAPipeline.from_preset("tiny")`` builds a randomly
    initialised tiny model with no files at all.
    """

    def __init__(
        self, unet: SimDAUNet, vae, text_encoder, tokenizer, scheduler, config: dict | None = None
    ):
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.config = dict(config or {})
        for module in (vae, text_encoder):
            module.requires_grad_(False).eval()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_preset(
        cls,
        preset: str = "tiny",
        *,
        seed: int = 0,
        device=None,
        dtype=None,
        lsa_layout: str = "paper",
        temporal_act: str = "gelu",
    ):
        """A randomly initialised pipeline of a built-in shape (``"tiny"`` only: the text
        stack and VAE of ``sd15`` come from a model folder)."""
        if preset != "tiny":
            raise SimDAError(
                f"from_preset builds 'tiny'; for {preset!r} load a model folder "
                "with from_pretrained(path)"
            )
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left alone
            torch.manual_seed(seed)
            config = unet2d_config("tiny")
            unet = inflate(
                UNet2DConditionModel(**config), lsa_layout=lsa_layout, temporal_act=temporal_act
            )
            tokenizer = WordTokenizer()
            text_encoder = TinyTextEncoder(
                tokenizer.vocab_size, config["cross_attention_dim"], tokenizer.model_max_length
            )
            vae = AutoencoderKL(**TINY_VAE)
        pipe = cls(
            unet,
            vae,
            text_encoder,
            tokenizer,
            DDIMScheduler(**SD_SCHEDULER),
            {"preset": "tiny"},
        )
        return pipe.to(device, dtype)

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        adapters: str | None = None,
        device=None,
        dtype=None,
        lsa_layout: str = "paper",
        temporal_act: str = "gelu",
    ):
        """Load a local model folder: diffusers' SD-1.x layout (unet, vae, text_encoder,
        tokenizer, scheduler; safetensors weights) or one written by ``save_pretrained``.
        ``adapters``: a safetensors file of trained adapters (``simda.save_adapters``)."""
        index = _check_model_folder(path)
        ours = index.get("format") == PIPELINE_FORMAT
        kwargs = {"use_safetensors": True}
        try:
            unet2d = UNet2DConditionModel.from_pretrained(
                path, subfolder="unet", low_cpu_mem_usage=False, **kwargs
            )
            vae = _load_vae(path, kwargs)
            scheduler = DDIMScheduler.from_pretrained(path, subfolder="scheduler")
            if ours and index.get("text") == "tiny":
                tokenizer, text_encoder = _load_tiny_text(path)
            else:
                from transformers import CLIPTextModel, CLIPTokenizer

                tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
                text_encoder = CLIPTextModel.from_pretrained(
                    path, subfolder="text_encoder", **kwargs
                )
        except (OSError, ValueError) as exc:
            raise SimDAError(f"model folder {path!r} could not be loaded: {exc}") from exc
        if ours:
            lsa_layout = index.get("lsa_layout", lsa_layout)
            temporal_act = index.get("temporal_act", temporal_act)
        unet = inflate(unet2d, lsa_layout=lsa_layout, temporal_act=temporal_act)
        pipe = cls(unet, vae, text_encoder, tokenizer, scheduler, {**index, "path": path})
        if index.get("superres"):
            from simda.pipelines.superres import make_superres

            make_superres(pipe, index.get("superres_scale"))
        own_adapters = os.path.join(path, "adapters.safetensors")
        if ours and not os.path.isfile(own_adapters):
            raise SimDAError(
                f"model folder {path!r} was saved by simda but its adapters.safetensors is "
                "missing (its adapters would start untrained)"
            )
        if ours:
            load_adapters(unet, own_adapters)
        if adapters is not None:
            load_adapters(unet, adapters)
        return pipe.to(device, dtype)

    def save_pretrained(self, path: str, dtype: torch.dtype | None = None) -> None:
        """Write every component (safetensors weights, JSON configs) so ``from_pretrained``
        rebuilds this pipeline, adapters included. ``dtype`` (e.g. fp16) only changes how the
        UNet and adapter weights are stored; loading casts them to the pipeline's dtype."""

        def stored(tensors):
            return {
                k: v.to(dtype) if dtype and v.is_floating_point() else v for k, v in tensors.items()
            }

        os.makedirs(path, exist_ok=True)
        unet_dir = os.path.join(path, "unet")
        os.makedirs(unet_dir, exist_ok=True)
        adapters = set(adapter_state_dict(self.unet.unet))
        base = {k: v for k, v in self.unet.unet.state_dict().items() if k not in adapters}
        atomic_save(stored(base), os.path.join(unet_dir, "diffusion_pytorch_model.safetensors"))
        with open(os.path.join(unet_dir, "config.json"), "w") as f:
            f.write(
                self.unet.unet.config.to_json_string()
                if hasattr(self.unet.unet.config, "to_json_string")
                else json.dumps(dict(self.unet.unet.config))
            )
        if isinstance(self.vae, SpaceToDepthAutoencoder):
            os.makedirs(os.path.join(path, "vae"), exist_ok=True)
            with open(os.path.join(path, "vae", "config.json"), "w") as f:
                json.dump(self.vae.settings(), f)
        else:
            self.vae.save_pretrained(os.path.join(path, "vae"), safe_serialization=True)
        self.scheduler.save_pretrained(os.path.join(path, "scheduler"))
        text = "tiny" if isinstance(self.tokenizer, WordTokenizer) else "clip"
        if text == "tiny":
            _save_tiny_text(path, self.tokenizer, self.text_encoder)
        else:
            self.tokenizer.save_pretrained(os.path.join(path, "tokenizer"))
            self.text_encoder.save_pretrained(
                os.path.join(path, "text_encoder"), safe_serialization=True
            )
        save_adapters(self.unet, os.path.join(path, "adapters.safetensors"), dtype=dtype)
        index = {
            "_class_name": "SimDAPipeline",
            "format": PIPELINE_FORMAT,
            "text": text,
            "lsa_layout": self.unet.lsa_layout,
            "temporal_act": _temporal_act(self.unet),
            **{
                k: v
                for k, v in self.config.items()
                if k in ("preset", "description", "superres", "superres_scale", "sampling")
            },
        }
        with open(os.path.join(path, "model_index.json"), "w") as f:
            json.dump(index, f, indent=1)

    def to(self, device=None, dtype=None):
        """Move to ``device``; ``dtype`` applies to the UNet and text encoder (the VAE stays
        in fp32, which SD's VAE needs for clean decodes)."""
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise SimDAError(f"dtype must be a torch.dtype (e.g. torch.float16), got {dtype!r}")
        if device is not None:
            device = torch.device(device)
            if device.type == "cuda" and not torch.cuda.is_available():
                raise SimDAError(f"device {device} needs a CUDA GPU, and none is available")
        self.unet.to(device=device, dtype=dtype)
        self.text_encoder.to(device=device, dtype=dtype)
        self.vae.to(device=device)
        if self.vae.dtype != torch.float32:
            self.vae.to(dtype=torch.float32)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def vae_scale_factor(self) -> int:
        fixed = getattr(self.vae, "spatial_scale", None)  # SpaceToDepthAutoencoder
        return fixed or 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def sampling_defaults(self) -> dict:
        """DDIM steps and guidance this model was made for (``config["sampling"]``)."""
        return {"num_inference_steps": 50, "guidance_scale": 7.5, **self.config.get("sampling", {})}

    @property
    def default_size(self) -> int:
        return self.unet.config.sample_size * self.vae_scale_factor

    # ------------------------------------------------------------------ pieces

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        factor = self.vae_scale_factor
        for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise SimDAError(f"{name} must be an int, got {value!r}")
        if num_frames < 1:
            raise SimDAError(f"num_frames must be >= 1, got {num_frames}")
        if height % factor or width % factor or height < factor or width < factor:
            raise SimDAError(
                f"height and width must be positive multiples of {factor} pixels "
                f"(the VAE's downsampling), got {height}x{width}"
            )

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings (B, L, D) in the UNet's dtype."""
        ids = tokenize(self.tokenizer, prompts).to(self.device)
        return self.text_encoder(ids)[0].to(self.dtype)

    @torch.no_grad()
    def vae_posteriors(self, pixels: torch.Tensor, chunk: int = 8):
        """The VAE's latent distributions of uint8 frames (N, 3, H, W), ``chunk`` frames per
        VAE call (bounded memory), one per call."""
        for i in range(0, len(pixels), chunk):
            yield self.vae.encode(pixels[i : i + chunk].float() / 127.5 - 1).latent_dist

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, generator=None, chunk: int = 8) -> torch.Tensor:
        """uint8 (F, H, W, 3) or (B, F, H, W, 3) -> scaled latents (B, 4, F, h, w)."""
        check_rgb_frames(frames, "frames", (4, 5), "(F, H, W, 3) or (B, F, H, W, 3)")
        frames = frames[None] if frames.ndim == 4 else frames
        b, f, h, w, _ = frames.shape
        self.check_size(f, h, w)
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        pixels = pixels.reshape(b * f, h, w, 3).permute(0, 3, 1, 2)
        parts = [d.sample(generator) for d in self.vae_posteriors(pixels, chunk)]
        latents = torch.cat(parts) * self.vae.config.scaling_factor
        return latents.view(b, f, *latents.shape[1:]).transpose(1, 2).to(self.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk: int = 8) -> np.ndarray:
        """(B, 4, F, h, w) -> uint8 (B, F, H, W, 3), decoded ``chunk`` frames at a time so
        memory stays bounded for long clips."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents)
            raise SimDAError(f"latents must be a (B, C, F, h, w) tensor, got {got}")
        b, c, f, h, w = latents.shape
        flat = latents.transpose(1, 2).reshape(b * f, c, h, w).float()
        flat = flat / self.vae.config.scaling_factor
        images = torch.cat(
            [self.vae.decode(flat[i : i + chunk]).sample for i in range(0, b * f, chunk)]
        )
        images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).reshape(b, f, *images.shape[2:], 3).cpu().numpy()

    def predict_noise(self, latents, t, cond, uncond=None, guidance_scale=1.0, extra=None):
        """UNet prediction (noise, or what ``scheduler.config.prediction_type`` says) with
        classifier-free guidance when ``uncond`` is given.
        ``extra``: channels concatenated to the input (the super-resolution condition)."""
        x = latents if extra is None else torch.cat([latents, extra], 1)
        if uncond is None or guidance_scale == 1.0:
            return self.unet(x, t, cond)
        eps_u, eps_c = self.unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).chunk(2)
        return eps_u + guidance_scale * (eps_c - eps_u)

    def sampling_settings(self, num_inference_steps=None, guidance_scale=None):
        """Steps and guidance, each defaulting to the model's recommendation
        (``sampling_defaults``), checked: ``(num_inference_steps, guidance_scale)``."""
        recommended = self.sampling_defaults
        if num_inference_steps is None:
            num_inference_steps = recommended["num_inference_steps"]
        if guidance_scale is None:
            guidance_scale = recommended["guidance_scale"]
        self.check_steps(num_inference_steps)
        if not isinstance(guidance_scale, numbers.Real) or not math.isfinite(guidance_scale):
            raise SimDAError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        return num_inference_steps, guidance_scale

    def check_steps(self, num_inference_steps) -> None:
        """DDIM steps: an int in 1 .. the scheduler's training timesteps."""
        limit = self.scheduler.config.num_train_timesteps
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, numbers.Integral)
            or not 1 <= num_inference_steps <= limit
        ):
            raise SimDAError(
                f"num_inference_steps must be an int in 1..{limit}, got {num_inference_steps!r}"
            )

    @torch.no_grad()
    def denoise(
        self,
        latents,
        cond,
        uncond,
        num_inference_steps,
        guidance_scale,
        extra=None,
        progress=True,
        desc="sampling",
    ):
        self.check_steps(num_inference_steps)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = latents * self.scheduler.init_noise_sigma
        for t in tqdm(self.scheduler.timesteps, desc=desc, disable=not progress, leave=False):
            eps = self.predict_noise(latents, t, cond, uncond, guidance_scale, extra)
            latents = self.scheduler.step(eps, t, latents).prev_sample
        return latents

    @torch.no_grad()
    def invert(
        self, latents, num_inference_steps: int = 50, prompt: str = "", progress=True, extra=None
    ):
        """DDIM inversion: clean latents (B, 4, F, h, w) -> the noise DDIM maps back to them,
        conditioned on ``prompt`` (the empty prompt, as in one-shot editing), no guidance."""
        self.check_steps(num_inference_steps)
        check_prompt(prompt)
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents)
            raise SimDAError(f"latents must be a (B, C, F, h, w) tensor, got {got}")
        cond = self.encode_prompt([prompt] * latents.shape[0])
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        alphas = self.scheduler.alphas_cumprod.to(self.device)
        step = self.scheduler.config.num_train_timesteps // num_inference_steps
        x = latents
        for t in tqdm(
            self.scheduler.timesteps.flip(0), desc="inverting", disable=not progress, leave=False
        ):
            prev = t - step  # the less noisy level we come from
            a_prev = alphas[prev] if prev >= 0 else self.scheduler.final_alpha_cumprod.to(x.device)
            a_t = alphas[t]
            eps = to_epsilon(self.scheduler, self.predict_noise(x, t, cond, extra=extra), x, t)
            x0 = (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
            x = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
        return x

    # ------------------------------------------------------------------ text to video

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_frames: int = 16,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str = "",
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        progress: bool = True,
    ) -> VideoOutput:
        """Sample ``num_frames`` frames per prompt. ``latents``: start from these (e.g. DDIM
        inverted) instead of fresh noise. Steps and guidance default to the model's
        recommended settings (``config["sampling"]``, saved with the model), else 50 and 7.5."""
        num_inference_steps, guidance_scale = self.sampling_settings(
            num_inference_steps, guidance_scale
        )
        prompts = [prompt] if isinstance(prompt, str) else prompt
        prompts = list(prompts) if isinstance(prompts, Iterable) else []
        if not prompts or not all(isinstance(p, str) for p in [*prompts, negative_prompt]):
            raise SimDAError(
                "prompt must be a string or a non-empty list of strings, and negative_prompt a "
                f"string; got {prompt!r} and {negative_prompt!r}"
            )
        height = self.default_size if height is None else height
        width = self.default_size if width is None else width
        self.check_size(num_frames, height, width)
        check_generator(generator)
        cond = self.encode_prompt(prompts)
        uncond = self.encode_prompt([negative_prompt] * len(prompts))
        shape = (
            len(prompts),
            self.unet.config.out_channels,
            num_frames,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if latents is None:
            latents = draw_noise(shape, generator).to(self.device, self.dtype)
        elif not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else latents
            raise SimDAError(
                f"latents must be a tensor of shape (B, C, F, h, w) = {shape} for "
                f"{len(prompts)} prompt(s), {num_frames} frames at {height}x{width}; got {got}"
            )
        out = self.denoise(
            latents.to(self.dtype),
            cond,
            uncond,
            num_inference_steps,
            guidance_scale,
            progress=progress,
        )
        return VideoOutput(self.decode_latents(out), out)


def check_rgb_frames(frames, name: str, ndims: tuple[int, ...], layout: str) -> None:
    """``frames`` is a uint8 numpy array of one of ``ndims`` dimensions, RGB last."""
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.ndim not in ndims
        or frames.shape[-1] != 3
    ):
        what = (
            f"{frames.dtype} array of shape {frames.shape}"
            if isinstance(frames, np.ndarray)
            else type(frames).__name__
        )
        raise SimDAError(f"{name} must be a uint8 RGB array {layout}, got {what}")


def check_prompt(prompt, name: str = "prompt") -> None:
    if not isinstance(prompt, str):
        raise SimDAError(f"{name} must be a string, got {type(prompt).__name__} {prompt!r}")


def check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise SimDAError(
            f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or "
            f"None, got {generator!r}"
        )


def _temporal_act(unet: SimDAUNet) -> str:
    from simda.adapters import TemporalAdapter

    return next(m.act for m in unet.modules() if isinstance(m, TemporalAdapter))


def _check_model_folder(path: str) -> dict:
    """model_index.json of a model folder, with one clear error for each way it can be wrong."""
    if not os.path.isdir(path):
        raise SimDAError(f"model folder {path!r} does not exist")
    missing = [p for p in SD_PARTS if not os.path.isdir(os.path.join(path, p))]
    if missing:
        hint = ""
        if os.path.isfile(os.path.join(path, "adapters.safetensors")):  # a training output
            hint = (
                f"; it holds adapters.safetensors: load those onto a model with --adapters "
                f"{os.path.join(path, 'adapters.safetensors')} (adapters=)"
            )
        raise SimDAError(
            f"model folder {path!r} is not a diffusers SD-1.x folder: missing "
            f"{', '.join(missing)} (expected {', '.join(SD_PARTS)}){hint}"
        )
    for part in ("unet", "vae"):
        files = os.listdir(os.path.join(path, part))
        if "config.json" not in files:
            raise SimDAError(f"model folder {path!r}: {part}/config.json is missing")
        if part == "vae" and _vae_class(path) == "SpaceToDepthAutoencoder":
            continue  # no weights
        if not any(f.endswith(".safetensors") for f in files):
            raise SimDAError(
                f"model folder {path!r}: {part}/ has no .safetensors weights "
                "(pickled .bin/.ckpt weights are not loaded; convert them first)"
            )
    index_path = os.path.join(path, "model_index.json")
    if not os.path.isfile(index_path):
        return {}
    try:
        with open(index_path) as f:
            index = json.load(f)
    except json.JSONDecodeError as exc:
        raise SimDAError(
            f"model folder {path!r}: model_index.json is not valid JSON ({exc})"
        ) from exc
    if not isinstance(index, dict):
        raise SimDAError(
            f"model folder {path!r}: model_index.json must hold a JSON object, "
            f"got a {type(index).__name__}"
        )
    return index


def _vae_class(path: str) -> str | None:
    try:
        with open(os.path.join(path, "vae", "config.json")) as f:
            return json.load(f).get("_class_name")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def _load_vae(path: str, kwargs: dict):
    if _vae_class(path) == "SpaceToDepthAutoencoder":
        with open(os.path.join(path, "vae", "config.json")) as f:
            settings = json.load(f)
        return SpaceToDepthAutoencoder(settings["factor"], settings.get("in_channels", 3))
    return AutoencoderKL.from_pretrained(path, subfolder="vae", low_cpu_mem_usage=False, **kwargs)


def _save_tiny_text(path, tokenizer: WordTokenizer, encoder: TinyTextEncoder) -> None:
    for part in ("tokenizer", "text_encoder"):
        os.makedirs(os.path.join(path, part), exist_ok=True)
    with open(os.path.join(path, "tokenizer", "word_tokenizer.json"), "w") as f:
        json.dump(tokenizer.config(), f)
    with open(os.path.join(path, "text_encoder", "config.json"), "w") as f:
        json.dump(encoder.settings, f)
    atomic_save(encoder.state_dict(), os.path.join(path, "text_encoder", "model.safetensors"))


def _load_tiny_text(path):
    from simda.checkpoint import read_safetensors

    with open(os.path.join(path, "tokenizer", "word_tokenizer.json")) as f:
        tokenizer = WordTokenizer(**json.load(f))
    with open(os.path.join(path, "text_encoder", "config.json")) as f:
        encoder = TinyTextEncoder(**json.load(f))
    tensors, _ = read_safetensors(os.path.join(path, "text_encoder", "model.safetensors"))
    encoder.load_state_dict(tensors)
    return tokenizer, encoder
