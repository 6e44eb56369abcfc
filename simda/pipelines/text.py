"""A text stack that needs no files: a hashing word tokenizer and a tiny text encoder.

Stable Diffusion folders bring CLIP's tokenizer and text encoder; the built-in ``tiny`` model
(and anything trained from scratch, like the toy world) uses these instead.
"""

from __future__ import annotations

import re
import warnings
import zlib

import torch
import torch.nn as nn

PAD, BOS, EOS = 0, 1, 2


class WordTokenizer:
    """Lower-cased words to ids: the words of ``vocab`` get their own ids (3, 4, ...), any
    other word an id by a stable hash (crc32) into the rest of the range. No file needed.

    ``tokenizer(texts) -> LongTensor (B, max_length)``: BOS, words, EOS, then PAD.
    """

    def __init__(
        self, vocab_size: int = 4096, max_length: int = 16, vocab: list[str] | None = None
    ):
        self.vocab = list(vocab or [])
        if vocab_size < len(self.vocab) + 16:
            raise ValueError(f"vocab_size must be >= len(vocab) + 16, got {vocab_size}")
        self.vocab_size = vocab_size
        self.model_max_length = max_length
        self._known = {w: 3 + i for i, w in enumerate(self.vocab)}

    def word_id(self, word: str) -> int:
        if word in self._known:
            return self._known[word]
        first = 3 + len(self.vocab)
        return first + zlib.crc32(word.encode()) % (self.vocab_size - first)

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = torch.full((len(texts), self.model_max_length), PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            words = re.findall(r"[a-z0-9]+", text.lower())
            self._warn_unread(text, words)
            tokens = [BOS, *map(self.word_id, words)][: self.model_max_length - 1] + [EOS]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids

    def _warn_unread(self, text: str, words: list[str]) -> None:
        """Say when a prompt has words this model never learned (its vocab is closed) or more
        words than it reads: they would change the clip silently or not at all."""
        unknown = sorted({w for w in words if w not in self._known}) if self.vocab else []
        if unknown:
            warnings.warn(
                f"prompt {text!r}: this model knows only the words {' '.join(self.vocab)}; "
                f"{', '.join(unknown)} act as noise",
                UserWarning,
                stacklevel=3,
            )
        if len(words) > self.model_max_length - 2:
            warnings.warn(
                f"prompt {text!r} has {len(words)} words; the model reads the first "
                f"{self.model_max_length - 2}",
                UserWarning,
                stacklevel=3,
            )

    def config(self) -> dict:
        return {
            "vocab_size": self.vocab_size,
            "max_length": self.model_max_length,
            "vocab": self.vocab,
        }


class TinyTextEncoder(nn.Module):
    """Token and position embeddings, an optional bag-of-words term, optional transformer
    layers, a final LayerNorm.

    ``pooled > 0`` adds ``pooled`` times the mean embedding of the caption's words to every
    token: a fixed, non-learned mixing that makes each token carry the whole caption, so a
    cross-attention that attends to one word still receives the others.
    forward(input_ids (B, L)) -> (hidden (B, L, dim),), like transformers' text models.
    """

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
        self.settings = {
            "vocab_size": vocab_size,
            "dim": dim,
            "max_length": max_length,
            "layers": layers,
            "heads": heads,
            "pooled": pooled,
        }
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    @property
    def hidden_size(self) -> int:
        return self.settings["dim"]

    def forward(self, input_ids: torch.Tensor):
        words = self.token(input_ids)
        h = words + self.position[: input_ids.shape[1]]
        if self.settings["pooled"]:
            real = (input_ids > EOS).unsqueeze(-1).to(words.dtype)  # not PAD/BOS/EOS
            mean = (words * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp(min=1)
            h = h + self.settings["pooled"] * mean
        for layer in self.layers:
            h = layer(h)
        return (self.norm(h),)


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids (B, L) from our tokenizer or a transformers tokenizer (padded to its max)."""
    if isinstance(tokenizer, WordTokenizer):
        return tokenizer(texts)
    return tokenizer(
        texts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
