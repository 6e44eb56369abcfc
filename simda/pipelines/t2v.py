"""Text-to-video with the SimDA UNet: ``SimDAPipeline``, a diffusers ``DiffusionPipeline``.

It loads and saves like every diffusers pipeline (``from_pretrained(folder, torch_dtype=,
variant=)``, ``save_pretrained``, ``from_pipe``, ``to``, ``components``,
``enable_model_cpu_offload``, LoRA and textual inversion loaders), samples with any scheduler
diffusers offers for SD-1.x, and returns frames as diffusers' video pipelines do
(``output_type="np"``: float32 (B, F, H, W, 3) in [0, 1], ready for ``export_to_video``).
"""

import contextlib
import inspect
import os
from typing import Optional, Union

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMInverseScheduler,
    DDIMScheduler,
    DiffusionPipeline,
    SchedulerMixin,
    UNet2DConditionModel,
)
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.loaders import StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import CLIPTextModel, CLIPTokenizer

from simda.checkpoint import SimDAAdapters, load_adapters
from simda.errors import SimDAError
from simda.pipelines import windows
from simda.pipelines.checks import (
    check_embeds,
    check_generator,
    check_number,
    check_prompt,
    check_rgb_frames,
    is_int,
)
from simda.pipelines.folders import check_model_folder, lists_components, load_parts
from simda.pipelines.pixel import SpaceToDepthAutoencoder
from simda.pipelines.text import TinyTextEncoder, WordTokenizer, tokenize
from simda.presets import unet2d_config
from simda.unet import SimDAUNet

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
#: diffusers' defaults where a model recommends nothing (``AnimateDiffPipeline``'s)
DIFFUSERS_DEFAULTS = {"num_frames": 16, "num_inference_steps": 50, "guidance_scale": 7.5}
OUTPUT_TYPES = ("np", "pil", "pt", "latent")


class SimDAPipelineOutput(BaseOutput):
    """``frames``: by ``output_type``, float32 (B, F, H, W, 3) in [0, 1] (``"np"``), a list of
    B lists of F PIL images (``"pil"``), (B, F, 3, H, W) in [0, 1] (``"pt"``), or the
    latents (B, C, F, h, w) (``"latent"``)."""

    frames: np.ndarray | torch.Tensor | list


def draw_noise(shape, generator=None, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise drawn in fp32 on the generators' device (one generator, or a list
    with one per item of the batch; the CPU without one), then moved to ``device`` in
    ``dtype``: a CPU generator gives the same noise on every device and in every dtype."""
    first = generator[0] if isinstance(generator, list | tuple) else generator
    where = first.device if first is not None else torch.device("cpu")
    noise = randn_tensor(shape, generator=generator, device=where, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


class SimDAPipeline(
    DiffusionPipeline,
    StableDiffusionLoraLoaderMixin,
    TextualInversionLoaderMixin,
    windows.FreeNoiseMixin,
):
    """Text-to-video with SimDA: text encoder, tokenizer, VAE, the SimDA video UNet and any
    diffusers scheduler.

    ``SimDAPipeline.from_pretrained(folder)`` loads a local diffusers SD-1.x folder (the image
    UNet is inflated, its adapters start at the identity; ``adapters=`` gives trained ones: a
    ``SimDAAdapters``, or the path of a folder or file) or a folder written by
    ``save_pretrained``; ``SimDAPipeline.from_pipe(sd_pipe)`` builds one from a Stable Diffusion
    pipeline without touching it (the image weights are shared, not copied);
    ``SimDAPipeline.from_preset("tiny")`` builds a randomly initialised tiny model.

    ``sampling`` holds the model's recommended settings (``num_frames`` it was trained on,
    ``height``, ``width``, ``num_inference_steps``, ``guidance_scale``, and
    ``edit_guidance_scale`` for one-shot editing), saved with it; ``superres_scale`` the factor
    a super-resolution model was trained for.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        # typing.Union, not X | Y: diffusers 0.35 reads these hints (from_pretrained,
        # from_pipe) and knows only Union
        vae: Union[AutoencoderKL, SpaceToDepthAutoencoder],  # noqa: UP007, UP045
        text_encoder: Union[CLIPTextModel, TinyTextEncoder],  # noqa: UP007, UP045
        tokenizer: Union[CLIPTokenizer, WordTokenizer],  # noqa: UP007, UP045
        unet: Union[UNet2DConditionModel, SimDAUNet],  # noqa: UP007, UP045
        scheduler: SchedulerMixin,
        adapters: Optional[Union[SimDAAdapters, str]] = None,  # noqa: UP007, UP045
        sampling: Optional[dict] = None,  # noqa: UP007, UP045
        superres_scale: Optional[int] = None,  # noqa: UP007, UP045
    ):
        super().__init__()
        if isinstance(unet, UNet2DConditionModel):
            unet = SimDAUNet.from_unet2d(unet)
        if not isinstance(unet, SimDAUNet):
            raise SimDAError(
                f"unet must be a diffusers UNet2DConditionModel or a SimDAUNet, got "
                f"{type(unet).__name__}"
            )
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
        )
        self.register_to_config(sampling=dict(sampling or {}), superres_scale=superres_scale)
        if adapters is not None:
            self.load_adapters(adapters)
        self.video_processor = VideoProcessor(
            do_resize=False, vae_scale_factor=self.vae_scale_factor
        )

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a local model folder: diffusers' SD-1.x layout (unet, vae, text_encoder,
        tokenizer, scheduler; safetensors weights) or one written by ``save_pretrained``.
        Takes diffusers' arguments (``torch_dtype``, ``variant``, ...) and ``adapters``. The
        folder's scheduler is the pipeline's (swap it with ``Scheduler.from_config``)."""
        if kwargs.pop("use_safetensors", True) is False:
            raise SimDAError("simda loads safetensors weights only (use_safetensors=False)")
        path = os.fspath(pretrained_model_name_or_path)
        index = check_model_folder(path)
        if not lists_components(index):
            return load_parts(cls, path, index, **kwargs)
        try:
            return super().from_pretrained(path, use_safetensors=True, **kwargs)
        except (OSError, ValueError, TypeError) as exc:
            if isinstance(exc, SimDAError):
                raise
            raise SimDAError(f"model folder {path!r} could not be loaded: {exc}") from exc

    @classmethod
    def from_preset(
        cls,
        preset: str = "tiny",
        *,
        seed: int = 0,
        lsa_layout: str = "paper",
        temporal_act: str = "gelu",
    ):
        """A randomly initialised pipeline of a built-in shape (``"tiny"`` only: the text
        stack and VAE of ``sd15`` come from a model folder), on the CPU in fp32."""
        if preset != "tiny":
            raise SimDAError(
                f"from_preset builds 'tiny'; for {preset!r} load a model folder "
                "with from_pretrained(path)"
            )
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left alone
            torch.manual_seed(seed)
            config = unet2d_config("tiny")
            unet = SimDAUNet.from_unet2d(
                UNet2DConditionModel(**config), lsa_layout=lsa_layout, temporal_act=temporal_act
            )
            tokenizer = WordTokenizer()
            text_encoder = TinyTextEncoder(
                tokenizer.vocab_size, config["cross_attention_dim"], tokenizer.model_max_length
            )
            vae = AutoencoderKL(**TINY_VAE)
        for module in (text_encoder, vae):
            module.requires_grad_(False)  # frozen, as the image UNet (inflate froze it)
        for module in (unet, text_encoder, vae):
            module.eval()
        return cls(vae, text_encoder, tokenizer, unet, DDIMScheduler(**SD_SCHEDULER))

    def load_adapters(self, adapters) -> dict:
        """Load trained adapters into the UNet: a ``SimDAAdapters``, or the path of a
        ``SimDAAdapters`` folder or of an adapter file (``simda.save_adapters``). Names and
        shapes are checked first; returns ``{"missing": [...], "unexpected": [...]}``."""
        if isinstance(adapters, SimDAAdapters):
            adapters.load_into(self.unet)
            return {"missing": [], "unexpected": []}
        return load_adapters(self.unet, os.fspath(adapters))

    def save_adapters(self, path: str, dtype: torch.dtype | None = None) -> None:
        """Save the adapters as a ``SimDAAdapters`` folder (config.json + safetensors), in
        ``dtype`` if given (fp16 halves the files)."""
        adapters = SimDAAdapters.from_unet(self.unet)
        if dtype is not None:
            adapters = torch.nn.Module.to(adapters, dtype)  # ModelMixin.to warns on any dtype
        adapters.save_pretrained(path)

    def to(self, *args, **kwargs):
        """``DiffusionPipeline.to`` (a device, a dtype, or both), with a clear error for a
        value that is neither, or a CUDA device on a machine without one."""
        for value in [*args, *kwargs.values()]:
            if not isinstance(value, str | torch.device):
                continue
            try:
                device = torch.device(value)
            except RuntimeError:
                raise SimDAError(
                    f"{value!r} is neither a device nor a torch.dtype (e.g. 'cuda', torch.float16)"
                ) from None
            if device.type == "cuda" and not torch.cuda.is_available():
                raise SimDAError(f"device {device} needs a CUDA GPU, and none is available")
        return super().to(*args, **kwargs)

    def enable_vae_slicing(self) -> None:
        """Decode one frame at a time inside each ``decode_chunk_size`` chunk (less memory)."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_vae_tiling(self) -> None:
        """Decode each frame in overlapping tiles (large frames in bounded memory)."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    # ------------------------------------------------------------------ settings

    @property
    def vae_scale_factor(self) -> int:
        vae = self.vae
        if isinstance(vae, SpaceToDepthAutoencoder):
            return vae.spatial_scale
        return 2 ** (len(vae.config.block_out_channels) - 1)

    @property
    def default_size(self) -> int:
        return self.unet.config.sample_size * self.vae_scale_factor

    @property
    def sampling_defaults(self) -> dict:
        """The settings a call uses where it is given none: the model's recommendation
        (``config.sampling``), else diffusers' defaults."""
        size = self.default_size
        return {**DIFFUSERS_DEFAULTS, "height": size, "width": size, **self.config.sampling}

    def sampling_settings(self, num_inference_steps=None, guidance_scale=None):
        """Steps and guidance, each defaulting to ``sampling_defaults``, checked:
        ``(num_inference_steps, guidance_scale)``."""
        defaults = self.sampling_defaults
        if num_inference_steps is None:
            num_inference_steps = defaults["num_inference_steps"]
        if guidance_scale is None:
            guidance_scale = defaults["guidance_scale"]
        self.check_steps(num_inference_steps)
        check_number("guidance_scale", guidance_scale)
        return num_inference_steps, guidance_scale

    def check_steps(self, num_inference_steps) -> None:
        """Denoising steps: an int in 1 .. the scheduler's training timesteps."""
        limit = self.scheduler.config.num_train_timesteps
        if not is_int(num_inference_steps) or not 1 <= num_inference_steps <= limit:
            raise SimDAError(
                f"num_inference_steps must be an int in 1..{limit}, got {num_inference_steps!r}"
            )

    def check_size(self, num_frames, height, width) -> None:
        factor = self.vae_scale_factor
        for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
            if not is_int(value):
                raise SimDAError(f"{name} must be an int, got {value!r}")
        if num_frames < 1:
            raise SimDAError(f"num_frames must be >= 1, got {num_frames}")
        if height % factor or width % factor or height < factor or width < factor:
            raise SimDAError(
                f"height and width must be positive multiples of {factor} pixels "
                f"(the VAE's downsampling), got {height}x{width}"
            )

    # ------------------------------------------------------------------ text

    @torch.no_grad()
    def embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings (B, L, D) of a list of prompts, in the UNet's dtype."""
        prompts = self.maybe_convert_prompt(list(prompts), self.tokenizer)  # textual inversion
        ids = tokenize(self.tokenizer, list(prompts)).to(self._execution_device)
        return self.text_encoder(ids)[0].to(self.unet.dtype)

    def encode_prompt(
        self,
        prompt,
        device=None,
        num_videos_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt=None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        lora_scale: float | None = None,
    ):
        """``(prompt_embeds, negative_prompt_embeds)``, each (B * num_videos_per_prompt, L, D),
        as diffusers' pipelines encode them (the negative ones None without guidance)."""
        from diffusers.utils import USE_PEFT_BACKEND, scale_lora_layers, unscale_lora_layers

        scaled = (
            lora_scale is not None
            and USE_PEFT_BACKEND
            and hasattr(self.text_encoder, "peft_config")
        )
        if scaled:
            scale_lora_layers(self.text_encoder, lora_scale)
        try:
            if prompt_embeds is None:
                prompt_embeds = self.embed_prompts([prompt] if isinstance(prompt, str) else prompt)
            batch = prompt_embeds.shape[0]
            if do_classifier_free_guidance and negative_prompt_embeds is None:
                negatives = negative_prompt if negative_prompt is not None else ""
                negatives = [negatives] * batch if isinstance(negatives, str) else negatives
                negative_prompt_embeds = self.embed_prompts(negatives)
        finally:
            if scaled:
                unscale_lora_layers(self.text_encoder, lora_scale)
        dtype = self.unet.dtype
        prompt_embeds = prompt_embeds.to(device=device, dtype=dtype)
        prompt_embeds = prompt_embeds.repeat_interleave(num_videos_per_prompt, dim=0)
        if do_classifier_free_guidance:
            negative_prompt_embeds = negative_prompt_embeds.to(device=device, dtype=dtype)
            negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(
                num_videos_per_prompt, dim=0
            )
        return prompt_embeds, negative_prompt_embeds

    # ------------------------------------------------------------------ latents

    @torch.no_grad()
    def vae_posteriors(self, pixels: torch.Tensor, chunk: int = 8):
        """The VAE's latent distributions of uint8 frames (N, 3, H, W), ``chunk`` frames per
        VAE call (bounded memory), one per call."""
        for i in range(0, len(pixels), chunk):
            x = pixels[i : i + chunk].to(self.vae.dtype) / 127.5 - 1
            yield self.vae.encode(x).latent_dist

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, generator=None, chunk: int = 8) -> torch.Tensor:
        """uint8 (F, H, W, 3) or (B, F, H, W, 3) -> scaled latents (B, C, F, h, w)."""
        check_rgb_frames(frames, "frames", (4, 5), "(F, H, W, 3) or (B, F, H, W, 3)")
        frames = frames[None] if frames.ndim == 4 else frames
        b, f, h, w, _ = frames.shape
        self.check_size(f, h, w)
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(self._execution_device)
        pixels = pixels.reshape(b * f, h, w, 3).permute(0, 3, 1, 2)
        parts = [d.sample(generator) for d in self.vae_posteriors(pixels, chunk)]
        latents = torch.cat(parts) * self.vae.config.scaling_factor
        return latents.view(b, f, *latents.shape[1:]).transpose(1, 2).to(self.unet.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int = 16) -> torch.Tensor:
        """(B, C, F, h, w) -> video float32 (B, 3, F, H, W) in [-1, 1], decoded
        ``decode_chunk_size`` frames at a time so that memory stays bounded for long clips."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents)
            raise SimDAError(f"latents must be a (B, C, F, h, w) tensor, got {got}")
        b, c, f, h, w = latents.shape
        flat = latents.transpose(1, 2).reshape(b * f, c, h, w) / self.vae.config.scaling_factor
        upcast = self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False)
        dtype = torch.float32 if upcast else self.vae.dtype
        vae = self.vae.to(dtype) if upcast else self.vae
        try:
            parts = [
                vae.decode(flat[i : i + decode_chunk_size].to(dtype)).sample.float()
                for i in range(0, len(flat), decode_chunk_size)
            ]
        finally:
            if upcast:
                self.vae.to(torch.float16)
        video = torch.cat(parts).clamp(-1, 1)
        return video.view(b, f, *video.shape[1:]).transpose(1, 2)

    def postprocess(self, latents: torch.Tensor, output_type: str, decode_chunk_size: int = 16):
        """Latents -> frames in ``output_type`` (see ``SimDAPipelineOutput``)."""
        if output_type == "latent":
            return latents
        video = self.decode_latents(latents, decode_chunk_size)
        return self.video_processor.postprocess_video(video, output_type=output_type)

    def prepare_latents(self, shape, generator=None, latents=None) -> torch.Tensor:
        """Fresh noise of ``shape`` (arranged for context windows when they are on, see
        ``windows.arrange_noise``) or the given ``latents``, on the execution device in the
        UNet's dtype, scaled by the scheduler's initial sigma."""
        if latents is None:
            latents = draw_noise(shape, generator)
            if self.free_noise_enabled:
                length, free = self.context_length(), self._free_noise
                latents = windows.arrange_noise(
                    latents, length, free.context_stride, free.noise_type, generator
                )
        latents = latents.to(device=self._execution_device, dtype=self.unet.dtype)
        return latents * self.scheduler.init_noise_sigma

    # ------------------------------------------------------------------ denoising

    def _extra_step_kwargs(self, generator, eta) -> dict:
        """``generator`` and ``eta`` for schedulers whose ``step`` takes them."""
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {"generator": generator} if "generator" in accepted else {}
        if "eta" in accepted:
            kwargs["eta"] = eta
        return kwargs

    def predict_noise(
        self,
        latents,
        t,
        cond,
        uncond=None,
        guidance_scale=1.0,
        extra=None,
        cross_attention_kwargs=None,
    ):
        """The guided model output at scheduler input ``latents`` (after
        ``scale_model_input``); ``extra``: the super-resolution variant's condition. ``cond``
        and ``uncond`` are (B, L, D), or (B, F, L, D) with one embedding per frame. With
        context windows on (``enable_free_noise``) and more frames than a window, the UNet
        runs window by window and the predictions are blended (``windows.blend_weights``)."""
        frames = latents.shape[2]
        spans = self.context_windows(frames)
        if len(spans) == 1:
            return self._guided(
                latents, t, cond, uncond, guidance_scale, extra, cross_attention_kwargs
            )
        weights = windows.blend_weights(frames, spans, self._free_noise.weighting_scheme)
        out = torch.zeros_like(latents)
        size = self._free_noise.window_batch
        for first in range(0, len(spans), size):  # window_batch windows per UNet call
            group = spans[first : first + size]

            def stacked(x, group=group):  # the windows' frames of x, stacked on the batch
                if x is None or x.ndim == 3:  # one text for every frame
                    return None if x is None else torch.cat([x] * len(group))
                return torch.cat([x[:, :, a:b] if x.ndim == 5 else x[:, a:b] for a, b in group])

            parts = self._guided(
                stacked(latents),
                t,
                stacked(cond),
                stacked(uncond),
                guidance_scale,
                stacked(extra),
                cross_attention_kwargs,
            ).chunk(len(group))
            for (a, b), w, part in zip(group, weights[first : first + size], parts, strict=True):
                out[:, :, a:b] += part * w.to(part)[None, None, :, None, None]
        return out

    def _guided(self, latents, t, cond, uncond, guidance_scale, extra, cross_attention_kwargs):
        x = latents if extra is None else torch.cat([latents, extra], 1)
        if uncond is None:
            return self.unet(x, t, cond, cross_attention_kwargs=cross_attention_kwargs).sample
        if uncond.ndim != cond.ndim:  # one negative for every frame of per-frame prompts
            uncond = uncond[:, None].expand(-1, cond.shape[1], -1, -1)
        both = self.unet(
            torch.cat([x, x]),
            t,
            torch.cat([uncond, cond]),
            cross_attention_kwargs=cross_attention_kwargs,
        ).sample
        out_u, out_c = both.chunk(2)
        return out_u + guidance_scale * (out_c - out_u)

    @torch.no_grad()
    def denoise(
        self,
        latents,
        prompt_embeds,
        negative_prompt_embeds,
        num_inference_steps,
        guidance_scale,
        *,
        extra=None,
        generator=None,
        eta: float = 0.0,
        cross_attention_kwargs=None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=("latents",),
    ) -> torch.Tensor:
        """The denoising loop, as diffusers' pipelines run it: ``latents`` (already scaled by
        ``init_noise_sigma``) through every timestep of the pipeline's scheduler, each model
        input scaled by ``scale_model_input``, guidance when ``negative_prompt_embeds`` is
        given, ``generator`` and ``eta`` passed to ``step`` where it takes them."""
        device = self._execution_device
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        step_kwargs = self._extra_step_kwargs(generator, eta)
        self._num_timesteps = len(timesteps)
        self._guidance_scale, self._interrupt = guidance_scale, False
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    break
                x = self.scheduler.scale_model_input(latents, t)
                guided = self.do_classifier_free_guidance and negative_prompt_embeds is not None
                output = self.predict_noise(
                    x,
                    t,
                    prompt_embeds,
                    negative_prompt_embeds if guided else None,
                    self._guidance_scale,
                    extra,
                    cross_attention_kwargs,
                )
                latents = self.scheduler.step(output, t, latents, **step_kwargs).prev_sample
                if callback_on_step_end is not None:
                    local = {
                        "latents": latents,
                        "prompt_embeds": prompt_embeds,
                        "negative_prompt_embeds": negative_prompt_embeds,
                    }
                    given = {k: local[k] for k in callback_on_step_end_tensor_inputs}
                    changed = callback_on_step_end(self, i, t, given) or {}
                    latents = changed.get("latents", latents)
                    prompt_embeds = changed.get("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = changed.get(
                        "negative_prompt_embeds", negative_prompt_embeds
                    )
                bar.update()
        return latents

    @property
    def guidance_scale(self) -> float:
        """The guidance of the call under way (a callback may set ``_guidance_scale``, as
        diffusers' ``SDCFGCutoffCallback`` does, to turn guidance off for the rest)."""
        return getattr(self, "_guidance_scale", 1.0)

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1.0

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` (e.g. from ``callback_on_step_end``) to stop
        denoising after the current step."""
        return getattr(self, "_interrupt", False)

    @property
    def num_timesteps(self) -> int:
        return getattr(self, "_num_timesteps", 0)

    @torch.no_grad()
    def invert(self, latents, num_inference_steps: int = 50, prompt: str = "", extra=None):
        """DDIM inversion: clean latents (B, C, F, h, w) -> the noise DDIM maps back to them,
        conditioned on ``prompt`` (the empty prompt, as in one-shot editing), no guidance. The
        inverse DDIM scheduler is built from the pipeline scheduler's config, so inversion
        works whichever scheduler samples."""
        self.check_steps(num_inference_steps)
        check_prompt(prompt)
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents)
            raise SimDAError(f"latents must be a (B, C, F, h, w) tensor, got {got}")
        inverse = DDIMInverseScheduler.from_config(self.scheduler.config)
        inverse.set_timesteps(num_inference_steps, device=self._execution_device)
        cond = self.embed_prompts([prompt] * latents.shape[0])
        x = latents.to(self._execution_device, self.unet.dtype)
        with self.progress_bar(total=len(inverse.timesteps)) as bar:
            for t in inverse.timesteps:
                output = self.predict_noise(x, t, cond, extra=extra)
                x = inverse.step(output, t, x).prev_sample
                bar.update()
        return x

    # ------------------------------------------------------------------ text to video

    def check_inputs(
        self,
        prompt,
        negative_prompt,
        prompt_embeds,
        negative_prompt_embeds,
        num_frames,
        height,
        width,
        num_inference_steps,
        guidance_scale,
        num_videos_per_prompt,
        eta,
        generator,
        latents,
        output_type,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs,
        decode_chunk_size,
        cross_attention_kwargs,
    ) -> int:
        """Every argument of ``__call__``, checked before any work; returns the number of
        prompts."""
        if (prompt is None) == (prompt_embeds is None):
            raise SimDAError("give exactly one of prompt and prompt_embeds")
        if isinstance(prompt, dict):
            windows.check_prompt_schedule(prompt, num_frames)
            batch = 1
        elif prompt is not None:
            prompts = [prompt] if isinstance(prompt, str) else prompt
            if not isinstance(prompts, list | tuple) or not prompts:
                raise SimDAError(
                    "prompt must be a string, a non-empty list of strings or a dict "
                    f"{{frame: prompt}}, got {prompt!r}"
                )
            for p in prompts:
                check_prompt(p)
            batch = len(prompts)
        else:
            check_embeds("prompt_embeds", prompt_embeds, self.unet.config.cross_attention_dim)
            batch = prompt_embeds.shape[0]
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise SimDAError("give at most one of negative_prompt and negative_prompt_embeds")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            if (
                not isinstance(negative_prompt, list | tuple)
                or len(negative_prompt) != batch
                or not all(isinstance(p, str) for p in negative_prompt)
            ):
                raise SimDAError(
                    f"negative_prompt must be None, a string or a list of {batch} strings (one "
                    f"per prompt), got {negative_prompt!r}"
                )
        if negative_prompt_embeds is not None:
            check_embeds(
                "negative_prompt_embeds",
                negative_prompt_embeds,
                self.unet.config.cross_attention_dim,
            )
            if prompt_embeds is not None and negative_prompt_embeds.shape != prompt_embeds.shape:
                raise SimDAError(
                    f"negative_prompt_embeds must have the shape of prompt_embeds "
                    f"{tuple(prompt_embeds.shape)}, got {tuple(negative_prompt_embeds.shape)}"
                )
        self.check_size(num_frames, height, width)
        self.check_steps(num_inference_steps)
        check_number("guidance_scale", guidance_scale)
        check_number("eta", eta, minimum=0.0)
        for name, value in (
            ("num_videos_per_prompt", num_videos_per_prompt),
            ("decode_chunk_size", decode_chunk_size),
        ):
            if not is_int(value) or value < 1:
                raise SimDAError(f"{name} must be an int >= 1, got {value!r}")
        videos = batch * num_videos_per_prompt
        check_generator(generator, videos)
        shape = self._latent_shape(videos, num_frames, height, width)
        if latents is not None and (
            not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape
        ):
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else latents
            raise SimDAError(
                f"latents must be a tensor of shape (B, C, F, h, w) = {shape} for {videos} "
                f"video(s) of {num_frames} frames at {height}x{width}; got {got}"
            )
        if output_type not in OUTPUT_TYPES:
            raise SimDAError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise SimDAError(f"callback_on_step_end must be callable, got {callback_on_step_end!r}")
        unknown = set(callback_on_step_end_tensor_inputs or ()) - set(self._callback_tensor_inputs)
        if unknown:
            raise SimDAError(
                f"callback_on_step_end_tensor_inputs must be among "
                f"{self._callback_tensor_inputs}, got {sorted(unknown)}"
            )
        if cross_attention_kwargs is not None and not isinstance(cross_attention_kwargs, dict):
            raise SimDAError(
                f"cross_attention_kwargs must be a dict or None, got {cross_attention_kwargs!r}"
            )
        self.check_context(num_frames)
        if self.unet.config.in_channels != self.unet.config.out_channels:
            raise SimDAError(
                "this is a super-resolution model (its UNet takes the low-resolution clip too): "
                "sample it with simda.pipelines.upscale"
            )
        self.unet.check_layers()
        self.check_scheduler()
        return batch

    def check_scheduler(self) -> None:
        """The scheduler can sample this model: one step of a new one of its class and config
        on a tiny tensor, so that a scheduler that rejects the model's ``prediction_type``
        (PNDM, Euler ancestral and KDPM2 take no ``"sample"``) is one clear error before any
        work."""
        probe = type(self.scheduler).from_config(self.scheduler.config)
        try:
            probe.set_timesteps(10)
            t = probe.timesteps[0]
            x = torch.zeros(1, 1, 1, 1)
            probe.step(x, t, probe.scale_model_input(x, t))
        except (ValueError, NotImplementedError) as exc:
            if "prediction_type" not in str(exc):
                return  # not this check's business: sampling itself will say
            raise SimDAError(
                f"{type(self.scheduler).__name__} cannot sample this model, whose "
                f"prediction_type is {self.scheduler.config.prediction_type!r}: {exc}"
            ) from exc

    def _latent_shape(self, videos, num_frames, height, width) -> tuple[int, ...]:
        factor = self.vae_scale_factor
        return (
            videos,
            self.unet.config.out_channels,
            num_frames,
            height // factor,
            width // factor,
        )

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        num_videos_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        cross_attention_kwargs: dict | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        decode_chunk_size: int = 16,
    ):
        """Sample ``num_frames`` frames for each prompt (``num_videos_per_prompt`` videos each).
        ``prompt`` may be a dict ``{frame: prompt}``: prompts over time, the text embedding of
        each frame interpolated between the keyed ones (``windows.interpolate_prompts``).

        Settings left None take the model's recommendation (``sampling_defaults``), else
        diffusers' (16 frames, 50 steps, guidance 7.5, the UNet's sample size). ``latents``:
        start from these (e.g. DDIM-inverted) instead of fresh noise; ``generator``: one, or a
        list with one per video. Returns a ``SimDAPipelineOutput`` (``.frames``, see there),
        or a 1-tuple with ``return_dict=False``. Every argument is checked before any work
        (one ``ValueError``).
        """
        defaults = self.sampling_defaults
        num_frames = defaults["num_frames"] if num_frames is None else num_frames
        height = defaults["height"] if height is None else height
        width = defaults["width"] if width is None else width
        num_inference_steps, guidance_scale = self.sampling_settings(
            num_inference_steps, guidance_scale
        )
        if isinstance(callback_on_step_end, PipelineCallback | MultiPipelineCallbacks):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        batch = self.check_inputs(
            prompt,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            num_frames,
            height,
            width,
            num_inference_steps,
            guidance_scale,
            num_videos_per_prompt,
            eta,
            generator,
            latents,
            output_type,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            decode_chunk_size,
            cross_attention_kwargs,
        )
        guided = guidance_scale > 1.0
        lora_scale = (cross_attention_kwargs or {}).get("scale")
        if isinstance(prompt, dict):  # prompts over time: one text embedding per frame
            keys = sorted(prompt)
            embeds = self.embed_prompts([prompt[k] for k in keys])
            callback = (
                self._free_noise.prompt_interpolation_callback if self.free_noise_enabled else None
            )
            keyed = {k: embeds[i : i + 1] for i, k in enumerate(keys)}
            prompt, prompt_embeds = None, windows.interpolate_prompts(keyed, num_frames, callback)
        cond, uncond = self.encode_prompt(
            prompt,
            self._execution_device,
            num_videos_per_prompt,
            guided,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            lora_scale,
        )
        shape = self._latent_shape(batch * num_videos_per_prompt, num_frames, height, width)
        latents = self.prepare_latents(shape, generator, latents)
        latents = self.denoise(
            latents,
            cond,
            uncond,
            num_inference_steps,
            guidance_scale,
            generator=generator,
            eta=eta,
            cross_attention_kwargs=cross_attention_kwargs,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        frames = self.postprocess(latents, output_type, decode_chunk_size)
        self.maybe_free_model_hooks()
        return SimDAPipelineOutput(frames=frames) if return_dict else (frames,)


def dtype_argument(dtype: torch.dtype) -> dict:
    """diffusers' ``from_pretrained`` argument for the weights' dtype: ``dtype`` where the
    installed diffusers names it so (it deprecates ``torch_dtype`` there), else
    ``torch_dtype``."""
    from diffusers.pipelines import pipeline_utils

    return {"dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype": dtype}


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (``output_type="np"``) -> uint8, rounded."""
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


@contextlib.contextmanager
def progress_bars(pipe: SimDAPipeline, enabled: bool):
    """The pipeline's own progress bars off while ``enabled`` is False, then as they were."""
    before = dict(getattr(pipe, "_progress_bar_config", {}))
    if not enabled:
        pipe.set_progress_bar_config(**{**before, "disable": True})
    try:
        yield
    finally:
        pipe._progress_bar_config = before
