"""Reading and writing clips: frames are uint8 arrays (F, H, W, 3)."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from simda.errors import SimDAError

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv")


def read_video(
    path: str,
    num_frames: int | None = None,
    size: tuple[int, int] | None = None,
    stride: int | None = None,
) -> np.ndarray:
    """Frames of a video or GIF as uint8 (F, H, W, 3); optionally ``num_frames`` frames taken
    every ``stride`` frames (default: spread over the clip), resized and centre-cropped to
    ``size = (height, width)``."""
    import imageio.v3 as iio

    if not os.path.isfile(path):
        raise SimDAError(f"video {path!r} does not exist")
    try:
        frames = np.asarray(iio.imread(path, index=None))
    except Exception as exc:  # imageio raises many types for unreadable files
        raise SimDAError(f"cannot read video {path!r}: {_reason(exc)}") from exc
    if frames.ndim == 3:  # a single image or grey frames
        frames = frames[None] if frames.shape[-1] in (3, 4) else frames[..., None]
    if frames.ndim != 4 or len(frames) == 0:
        raise SimDAError(f"video {path!r} has no frames (shape {frames.shape})")
    frames = frames[..., :3] if frames.shape[-1] >= 3 else np.repeat(frames, 3, -1)
    for name, value in (("num_frames", num_frames), ("stride", stride)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise SimDAError(f"read_video: {name} must be an int >= 1, got {value!r}")
    if num_frames is not None:
        frames = select_frames(frames, num_frames, stride, f"video {path!r}")
    if size is not None:
        frames = resize_frames(frames, size)
    return np.ascontiguousarray(frames.astype(np.uint8))


def select_frames(frames: np.ndarray, num_frames: int, stride=None, what="the clip"):
    """``num_frames`` frames taken every ``stride`` frames (default: spread over the clip)."""
    if len(frames) < num_frames:
        raise SimDAError(f"{what} has {len(frames)} frames, {num_frames} are needed")
    step = stride or max(1, len(frames) // num_frames)
    return frames[: step * num_frames : step][:num_frames]


def _reason(exc: Exception) -> str:
    """One line for a reader's exception: its first line, and for ffmpeg (whose messages carry
    its whole banner and log) ffmpeg's last line too, its verdict."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if "=== stderr ===" in lines and lines[-1] != "=== stderr ===":
        return f"{lines[0]} ({lines[-1]})"
    return lines[0]


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (shorter side) and centre-crop uint8 (F, H, W, 3) frames to (height, width)."""
    height, width = size
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    scale = max(height / x.shape[2], width / x.shape[3])
    new = (max(height, round(x.shape[2] * scale)), max(width, round(x.shape[3] * scale)))
    x = F.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=False)
    top, left = (new[0] - height) // 2, (new[1] - width) // 2
    x = x[:, :, top : top + height, left : left + width]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_video(path: str, frames: np.ndarray, fps: int = 8) -> str:
    """Write uint8 (F, H, W, 3) frames as .mp4 (H.264 via imageio-ffmpeg) or .gif."""
    import imageio.v3 as iio

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    frames = np.ascontiguousarray(frames.astype(np.uint8))
    if path.endswith(".gif"):
        iio.imwrite(path, frames, duration=1000 / fps, loop=0)
        return path
    import imageio.v2 as iio2

    # H.264 in yuv420p needs even sizes: pad by repeating the last row / column.
    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with iio2.get_writer(
        path, fps=fps, codec="libx264", quality=8, macro_block_size=1, ffmpeg_log_level="error"
    ) as writer:
        for frame in frames:
            writer.append_data(frame)
    return path


def side_by_side(*clips: np.ndarray, gap: int = 2) -> np.ndarray:
    """Clips of equal length and height next to each other, separated by a white gap."""
    frames = min(len(c) for c in clips)
    height = max(c.shape[1] for c in clips)
    parts = []
    for i, clip in enumerate(clips):
        clip = clip[:frames]
        if clip.shape[1] != height:
            clip = resize_frames(clip, (height, round(clip.shape[2] * height / clip.shape[1])))
        parts.append(clip)
        if i < len(clips) - 1:
            parts.append(np.full((frames, height, gap, 3), 255, np.uint8))
    return np.concatenate(parts, axis=2)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (3, F, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1


def to_frames(video: torch.Tensor) -> np.ndarray:
    """float (3, F, H, W) in [-1, 1] -> uint8 (F, H, W, 3)."""
    x = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()
