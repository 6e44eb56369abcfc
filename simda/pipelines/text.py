"""A text stack that needs no files: a hashing word tokenizer and a tiny text encoder.

Stable Diffusion folders bring CLIP's tokenizer and text encoder; the built-in ``tiny`` model
(and anything trained from scratch, like the toy world) uses these instead.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import warnings
import zlib

import torch
import torch.nn as nn
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from transformers import PreTrainedTokenizer

PAD, BOS, EOS = 0, 1, 2
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<bos>", "<eos>"


def user_stacklevel() -> int:
    """The ``stacklevel`` of a warning that points at the first caller outside simda and the
    libraries it runs inside (transformers, diffusers, torch)."""
    inside = ("simda", "transformers", "diffusers", "torch")
    level = 1
    for frame in inspect.stack()[1:]:
        module = frame.frame.f_globals.get("__name__", "")
        if module.split(".")[0] not in inside:
            return level
        level += 1
    return level


class WordTokenizer(PreTrainedTokenizer):
    """Lower-cased words to ids: the words of ``vocab`` get their own ids (3, 4, ...), any
    other word an id by a stable hash (crc32) into the rest of the range. A transformers
    tokenizer (``save_pretrained`` / ``from_pretrained`` with one small JSON file); called like
    CLIP's, ``tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")``
    gives ``input_ids`` (B, max_length): BOS, words, EOS, then PAD.
    """

    vocab_files_names = {"vocab_file": "word_tokenizer.json"}
    model_input_names = ["input_ids"]

    def __init__(
        self,
        vocab_file: str | None = None,
        *,
        vocab_size: int = 4096,
        max_length: int = 16,
        vocab: list[str] | None = None,
        **kwargs,
    ):
        if vocab_file is not None:
            with open(vocab_file) as f:
                saved = json.load(f)
            vocab_size, max_length, vocab = saved["vocab_size"], saved["max_length"], saved["vocab"]
        self.words = list(vocab or [])
        if vocab_size < len(self.words) + 16:
            raise ValueError(f"vocab_size must be >= len(vocab) + 16, got {vocab_size}")
        self.id_range = vocab_size
        self._known = {w: 3 + i for i, w in enumerate(self.words)}
        self._specials = {PAD_TOKEN: PAD, BOS_TOKEN: BOS, EOS_TOKEN: EOS}
        for name, token in (("pad", PAD_TOKEN), ("bos", BOS_TOKEN), ("eos", EOS_TOKEN)):
            kwargs.setdefault(f"{name}_token", token)
        kwargs.setdefault("model_max_length", max_length)
        kwargs.setdefault("special_tokens_pattern", "bos_eos")
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return self.id_range

    def get_vocab(self) -> dict[str, int]:
        return {**self._specials, **self._known}

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        words = re.findall(r"[a-z0-9]+", text.lower())
        self._warn_unread(text, words)
        return words

    def _convert_token_to_id(self, token: str) -> int:
        if token in self._specials:
            return self._specials[token]
        if token in self._known:
            return self._known[token]
        first = 3 + len(self.words)
        return first + zlib.crc32(token.encode()) % (self.id_range - first)

    def _convert_id_to_token(self, index: int) -> str:
        names = {i: w for w, i in self.get_vocab().items()}
        return names.get(index, f"<word {index}>")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None):
        name = (f"{filename_prefix}-" if filename_prefix else "") + "word_tokenizer.json"
        path = os.path.join(save_directory, name)
        with open(path, "w") as f:
            json.dump(self.settings(), f)
        return (path,)

    def settings(self) -> dict:
        return {
            "vocab_size": self.id_range,
            "max_length": self.model_max_length,
            "vocab": self.words,
        }

    def _warn_unread(self, text: str, words: list[str]) -> None:
        """Say when a prompt has words this model never learned (its vocab is closed) or more
        words than it reads: they would change the clip silently or not at all."""
        unknown = sorted({w for w in words if w not in self._known}) if self.words else []
        if unknown:
            warnings.warn(
                f"prompt {text!r}: this model knows only the words {' '.join(self.words)}; "
                f"{', '.join(unknown)} act as noise",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        if len(words) > self.model_max_length - 2:
            warnings.warn(
                f"prompt {text!r} has {len(words)} words; the model reads the first "
                f"{self.model_max_length - 2}",
                UserWarning,
                stacklevel=user_stacklevel(),
            )


class TinyTextEncoder(ModelMixin, ConfigMixin):
    """Token and position embeddings, an optional bag-of-words term, optional transformer
    layers, a final LayerNorm; a diffusers model (config.json + safetensors).

    ``pooled > 0`` adds ``pooled`` times the mean embedding of the caption's words to every
    token: a fixed, non-learned mixing that makes each token carry the whole caption, so a
    cross-attention that attends to one word still receives the others.
    forward(input_ids (B, L)) -> (hidden (B, L, dim),), like transformers' text models.
    """

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 4096,
        dim: int = 32,
        max_length: int = 16,
        layers: int = 1,
        heads: int = 2,
        pooled: float = 0.0,
    ):
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    @property
    def hidden_size(self) -> int:
        return self.config.dim

    def forward(self, input_ids: torch.Tensor, attention_mask=None, **kwargs):
        words = self.token(input_ids)
        h = words + self.position[: input_ids.shape[1]]
        if self.config.pooled:
            real = (input_ids > EOS).unsqueeze(-1).to(words.dtype)  # not PAD/BOS/EOS
            mean = (words * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp(min=1)
            h = h + self.config.pooled * mean
        for layer in self.blocks:
            h = layer(h)
        return (self.norm(h),)


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids (B, L) from a transformers tokenizer (CLIP's or ``WordTokenizer``), padded
    to its maximum length."""
    return tokenizer(
        texts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
