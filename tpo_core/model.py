"""The tiny causal transformer of the token tasks (SPEC §3.4, §3.4.1).

Decoder-only and pre-norm: token + learned positional embeddings, ``layers``
blocks of (LayerNorm -> multi-head causal attention -> residual, LayerNorm ->
GELU MLP of width 4d -> residual), a final LayerNorm and a linear head.
Initialisation and the optimiser split follow the paper's public JAX code,
because PyTorch's defaults learn visibly slower here:

* every weight matrix ~ Normal(0, 1/fan_in), biases 0; LayerNorm 1 / 0;
  token embeddings std 1/sqrt(d), positional embeddings std 0.02;
* Muon on the 2-D tables and matrices (FFN, embeddings, head) with no weight
  decay; Adam on everything else (attention projections, LayerNorms, biases).

The embedding tables are stored transposed, ``(d, rows)``: ``torch.optim.Muon``
scales its step by ``sqrt(max(1, shape[0] / shape[1]))``, and that shape
makes it ``sqrt(max(1, d / rows))``, the seed code's scaling for a table whose
first (fan-in) axis is its rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    vocab: int
    length: int  # H: prompt length = answer length
    d_model: int = 64
    layers: int = 2
    heads: int = 2
    ffn_mult: int = 4

    def __post_init__(self):
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")


def _lecun_linear(fan_in: int, fan_out: int) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    nn.init.normal_(layer.weight, std=1 / math.sqrt(fan_in))
    nn.init.zeros_(layer.bias)
    return layer


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (_lecun_linear(d, d) for _ in range(4))
        self.ln2 = nn.LayerNorm(d)
        self.up = _lecun_linear(d, cfg.ffn_mult * d)
        self.down = _lecun_linear(cfg.ffn_mult * d, d)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        return x.view(n, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        h = self.ln1(x)
        q, k, v = self._split(self.q(h)), self._split(self.k(h)), self._split(self.v(h))
        causal = True
        if cache is not None:
            if "k" in cache:  # decoding: new tokens attend to everything before them
                k = torch.cat([cache["k"], k], 2)
                v = torch.cat([cache["v"], v], 2)
                causal = q.shape[2] > 1
            cache["k"], cache["v"] = k, v
        att = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + self.o(att.transpose(1, 2).reshape(x.shape))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class TinyTransformer(nn.Module):
    """Next-token logits over the vocabulary for prompt + answer sequences of length <= 2H."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.token_table = nn.Parameter(torch.randn(d, cfg.vocab) / math.sqrt(d))
        self.position_table = nn.Parameter(torch.randn(d, 2 * cfg.length) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = _lecun_linear(d, cfg.vocab)

    def forward(self, tokens: torch.Tensor, caches: list[dict] | None = None) -> torch.Tensor:
        """Logits (N, T, V) for tokens (N, T); with ``caches`` (one dict per block), continue a
        sequence whose earlier positions were fed before."""
        start = 0 if caches is None or "k" not in caches[0] else caches[0]["k"].shape[2]
        positions = torch.arange(start, start + tokens.shape[1])
        x = self.token_table.T[tokens] + self.position_table.T[positions]
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.head(self.ln_f(x))

    def answer_log_probs(self, prompts: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        """``log pi(. | prompt, answer_<t)`` at every answer position t: (N, H, V), with gradients.

        One teacher-forced pass over ``prompt + answer[:-1]``; the logits at
        position ``H - 1 + t`` predict answer token t.
        """
        h = prompts.shape[1]
        logits = self(torch.cat([prompts, answers[:, :-1]], 1))[:, h - 1 :]
        return torch.log_softmax(logits.float(), -1)

    @torch.no_grad()
    def sample(
        self, prompts: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample H answer tokens per prompt with a KV cache (one new position per step).

        Returns ``answers`` (N, H) and the full per-position log-probabilities
        (N, H, V) under which they were drawn (the rollout snapshot).
        """
        caches = [{} for _ in self.blocks]
        logits = self(prompts, caches)[:, -1]
        answers, log_probs = [], []
        for t in range(prompts.shape[1]):
            log_p = torch.log_softmax(logits.float(), -1)
            token = torch.multinomial(log_p.exp(), 1, generator=generator)
            answers.append(token[:, 0])
            log_probs.append(log_p)
            if t + 1 < prompts.shape[1]:
                logits = self(token, caches)[:, -1]
        return torch.stack(answers, 1), torch.stack(log_probs, 1)


def muon_parameters(model: TinyTransformer) -> list[nn.Parameter]:
    """The 2-D tensors Muon optimises: embedding tables, FFN matrices, output head."""
    mats = [model.token_table, model.position_table, model.head.weight]
    for block in model.blocks:
        mats += [block.up.weight, block.down.weight]
    return mats


def make_optimizers(model: TinyTransformer, lr: float = 1e-3) -> list[torch.optim.Optimizer]:
    """Muon (Nesterov momentum 0.95, 5 Newton-Schulz steps, no weight decay) + Adam on the rest."""
    muon = muon_parameters(model)
    ids = {id(p) for p in muon}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [
        torch.optim.Muon(muon, lr=lr, weight_decay=0.0, momentum=0.95, nesterov=True, ns_steps=5),
        torch.optim.Adam(rest, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
    ]
