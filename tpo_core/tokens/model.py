"""The tiny causal transformer of the token tasks (the paper's transformer; notebook 04).

Decoder-only and pre-norm: token + learned positional embeddings, ``layers``
blocks of (LayerNorm -> multi-head causal attention -> residual, LayerNorm ->
GELU MLP of width 4d -> residual), a final LayerNorm and a linear head.
Initialisation and the optimiser split follow the paper's public JAX code,
because PyTorch's defaults learn visibly slower here:

* every weight matrix ~ Normal(0, 1/fan_in), biases 0; LayerNorm 1 / 0;
  token embeddings std 1/sqrt(d), positional embeddings std 0.02;
* Muon on the 2-D tables and matrices (FFN, embeddings, head) with no weight
  decay; Adam on everything else (attention projections, LayerNorms, biases).

The embedding tables are stored transposed, ``(d, rows)``: :class:`Muon`
(like ``torch.optim.Muon``) scales its step by ``sqrt(max(1, shape[0] / shape[1]))``, and that shape
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
    # Where the paper's JAX code (flax defaults) differs: eps 1e-6, tanh GELU, truncated normal.
    layernorm_eps: float = 1e-5
    gelu: str = "exact"  # or "tanh"
    init: str = "normal"  # or "truncated_normal", for the weight matrices

    def __post_init__(self):
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        if self.gelu not in ("exact", "tanh"):
            raise ValueError(f"gelu must be 'exact' or 'tanh', got {self.gelu!r}")
        if self.init not in ("normal", "truncated_normal"):
            raise ValueError(f"init must be 'normal' or 'truncated_normal', got {self.init!r}")
        if not (self.layernorm_eps > 0 and math.isfinite(self.layernorm_eps)):
            raise ValueError(
                f"layernorm_eps must be a positive finite number, got {self.layernorm_eps}"
            )


# flax's lecun_normal: a normal truncated at 2 standard deviations, widened so that the
# variance stays 1 / fan_in (the std of a standard normal truncated to [-2, 2] is 0.8796).
TRUNCATED_STD = 0.87962566103423978


def _lecun_linear(fan_in: int, fan_out: int, init: str = "normal") -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    std = 1 / math.sqrt(fan_in)
    if init == "normal":
        nn.init.normal_(layer.weight, std=std)
    else:
        std /= TRUNCATED_STD
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(layer.bias)
    return layer


def explicit_attention(q, k, v, mask, causal: bool) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + mask) v``: what ``scaled_dot_product_attention`` computes,
    written out with operations that ``torch.func.vmap`` batches (replicas use it)."""
    scores = q @ k.mT / math.sqrt(q.shape[-1])  # (N, heads, T, S)
    if causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf)
    return scores.softmax(-1) @ v


class Block(nn.Module):
    explicit_attention = False  # True: explicit_attention instead of the fused kernel

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(d, eps=cfg.layernorm_eps)
        self.q, self.k, self.v, self.o = (_lecun_linear(d, d, cfg.init) for _ in range(4))
        self.ln2 = nn.LayerNorm(d, eps=cfg.layernorm_eps)
        self.up = _lecun_linear(d, cfg.ffn_mult * d, cfg.init)
        self.down = _lecun_linear(cfg.ffn_mult * d, d, cfg.init)
        self.gelu = "none" if cfg.gelu == "exact" else "tanh"  # F.gelu's ``approximate``

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        return x.view(n, t, self.heads, d // self.heads).transpose(1, 2)  # (N, heads, T, d/heads)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        h = self.ln1(x)  # (N, T, d)
        q, k, v = self._split(self.q(h)), self._split(self.k(h)), self._split(self.v(h))
        mask, causal = None, True
        if cache is not None:
            if "k" in cache:  # continuing: new tokens see every cached position, then causal
                past = cache["k"].shape[2]
                k = torch.cat([cache["k"], k], 2)  # (N, heads, past + T, d/heads)
                v = torch.cat([cache["v"], v], 2)
                new = q.shape[2]
                mask = (
                    torch.ones(new, past + new, dtype=torch.bool, device=x.device).tril(past)
                    if new > 1
                    else None
                )
                # (T, past + T): row t sees the cache and new tokens 0..t
                causal = False
            cache["k"], cache["v"] = k, v
        if self.explicit_attention:
            att = explicit_attention(q, k, v, mask, causal)
        else:
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        x = x + self.o(att.transpose(1, 2).reshape(x.shape))  # (N, T, d), att (N, heads, T, d/h)
        return x + self.down(F.gelu(self.up(self.ln2(x)), approximate=self.gelu))


class TinyTransformer(nn.Module):
    """Next-token logits over the vocabulary for prompt + answer sequences of length <= 2H."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.token_table = nn.Parameter(torch.randn(d, cfg.vocab) / math.sqrt(d))
        self.position_table = nn.Parameter(torch.randn(d, 2 * cfg.length) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(d, eps=cfg.layernorm_eps)
        self.head = _lecun_linear(d, cfg.vocab, cfg.init)

    def forward(self, tokens: torch.Tensor, caches: list[dict] | None = None) -> torch.Tensor:
        """Logits (N, T, V) for tokens (N, T); with ``caches`` (one dict per block), continue a
        sequence whose earlier positions were fed before."""
        start = 0 if caches is None or "k" not in caches[0] else caches[0]["k"].shape[2]
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = F.embedding(tokens, self.token_table.T) + F.embedding(positions, self.position_table.T)
        # x: (N, T, d); the tables are stored (d, rows), see make_optimizers
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.head(self.ln_f(x))

    def _prefill(
        self, prompts: torch.Tensor, copies: int = 1, prompt_index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[dict]]:
        """Run the prompts once and share the result between the answers that continue them.

        Answer row ``j`` continues prompt ``prompt_index[j]`` (default: ``copies``
        answers per prompt, rows ``i*copies .. i*copies + copies-1`` for prompt i).
        Returns the logits that predict answer token 0, (N_answers, V), and the
        per-block key/value caches with one row per answer. Prompt positions
        only attend to the prompt, so every answer of one prompt sees the same
        prompt states; computing them once halves the work of K answers per prompt.
        """
        caches = [{} for _ in self.blocks]
        first = self(prompts, caches)[:, -1]  # (N, V)
        if prompt_index is not None:
            for cache in caches:
                cache["k"], cache["v"] = cache["k"][prompt_index], cache["v"][prompt_index]
            first = first[prompt_index]
        elif copies > 1:
            for cache in caches:
                cache["k"] = cache["k"].repeat_interleave(copies, 0)
                cache["v"] = cache["v"].repeat_interleave(copies, 0)
            first = first.repeat_interleave(copies, 0)
        return first, caches

    def answer_log_probs(
        self, prompts: torch.Tensor, answers: torch.Tensor, prompt_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``log pi(. | prompt, answer_<t)`` at each answer position: (N_answers, H, V), with
        gradients.

        By default ``answers`` holds K answers per prompt, grouped by prompt (rows
        ``i*K .. i*K + K-1`` answer prompt i); ``prompt_index`` (N_answers,) says instead
        which prompt each answer row continues. Teacher-forced: one pass over the
        prompts, one over ``answer[:-1]``.
        """
        copies = answers.shape[0] // prompts.shape[0]
        first, caches = self._prefill(prompts, copies, prompt_index)
        logits = first[:, None]  # (N_answers, 1, V)
        if answers.shape[1] > 1:
            logits = torch.cat([logits, self(answers[:, :-1], caches)], 1)  # (N_answers, H, V)
        return torch.log_softmax(logits.float(), -1)

    @torch.no_grad()
    def sample(
        self, prompts: torch.Tensor, generator: torch.Generator, copies: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``copies`` answers of H tokens per prompt with a KV cache.

        Returns ``answers`` (N * copies, H), grouped by prompt, and the full
        per-position log-probabilities (N * copies, H, V) under which they
        were drawn (the rollout snapshot).
        """
        logits, caches = self._prefill(prompts, copies)
        answers, log_probs = [], []
        for t in range(prompts.shape[1]):
            log_p = torch.log_softmax(logits.float(), -1)  # (N*copies, V)
            token = torch.multinomial(log_p.exp(), 1, generator=generator)  # (N*copies, 1)
            answers.append(token[:, 0])
            log_probs.append(log_p)
            if t + 1 < prompts.shape[1]:
                logits = self(token, caches)[:, -1]
        return torch.stack(answers, 1), torch.stack(log_probs, 1)


def muon_parameter_names(model: TinyTransformer, qkv_bias: bool = False) -> list[str]:
    """The tensors Muon optimises: embedding tables, FFN matrices, output head, and with
    ``qkv_bias`` the query, key and value biases (matrices of heads x head_dim in the
    paper's code, where optax's Muon takes them)."""
    names = ["token_table", "position_table", "head.weight"]
    for i in range(len(model.blocks)):
        names += [f"blocks.{i}.up.weight", f"blocks.{i}.down.weight"]
        names += [f"blocks.{i}.{p}.bias" for p in "qkv"] if qkv_bias else []
    return names


NS_STEPS, NS_COEFFICIENTS, NS_EPS = 5, (3.4445, -4.7750, 2.0315), 1e-7
"""Muon's Newton-Schulz iteration: steps, quintic coefficients, and the norm's floor."""
NEWTON_SCHULZ_OPTIONS = ("ns_steps", "ns_coefficients", "eps", "ns_dtype")  # its arguments


class Muon(torch.optim.Optimizer):
    """Muon: Nesterov momentum, then the update's nearest semi-orthogonal matrix, for 2-D weights.

    Per step, for a weight ``W`` (out, in) with gradient ``G`` and momentum ``M``::

        M <- momentum * M + (1 - momentum) * G
        U <- (1 - momentum) * G + momentum * M          (Nesterov; else U = M)
        X <- U / max(||U||_F, eps), transposed if out > in
        5 x: X <- a X + (b A + c A A) X,  A = X X^T      (Newton-Schulz, in ns_dtype)
        W <- W - lr * sqrt(max(1, out / in)) * X

    It is ``torch.optim.Muon``'s update (no weight decay) with one choice made
    explicit: ``ns_dtype``, the precision of the Newton-Schulz iteration.
    torch runs it in bfloat16; the paper's JAX code (optax) in float32, which
    on a CPU is also several times faster. Tensors with more than two
    dimensions are a batch of matrices (the last two), each orthogonalised on
    its own. A parameter group with ``heads=h`` holds vectors of ``h`` heads
    (attention biases, (..., h * d_h)): each is treated as the (d_h, h) matrix
    whose scale is the paper's code's ``sqrt(max(1, d_h / h))``.
    """

    def __init__(
        self,
        params,
        lr=1e-3,
        momentum=0.95,
        nesterov=True,
        ns_steps=NS_STEPS,
        ns_coefficients=NS_COEFFICIENTS,
        eps=NS_EPS,
        ns_dtype=torch.float32,
        heads=None,
    ):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, heads=heads)
        defaults |= dict(ns_steps=ns_steps, ns_coefficients=ns_coefficients, eps=eps)
        defaults |= dict(ns_dtype=ns_dtype)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() < 2 and not group["heads"]:
                    raise ValueError(f"Muon takes matrices, got a tensor of shape {tuple(p.shape)}")

    @staticmethod
    def orthogonalise(update, steps, coefficients, eps, dtype) -> torch.Tensor:
        """Newton-Schulz: ``update`` (..., out, in) -> roughly ``U V^T`` of its SVD."""
        a, b, c = coefficients
        x = update.to(dtype)
        tall = update.shape[-2] > update.shape[-1]
        if tall:
            x = x.mT
        x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= 1
        fused = torch.addmm if x.dim() == 2 else torch.baddbmm  # beta * x + alpha * (y @ z)
        for _ in range(steps):
            gram = x @ x.mT  # (..., rows, rows), rows = min(out, in)
            x = fused(x, fused(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        return x.mT if tall else x

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                if group["heads"]:  # (..., h * d_h) -> (..., d_h, h)
                    update = update.unflatten(-1, (group["heads"], -1)).mT
                ortho = self.orthogonalise(update, *(group[k] for k in NEWTON_SCHULZ_OPTIONS))
                scale = math.sqrt(max(1.0, update.shape[-2] / update.shape[-1]))
                if group["heads"]:
                    ortho = ortho.mT.flatten(-2)
                p.add_(ortho.to(p.dtype), alpha=-group["lr"] * scale)
        return loss


class NesterovAdam(torch.optim.Optimizer):
    """Adam with Nesterov momentum, as optax's ``adam(nesterov=True)`` (the paper's code).

    With ``m``, ``v`` Adam's moments after step t and ``g`` the gradient::

        m_hat = b1 * m / (1 - b1^(t+1)) + (1 - b1) * g / (1 - b1^t)
        W <- W - lr * m_hat / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t, m, v, g = state["t"], state["m"], state["v"], p.grad
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
                p.addcdiv_(m_hat, (v / (1 - b2**t)).sqrt_().add_(group["eps"]), value=-group["lr"])
        return loss


def make_optimizers(
    model: TinyTransformer,
    lr: float = 1e-3,
    ns_dtype: torch.dtype = torch.float32,
    muon_qkv_bias: bool = False,
    adam_nesterov: bool = False,
    params: dict[str, torch.Tensor] | None = None,
) -> list[torch.optim.Optimizer]:
    """Muon (Nesterov momentum 0.95, 5 Newton-Schulz steps in ``ns_dtype``, no weight decay)
    on :func:`muon_parameter_names`, Adam (or :class:`NesterovAdam`) on the rest.

    ``params`` (name -> tensor) replaces the model's own parameters, e.g. by
    replicas' stacked ones; by default the model's are optimised.
    """
    params = dict(model.named_parameters()) if params is None else params
    matrices = muon_parameter_names(model)
    biases = [n for n in muon_parameter_names(model, muon_qkv_bias) if n not in matrices]
    groups = [dict(params=[params[n] for n in matrices])]
    if biases:
        groups.append(dict(params=[params[n] for n in biases], heads=model.cfg.heads))
    rest = [p for n, p in params.items() if n not in matrices + biases]
    adam = (
        NesterovAdam(rest, lr=lr, betas=(0.9, 0.999), eps=1e-8)
        if adam_nesterov
        else torch.optim.Adam(rest, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    )
    return [Muon(groups, lr=lr, momentum=0.95, nesterov=True, ns_steps=5, ns_dtype=ns_dtype), adam]


def muon_spectrum(gradient, scales=(1.0, 1e-4)) -> dict[str, list[float]]:
    """Singular values (largest first) of ``scale * gradient`` and of Muon's Newton-Schulz
    orthogonalisation of it, for each scale: ``{"gradient × s": [...], "Muon step × s": [...]}``.

    Whatever the gradient's size, the step's singular values all sit near 1.
    """
    g = torch.as_tensor(gradient, dtype=torch.float32)
    if g.dim() != 2:
        raise ValueError(f"gradient must be a matrix, got shape {tuple(g.shape)}")
    spectrum = {}
    for scale in scales:
        step = Muon.orthogonalise(scale * g, NS_STEPS, NS_COEFFICIENTS, NS_EPS, torch.float32)
        spectrum[f"gradient × {scale:g}"] = torch.linalg.svdvals(scale * g).tolist()
        spectrum[f"Muon step × {scale:g}"] = torch.linalg.svdvals(step).tolist()
    return spectrum
