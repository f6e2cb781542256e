"""A tiny decoder-only transformer policy with a key/value cache, built from a config.

The model reads a padded token layout: ``tokens[B, L]`` with ``valid[B, L]`` (False on padding
columns, which no query may attend to) and ``positions[B, L]`` (index of the token among the
episode's valid tokens). The same layout is used for batched generation (one column at a time,
through :class:`KVCache`) and for the training forward (all columns at once), so the two give
the same logits: tested in ``tests/demo/test_demo_policy.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from creditlab.errors import RangeError, ShapeError

__all__ = ["PolicyConfig", "TinyDecoder", "KVCache", "masked_log_probs"]


@dataclass(frozen=True)
class PolicyConfig:
    """Size of the tiny decoder.

    Attributes:
        vocab_size: number of token ids (the tokenizer's length).
        d_model: width of the residual stream.
        n_layers: transformer blocks.
        n_heads: attention heads (must divide ``d_model``).
        d_ff: hidden width of the MLP.
        max_len: longest sequence (learned position embeddings).
    """

    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    max_len: int = 256

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise RangeError(f"PolicyConfig.{name} must be a positive integer; got {value!r}")
        if self.d_model % self.n_heads:
            raise RangeError(f"PolicyConfig.n_heads={self.n_heads} must divide d_model={self.d_model}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class KVCache:
    """Per-layer keys and values of the columns fed so far, for incremental decoding.

    Attributes:
        keys, values: per layer float[B, H, max_len, d_head] buffers.
        valid: bool[B, max_len] -- which cached columns may be attended to.
        length: number of columns written.
    """

    def __init__(
        self, config: PolicyConfig, batch: int, max_len: int | None = None, dtype: torch.dtype = torch.float32
    ):
        n = max_len or config.max_len
        d_head = config.d_model // config.n_heads
        shape = (batch, config.n_heads, n, d_head)
        self.keys = [torch.zeros(shape, dtype=dtype) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype) for _ in range(config.n_layers)]
        self.valid = torch.zeros(batch, n, dtype=torch.bool)
        self.length = 0
        self.capacity = n


class Block(nn.Module):
    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.ln1 = nn.LayerNorm(config.d_model)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff), nn.GELU(), nn.Linear(config.d_ff, config.d_model)
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        b, n, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (t.view(b, n, h, d // h).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            start = cache.length
            cache.keys[layer][:, :, start : start + n] = k
            cache.values[layer][:, :, start : start + n] = v
            k = cache.keys[layer][:, :, : start + n]
            v = cache.values[layer][:, :, : start + n]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask[:, None])
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.ln2(x))


class TinyDecoder(nn.Module):
    """Pre-LayerNorm GPT-style decoder, randomly initialised from a :class:`PolicyConfig`.

    Example:
        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> model = TinyDecoder(PolicyConfig(vocab_size=10, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_len=8))
        >>> tokens = torch.tensor([[1, 4, 5]])
        >>> model(tokens).shape
        torch.Size([1, 3, 10])
    """

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        self.tok = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.max_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init)
        for block in self.blocks:  # GPT-2: scale the residual projections by depth
            nn.init.normal_(block.proj.weight, std=0.02 / math.sqrt(2 * config.n_layers))
            nn.init.normal_(block.mlp[2].weight, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        tokens: torch.Tensor,
        valid: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        commit: bool = True,
    ) -> torch.Tensor:
        """Logits for every column.

        Args:
            tokens: int[B, n] -- token ids of the new columns.
            valid: bool[B, n] -- False on padding columns (default: all valid).
            positions: int[B, n] -- position ids (default: ``cache.length + arange(n)``).
            cache: append the new columns' keys/values to this cache and attend to everything in
                it (incremental decoding); without a cache, the n columns attend causally.
            commit: with a cache, ``False`` computes the logits without keeping the new columns
                (they are overwritten by the next call): used to query a hypothetical continuation.

        Returns:
            float[B, n, vocab_size].
        """
        b, n = tokens.shape
        start = cache.length if cache is not None else 0
        if valid is None:
            valid = torch.ones(b, n, dtype=torch.bool)
        if positions is None:
            positions = (start + torch.arange(n)).expand(b, n)
        if (
            start + n > (cache.capacity if cache is not None else self.config.max_len)
            or int(positions.max()) >= self.config.max_len
        ):
            raise ShapeError(f"sequence of {start + n} columns exceeds the policy's max_len {self.config.max_len}")
        if cache is not None:
            cache.valid[:, start : start + n] = valid
            keys_valid = cache.valid[:, : start + n]
        else:
            keys_valid = valid
        # Query column i (absolute start + i) may see key column j <= start + i that is valid.
        causal = torch.ones(n, start + n, dtype=torch.bool).tril(diagonal=start)
        attn_mask = causal[None] & keys_valid[:, None, :]
        # A padding query may have no visible key; let it see itself so softmax stays finite.
        attn_mask[:, torch.arange(n), start + torch.arange(n)] = True
        x = self.tok(tokens) + self.pos(positions)
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask, cache, i)
        if cache is not None and commit:
            cache.length = start + n
        return self.head(self.ln(x))


def masked_log_probs(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Log-softmax over the allowed tokens only (constrained decoding).

    Args:
        logits: float[..., V].
        allowed: bool[..., V] -- the grammar slot's allowed tokens (at least one per row).

    Returns:
        float[..., V] -- log-probabilities, ``-inf`` on disallowed tokens.
    """
    return torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
