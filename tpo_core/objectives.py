"""The math of Target Policy Optimization and its baselines.

Conventions shared by every function here:

* A *group* is the last dimension of a tensor: the K candidates sampled for
  one context. Any leading dimensions are a batch of groups.
* ``mask`` (bool, same shape) marks real candidates, so groups of unequal size
  can be padded. Padded entries never enter a mean, a standard deviation or a
  softmax.
* Losses are minimised. Advantages, gates and targets carry no gradient.
* Softmaxes are computed in float32 (float64 stays float64), whatever the
  input precision.

Per-sample losses (``pg_loss``, ``dg_loss``, ``ppo_loss``,
``grpo_loss``) take one log-probability per sample, or one per token, and
average over the unmasked entries.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields

import torch

ZERO_STD = 1e-6
"""A group whose score standard deviation is below this counts as zero-variance."""

ETA_MIN = 1e-6
"""The smallest temperature accepted. Below it ``u / eta`` (|u| <= sqrt(K)) is so far beyond
the log-probs that the target is already the best candidates' one-hot in float32, and near
1e-38 it overflows to NaN."""

LARGE = 2.0**60
"""Scores beyond this size are rescaled (by a power of two, exactly) before squaring."""


# --------------------------------------------------------------------------
# Input checks: every public function says clearly what was wrong.
# --------------------------------------------------------------------------


def _check_tensor(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype} "
            f"(convert with {name}.float())"
        )
    return x


def _check_group(name: str, x: torch.Tensor) -> None:
    if x.dim() == 0:
        raise ValueError(f"{name} must have a group dimension (last axis), got a scalar")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has an empty group: the last dimension (K candidates) is 0")


def _check_same_shape(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if x.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but {ref_name} has shape {tuple(ref.shape)}; "
            "they must match"
        )


def _check_mask(mask, ref_name: str, ref: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError("mask must be a bool torch.Tensor marking the real candidates")
    _check_same_shape("mask", mask, ref_name, ref)
    if ref.dim() > 0 and ref.shape[-1] > 0 and not mask.any(-1).all():
        raise ValueError("mask leaves a group with every candidate masked out")
    return mask


def _check_finite(name: str, x: torch.Tensor, mask: torch.Tensor | None) -> None:
    bad = ~torch.isfinite(x)
    if mask is not None:
        bad = bad & mask
    if bad.any():
        kind = "NaN" if torch.isnan(x[bad]).any() else "infinite"
        raise ValueError(f"{name} contains {kind} values; scores and log-probs must be finite")


def check_eta(eta) -> float:
    """``eta`` as a float, or an error saying why it cannot be a temperature (> 0, finite)."""
    try:
        eta = float(eta)
    except (TypeError, ValueError):
        raise TypeError(f"eta must be a positive number, got {eta!r}") from None
    if not math.isfinite(eta) or eta < ETA_MIN:
        raise ValueError(f"eta must be finite and at least {ETA_MIN:g}, got {eta}")
    return eta


def setting(default=MISSING, help: str = "", **cli):
    """A config field whose ``help`` (and argparse ``choices``) the command line reads; without
    a ``default`` the field, and its option, are required."""
    return field(default=default, metadata=dict(help=help, **cli))


def check_types(config) -> None:
    """Raise TypeError naming the first field of the dataclass ``config`` whose value is not
    of its declared type (``bool``, ``int``, ``float``, ``str``, or None where optional): an
    ``int`` is a float, but a ``bool`` is no number and ``2.5`` no count."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if value is None and type(None) in allowed:
            continue
        kinds = {float: (int, float), int: (int,), bool: (bool,), str: (str,)}
        ok = any(
            isinstance(value, kinds.get(kind, (kind,)))
            and (kind is bool or not isinstance(value, bool))
            for kind in allowed
            if kind is not type(None)
        )
        if not ok:
            names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
            raise TypeError(f"{f.name} must be {names}, got {value!r}")


def _in_range(x: torch.Tensor) -> torch.Tensor:
    """``x`` scaled by a power of two (exact) if its entries are so large that their squares
    would overflow: z-scores do not change, and a standard deviation stays finite."""
    top = x.abs().amax() if x.numel() else x.new_zeros(())
    if top <= LARGE:
        return x
    return x * 2.0 ** -int(torch.frexp(top).exponent)


def _float32_or_wider(x: torch.Tensor) -> torch.Tensor:
    """Half-precision inputs are upcast so softmaxes and sums run in float32."""
    return x.float() if torch.finfo(x.dtype).bits < 32 else x


def masked_mean(terms: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``sum(terms * mask) / sum(mask)``: the mean over real entries (all of them if no mask)."""
    if mask is None:
        return terms.mean()
    return terms.masked_fill(~mask, 0.0).sum() / mask.sum()


# --------------------------------------------------------------------------
# Scores -> standardised scores -> target
# --------------------------------------------------------------------------


def standardize_scores(
    scores: torch.Tensor, dim: int = -1, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Within-group z-scores ``u_i = (s_i - mean(s)) / std(s)``.

    Uses the population standard deviation. A group whose spread is
    (numerically) zero, ``std < 1e-6``, maps to all zeros: equal scores carry
    no preference. Masked-out entries are ignored and get ``u = 0``.

    Why: ``(1, 0, -1)`` and ``(100, 0, -100)`` rank candidates the same, and
    z-scores make both tilt the policy by the same amount.
    """
    _check_tensor("scores", scores)
    if scores.dim() == 0:
        raise ValueError("scores must have a group dimension, got a scalar")
    if scores.shape[dim] == 0:
        raise ValueError(f"scores has an empty group: dimension {dim} has size 0")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask must be a bool torch.Tensor marking the real candidates")
        _check_same_shape("mask", mask, "scores", scores)
        if not mask.any(dim).all():
            raise ValueError("mask leaves a group with every candidate masked out")
    _check_finite("scores", scores, mask)
    s = _float32_or_wider(scores)
    s = _in_range(s if mask is None else s.masked_fill(~mask, 0.0))
    if mask is None:
        mean = s.mean(dim, keepdim=True)
        std = s.std(dim, keepdim=True, correction=0)
        centred = s - mean
    else:
        n = mask.sum(dim, keepdim=True)
        mean = s.sum(dim, keepdim=True) / n
        centred = (s - mean).masked_fill(~mask, 0.0)
        std = (centred.square().sum(dim, keepdim=True) / n).sqrt()
    flat = std < ZERO_STD
    return torch.where(flat, torch.zeros_like(centred), centred / std.clamp_min(ZERO_STD))


def _group_log_softmax(log_probs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``log softmax`` over the candidates of each group; padded entries get -inf."""
    x = _float32_or_wider(log_probs)
    if mask is not None:
        x = x.masked_fill(~mask, -math.inf)
    return torch.log_softmax(x, dim=-1)


def _check_old_log_probs(old_log_probs: torch.Tensor, mask: torch.Tensor | None) -> None:
    real = torch.ones_like(old_log_probs, dtype=torch.bool) if mask is None else mask
    if torch.isnan(old_log_probs[real]).any() or (old_log_probs[real] == math.inf).any():
        raise ValueError("old_log_probs contains NaN or +inf values")
    alive = torch.isfinite(old_log_probs) & real
    if not alive.any(-1).all():
        raise ValueError(
            "old_log_probs is -inf for every candidate of a group: the rollout policy "
            "gives the whole group zero probability"
        )


def tpo_target(
    old_log_probs: torch.Tensor,
    scores: torch.Tensor,
    eta: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """TPO's target over each group: exponential tilting of the old group policy.

    ``q_i = p_old_i exp(u_i / eta) / sum_j p_old_j exp(u_j / eta)``, i.e.
    ``q = softmax(log_softmax(old_log_probs) + standardize(scores) / eta)``.

    ``q`` is the unique maximiser over the simplex of
    ``sum_i r_i u_i - eta KL(r || p_old)``: improve the expected score, but do
    not move far from where the rollouts came from. ``eta -> inf`` gives
    ``q -> p_old``; ``eta -> 0`` puts all mass on the best candidates.

    ``old_log_probs`` are the candidates' (sequence) log-likelihoods under the
    rollout policy and need not be normalised over the group. Masked-out
    candidates get ``q = 0``. The result is detached: the target is frozen.
    """
    _check_tensor("old_log_probs", old_log_probs)
    _check_tensor("scores", scores)
    _check_group("old_log_probs", old_log_probs)
    _check_same_shape("scores", scores, "old_log_probs", old_log_probs)
    mask = _check_mask(mask, "old_log_probs", old_log_probs)
    eta = check_eta(eta)
    _check_old_log_probs(old_log_probs, mask)
    u = standardize_scores(scores, mask=mask)
    logits = _group_log_softmax(old_log_probs.detach(), mask) + u / eta
    return torch.softmax(logits, dim=-1).detach()


def tpo_target_no_anchor(
    scores: torch.Tensor, eta: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Ablation: the target without the old policy, ``q_i ∝ exp(u_i / eta)``.

    Dropping ``p_old`` means the target ignores where the policy stands: a
    flat-score group pulls the policy towards uniform. The paper finds this
    harmful.
    """
    _check_tensor("scores", scores)
    _check_group("scores", scores)
    mask = _check_mask(mask, "scores", scores)
    eta = check_eta(eta)
    u = standardize_scores(scores, mask=mask)
    if mask is not None:
        u = u.masked_fill(~mask, -math.inf)
    return torch.softmax(u / eta, dim=-1).detach()


def tpo_loss(
    log_probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy to the frozen target, averaged over groups.

    ``L = -(1/G) sum_groups sum_i q_i log p_i`` with ``p = softmax(log_probs)``
    over the candidates. Its gradient with respect to ``log_probs`` is exactly
    ``(p - q) / G``: it vanishes once the policy matches the target, so extra
    epochs on the same batch cannot overshoot.
    """
    _check_tensor("log_probs", log_probs)
    _check_tensor("target", target)
    _check_group("log_probs", log_probs)
    _check_same_shape("target", target, "log_probs", log_probs)
    mask = _check_mask(mask, "log_probs", log_probs)
    _check_finite("log_probs", log_probs, mask)
    _check_finite("target", target, mask)
    if (target < 0).any():
        raise ValueError("target has negative entries; it must be a distribution per group")
    total = (target if mask is None else target.masked_fill(~mask, 0.0)).sum(-1)
    tolerance = max(1e-4, torch.finfo(target.dtype).eps * target.shape[-1])
    if not torch.allclose(total, torch.ones_like(total), atol=tolerance):
        worst = (total - 1).abs().max().item()
        raise ValueError(f"target must sum to 1 over each group; a group is off by {worst:.3g}")
    log_p = _group_log_softmax(log_probs, mask)
    q = _float32_or_wider(target.detach())
    terms = q * log_p
    if mask is not None:
        terms = terms.masked_fill(~mask, 0.0)
    return -terms.sum(-1).mean()


def group_pg_loss(
    log_probs: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Ablation: same candidates and same ``u`` as TPO, scalar-weighted REINFORCE.

    ``L = -(1/G) sum_groups sum_i u_i l_i``. Unlike TPO's ``p - q``, its
    gradient does not shrink as the policy improves, so repeated epochs keep
    pushing.
    """
    _check_tensor("log_probs", log_probs)
    _check_group("log_probs", log_probs)
    _check_same_shape("scores", scores, "log_probs", log_probs)
    mask = _check_mask(mask, "log_probs", log_probs)
    _check_finite("log_probs", log_probs, mask)
    u = standardize_scores(scores, mask=mask)
    terms = u * _float32_or_wider(log_probs)
    if mask is not None:
        terms = terms.masked_fill(~mask, 0.0)
    return -terms.sum(-1).mean()


# --------------------------------------------------------------------------
# Per-sample baselines
# --------------------------------------------------------------------------


def _check_per_sample(log_probs, advantages, mask, *others):
    _check_tensor("log_probs", log_probs)
    _check_tensor("advantages", advantages)
    if advantages.shape != log_probs.shape:
        try:
            shape = torch.broadcast_shapes(advantages.shape, log_probs.shape)
        except RuntimeError:
            shape = None
        if shape != log_probs.shape:
            raise ValueError(
                f"advantages of shape {tuple(advantages.shape)} do not broadcast to "
                f"log_probs of shape {tuple(log_probs.shape)}"
            )
    for name, x in others:
        _check_tensor(name, x)
        _check_same_shape(name, x, "log_probs", log_probs)
    if log_probs.numel() == 0:
        raise ValueError("log_probs is empty: there are no samples to average over")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask must be a bool torch.Tensor marking the real entries")
        _check_same_shape("mask", mask, "log_probs", log_probs)
        if not mask.any():
            raise ValueError("mask marks no entry as real: nothing to average over")
    _check_finite("log_probs", log_probs, mask)
    _check_finite("advantages", advantages.expand_as(log_probs), mask)
    for name, x in others:
        _check_finite(name, x, mask)
    return _float32_or_wider(log_probs), _float32_or_wider(advantages.detach())


def pg_loss(
    log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """REINFORCE / policy gradient: ``L = -A * log pi(a)``, ``A = r - b``.

    The step size is whatever the advantage says: with a large learning rate or
    several epochs on one batch it overshoots, with a small one it crawls.
    """
    l, a = _check_per_sample(log_probs, advantages, mask)
    return masked_mean(-a * l, mask)


def dg_loss(
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    eta: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Delightful Policy Gradient (Osband 2026): PG gated by "delight".

    ``w = sigmoid(A * surprisal / eta)`` with ``surprisal = -log pi(a)``;
    ``L = -(w * A) * log pi(a)``. Surprising successes count fully, surprising
    failures are damped. Run one epoch per batch: it diverges with more.
    """
    l, a = _check_per_sample(log_probs, advantages, mask)
    eta = check_eta(eta)
    gate = torch.sigmoid(a * (-l.detach()) / eta)
    return masked_mean(-(gate * a) * l, mask)


def _clipped_surrogate(l, l_old, a, clip_eps):
    ratio = torch.exp((l - l_old).clamp(-20.0, 20.0))  # a whole answer's log-ratio can be large
    return torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)


def clipped_fraction(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float = 0.2,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Share of samples (or tokens) whose clip is active: ``rho > 1 + eps`` with ``A > 0``, or
    ``rho < 1 - eps`` with ``A < 0``. There the clipped surrogate gives no gradient."""
    l, a = _check_per_sample(log_probs, advantages, mask, ("old_log_probs", old_log_probs))
    clip_eps = _check_clip(clip_eps)
    log_ratio = l.detach() - _float32_or_wider(old_log_probs.detach())
    active = ((a > 0) & (log_ratio > math.log1p(clip_eps))) | (
        (a < 0) & (log_ratio < math.log1p(-clip_eps))
    )
    return masked_mean(active.to(l.dtype), mask)


def _check_clip(clip_eps) -> float:
    clip_eps = float(clip_eps)
    if not (0 < clip_eps < 1):
        raise ValueError(f"clip_eps must lie in (0, 1), got {clip_eps}")
    return clip_eps


def ppo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float = 0.2,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """PPO's clipped surrogate, ``rho = exp(l - l_old)``:

    ``L = -min(rho A, clip(rho, 1 - eps, 1 + eps) A)``.

    Once the ratio leaves the trust region in the advantage's direction the
    gradient is cut to zero, a hard brake rather than a target.
    """
    l, a = _check_per_sample(log_probs, advantages, mask, ("old_log_probs", old_log_probs))
    clip_eps = _check_clip(clip_eps)
    l_old = _float32_or_wider(old_log_probs.detach())
    return masked_mean(-_clipped_surrogate(l, l_old, a, clip_eps), mask)


def kl_k3(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-sample k3 estimate of ``KL(pi || pi_ref)`` from samples of ``pi``:

    ``exp(l_ref - l) - (l_ref - l) - 1`` (non-negative, unbiased), with the
    log-ratio clamped to [-20, 20] for stability.
    """
    log_ratio = (ref_log_probs.detach() - log_probs).clamp(-20.0, 20.0)
    return torch.exp(log_ratio) - log_ratio - 1.0


def grpo_advantages(
    rewards: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """GRPO's group-relative advantages ``(r - mean) / (std + 1e-8)`` over the last dim.

    Population std, like TPO's standardisation, but with an additive epsilon
    instead of a zero-variance rule (flat groups still get exactly zero).
    """
    _check_tensor("rewards", rewards)
    _check_group("rewards", rewards)
    mask = _check_mask(mask, "rewards", rewards)
    _check_finite("rewards", rewards, mask)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    r = _float32_or_wider(rewards)
    r = _in_range(r if mask is None else r.masked_fill(~mask, 0.0))
    if mask is None:
        centred = r - r.mean(-1, keepdim=True)
        std = r.std(-1, keepdim=True, correction=0)
    else:
        n = mask.sum(-1, keepdim=True)
        mean = r.masked_fill(~mask, 0.0).sum(-1, keepdim=True) / n
        centred = (r - mean).masked_fill(~mask, 0.0)
        std = (centred.square().sum(-1, keepdim=True) / n).sqrt()
    return centred / (std + eps)


def grpo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    beta: float = 0.04,
    clip_eps: float = 0.2,
    ref_log_probs: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """GRPO: PPO's clipped surrogate on group z-scored advantages plus a KL penalty.

    ``L = -min(rho A, clip(rho) A) + beta * k3(l, l_ref)``, averaged over the
    unmasked samples (or tokens). ``advantages`` come from
    :func:`grpo_advantages` and broadcast against ``log_probs`` (one per
    sequence, repeated over its tokens). The KL anchor ``l_ref`` defaults to
    the rollout snapshot ``old_log_probs``. ``beta = 0`` is "GRPO (no KL)".
    """
    refs = () if ref_log_probs is None else (("ref_log_probs", ref_log_probs),)
    l, a = _check_per_sample(log_probs, advantages, mask, ("old_log_probs", old_log_probs), *refs)
    clip_eps = _check_clip(clip_eps)
    beta = float(beta)
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a non-negative number, got {beta}")
    l_old = _float32_or_wider(old_log_probs.detach())
    terms = -_clipped_surrogate(l, l_old, a, clip_eps)
    if beta > 0:
        ref = l_old if ref_log_probs is None else _float32_or_wider(ref_log_probs)
        terms = terms + beta * kl_k3(l, ref)
    return masked_mean(terms, mask)


# --------------------------------------------------------------------------
# Sequence-level group losses: one contract, one short function per method
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupBatch:
    """G groups of K sampled sequences of up to T tokens, as every sequence-level loss reads them.

    * ``new`` (G, K, T): log pi_theta of each sampled token, with gradients;
    * ``old`` (G, K, T): log pi_old of each sampled token under the rollout snapshot;
    * ``scores`` (G, K): one score per sequence;
    * ``mask`` (G, K, T) bool: the real tokens (None: all of them);
    * ``ref`` (G, K, T): log-probs of a KL reference (None: the snapshot ``old``).

    The token engine, the LLM loop and the TRL trainer all build one and hand it to a
    method's loss; it is checked once, here.
    """

    new: torch.Tensor
    old: torch.Tensor
    scores: torch.Tensor
    mask: torch.Tensor | None = None
    ref: torch.Tensor | None = None

    def __post_init__(self):
        for name in ("new", "old", "scores") + ("ref",) * (self.ref is not None):
            _check_tensor(name, getattr(self, name))
        if self.new.dim() != 3 or 0 in self.new.shape:
            raise ValueError(
                f"new must be (G, K, T) with no empty axis, got shape {tuple(self.new.shape)}"
            )
        _check_same_shape("old", self.old, "new", self.new)
        if self.ref is not None:
            _check_same_shape("ref", self.ref, "new", self.new)
        if self.scores.shape != self.new.shape[:2]:
            raise ValueError(
                f"scores must be (G, K) = {tuple(self.new.shape[:2])}, got "
                f"{tuple(self.scores.shape)}"
            )
        if self.mask is not None:
            if not isinstance(self.mask, torch.Tensor) or self.mask.dtype != torch.bool:
                raise TypeError("mask must be a bool torch.Tensor marking the real tokens")
            _check_same_shape("mask", self.mask, "new", self.new)
        for name in ("new", "old", "ref"):
            if getattr(self, name) is not None:
                _check_finite(name, getattr(self, name), self.mask)
        _check_finite("scores", self.scores, None)

    @property
    def groups(self) -> int:
        return self.new.shape[0]

    def sequence(self, which: str = "new") -> torch.Tensor:
        """(G, K): ``log pi(y|x)``, the sum of a sequence's token log-probs."""
        return sequence_log_probs(getattr(self, which), self.mask)

    def token_mean(self, terms: torch.Tensor) -> torch.Tensor:
        """The mean of per-token ``terms`` (G, K, T) over every real token of the batch."""
        return masked_mean(terms, self.mask)

    def subset(self, groups: torch.Tensor) -> GroupBatch:
        """The batch of the groups that ``groups`` (G,) bool selects."""

        def pick(x):
            return None if x is None else x[groups]

        return GroupBatch(
            *(pick(getattr(self, n)) for n in ("new", "old", "scores", "mask", "ref"))
        )


@dataclass
class SequenceLoss:
    """A sequence-level loss and what a training loop records of it."""

    loss: torch.Tensor
    clipped: torch.Tensor | None = None  # share of tokens (or sequences) whose clip is active


def _clip_share(log_ratio, a, clip_low, clip_high, mask):
    active = ((a > 0) & (log_ratio > math.log1p(clip_high))) | (
        (a < 0) & (log_ratio < math.log1p(-clip_low))
    )
    return masked_mean(active.to(log_ratio.dtype), mask).detach()


def _surrogate(log_ratio, a, clip_low, clip_high):
    """PPO's ``-min(rho A, clip(rho, 1 - low, 1 + high) A)`` from ``log rho``."""
    ratio = torch.exp(log_ratio.clamp(-20.0, 20.0))
    return -torch.minimum(ratio * a, ratio.clamp(1 - clip_low, 1 + clip_high) * a)


def _per_token_clipped(b: GroupBatch, a, clip_low, clip_high, beta):
    """The clipped surrogate per token with each sequence's ``a`` (G, K) on its tokens, plus
    ``beta`` times the per-token k3 KL to ``ref``: (terms (G, K, T), clipped share)."""
    new = _float32_or_wider(b.new)
    log_ratio = new - _float32_or_wider(b.old.detach())  # (G, K, T)
    a = a[..., None]  # (G, K, 1): each sequence's advantage on every token
    terms = _surrogate(log_ratio, a, clip_low, clip_high)
    if beta > 0:
        ref = b.old if b.ref is None else b.ref
        terms = terms + beta * kl_k3(new, _float32_or_wider(ref))
    return terms, _clip_share(
        log_ratio.detach(), a.expand_as(log_ratio), clip_low, clip_high, b.mask
    )


def tpo_sequences(b: GroupBatch, eta: float = 1.0) -> SequenceLoss:
    """TPO: ``q = softmax(log_softmax(L_old) + u / eta)`` over each group's K sequence
    log-probs ``L``, loss ``-sum_i q_i log softmax(L)_i``; a mean over groups."""
    return SequenceLoss(tpo_loss(b.sequence(), tpo_target(b.sequence("old"), b.scores, eta)))


def tpo_no_anchor_sequences(b: GroupBatch, eta: float = 1.0) -> SequenceLoss:
    """Ablation: TPO's loss with ``q = softmax(u / eta)``, without ``p_old``."""
    return SequenceLoss(tpo_loss(b.sequence(), tpo_target_no_anchor(b.scores, eta)))


def group_pg_sequences(b: GroupBatch) -> SequenceLoss:
    """Ablation: ``-sum_i u_i L_i`` with TPO's ``u``; a mean over groups."""
    return SequenceLoss(group_pg_loss(b.sequence(), b.scores))


def grpo_sequences(
    b: GroupBatch, clip_low: float = 0.2, clip_high: float = 0.2, beta: float = 0.04
) -> SequenceLoss:
    """GRPO on whole sequences (the paper's Table 3): ``A = u`` (``std + 1e-8``), the clipped
    surrogate on ``rho = exp(L - L_old)``, plus ``beta`` times the k3 KL of ``L`` to the
    reference's ``L``; a mean over the G*K sequences."""
    new, old = b.sequence(), b.sequence("old").detach()
    a = grpo_advantages(b.scores)  # (G, K)
    terms = _surrogate(new - old, a, clip_low, clip_high)
    if beta > 0:
        terms = terms + beta * kl_k3(new, old if b.ref is None else b.sequence("ref"))
    return SequenceLoss(
        terms.mean(), _clip_share((new - old).detach(), a, clip_low, clip_high, None)
    )


def grpo_masked_sequences(
    b: GroupBatch, clip_low: float = 0.2, clip_high: float = 0.2, beta: float = 0.04
) -> SequenceLoss:
    """Ablation: :func:`grpo_sequences` over the informative groups only (scores not all
    equal); zero, with a graph, when there are none."""
    keep = b.scores.amax(-1) > b.scores.amin(-1)  # (G,)
    if not keep.any():
        return SequenceLoss(b.new.sum() * 0.0)
    return grpo_sequences(b.subset(keep), clip_low, clip_high, beta)


def grpo_per_token_sequences(
    b: GroupBatch, clip_low: float = 0.2, clip_high: float = 0.2, beta: float = 0.04
) -> SequenceLoss:
    """GRPO as LLM trainers form it: a ratio per token ``rho_t``, the sequence's ``A = u`` on
    each of its tokens, plus ``beta`` times the per-token k3 KL; a mean over tokens."""
    terms, clipped = _per_token_clipped(b, grpo_advantages(b.scores), clip_low, clip_high, beta)
    return SequenceLoss(b.token_mean(terms), clipped)


def dr_grpo_sequences(
    b: GroupBatch,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    beta: float = 0.0,
    length: int | None = None,
) -> SequenceLoss:
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training", arXiv 2503.20783):
    GRPO without its two normalisations. ``A = r - mean(r)`` (no division by the std), the
    per-token clipped surrogate, and token sums divided by a constant, ``G K T_max`` with
    ``T_max = length`` the longest allowed completion (default: T), not by each answer's own
    length."""
    g, k, t = b.new.shape
    length = t if length is None else length
    if length < t:
        raise ValueError(f"length {length} is shorter than the sequences' {t} tokens")
    a = b.scores - b.scores.mean(-1, keepdim=True)  # (G, K)
    terms, clipped = _per_token_clipped(b, _float32_or_wider(a), clip_low, clip_high, beta)
    if b.mask is not None:
        terms = terms.masked_fill(~b.mask, 0.0)
    return SequenceLoss(terms.sum() / (g * k * length), clipped)


def dapo_sequences(
    b: GroupBatch, clip_low: float = 0.2, clip_high: float = 0.28, beta: float = 0.0
) -> SequenceLoss:
    """DAPO's loss (Yu et al. 2025, arXiv 2503.14476): ``A = u``, the per-token clipped
    surrogate with the asymmetric clip ``[1 - 0.2, 1 + 0.28]`` ("clip-higher"), a mean over
    every token of the batch ("token-level policy gradient loss"), no KL. DAPO's dynamic
    sampling and overlong shaping act on the batch and the reward, not the loss (see the
    glossary)."""
    terms, clipped = _per_token_clipped(b, grpo_advantages(b.scores), clip_low, clip_high, beta)
    return SequenceLoss(b.token_mean(terms), clipped)


def gspo_sequences(
    b: GroupBatch, clip_low: float = 3e-4, clip_high: float = 4e-4, beta: float = 0.0
) -> SequenceLoss:
    """GSPO (Zheng et al. 2025, arXiv 2507.18071): the sequence ratio
    ``s_i = exp(mean_t log rho_t)`` (length-normalised), ``A = u``, the clipped surrogate on
    ``s_i`` with GSPO's own range ``[1 - 3e-4, 1 + 4e-4]``; a mean over sequences, no KL."""
    new, old = _float32_or_wider(b.new), _float32_or_wider(b.old.detach())
    n = torch.ones_like(new).sum(-1) if b.mask is None else b.mask.sum(-1).to(new.dtype)
    log_s = sequence_log_probs(new - old, b.mask) / n  # (G, K): mean log-ratio per sequence
    a = grpo_advantages(b.scores)
    terms = _surrogate(log_s, a, clip_low, clip_high)
    if beta > 0:
        terms = terms + beta * kl_k3(b.sequence(), b.sequence("old" if b.ref is None else "ref"))
    return SequenceLoss(terms.mean(), _clip_share(log_s.detach(), a, clip_low, clip_high, None))


def cispo_sequences(b: GroupBatch, clip_high: float = 4.0, beta: float = 0.0) -> SequenceLoss:
    """CISPO (MiniMax-M1, 2025, arXiv 2506.13585): ``-sg(min(rho_t, 1 + eps_high)) A log pi_t``
    with ``A = u``: the importance weight is clipped and carries no gradient, so every token
    keeps its gradient; a mean over tokens. No lower bound, as MiniMax-M1 sets none; the upper
    bound ``1 + 4 = 5`` is ScaleRL's (Khatri et al. 2025, arXiv 2510.13786), TRL's default
    recommendation."""
    new = _float32_or_wider(b.new)
    log_ratio = (new - _float32_or_wider(b.old)).detach()  # (G, K, T)
    weight = torch.exp(log_ratio.clamp(max=math.log1p(clip_high)))  # min(rho, 1 + eps_high)
    a = grpo_advantages(b.scores)[..., None]  # (G, K, 1)
    terms = -weight * a * new
    if beta > 0:
        terms = terms + beta * kl_k3(new, _float32_or_wider(b.old if b.ref is None else b.ref))
    clipped = masked_mean((log_ratio > math.log1p(clip_high)).to(new.dtype), b.mask)
    return SequenceLoss(b.token_mean(terms), clipped)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """The leave-one-out advantage ``r_i - mean_{j != i} r_j = K / (K - 1) (r_i - mean r)``."""
    _check_tensor("rewards", rewards)
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError(f"a leave-one-out baseline needs K >= 2 candidates, got {k}")
    r = _float32_or_wider(rewards)
    return (r - (r.sum(-1, keepdim=True) - r) / (k - 1)).detach()


def rloo_sequences(b: GroupBatch) -> SequenceLoss:
    """RLOO (Ahmadian et al. 2024, "Back to basics", arXiv 2402.14740): REINFORCE on the
    sequence log-prob, ``-A_i L_i`` with the leave-one-out baseline; a mean over sequences."""
    return SequenceLoss(-(rloo_advantages(b.scores) * b.sequence()).mean())


SEQUENCE_LOSSES = {
    "tpo": tpo_sequences,
    "tpo_no_anchor": tpo_no_anchor_sequences,
    "group_pg": group_pg_sequences,
    "grpo": grpo_sequences,
    "grpo_no_kl": grpo_sequences,
    "grpo_masked": grpo_masked_sequences,
    "grpo_per_token": grpo_per_token_sequences,
    "dr_grpo": dr_grpo_sequences,
    "dapo": dapo_sequences,
    "gspo": gspo_sequences,
    "cispo": cispo_sequences,
    "rloo": rloo_sequences,
}
"""Each sequence-level method's loss on a :class:`GroupBatch`; its settings come from
:mod:`tpo_core.methods` (``grpo_no_kl`` is ``grpo`` at ``beta = 0``)."""


def snapshot_push(name: str, scores, length: int = 1, **settings) -> torch.Tensor:
    """How hard method ``name`` pushes up each answer of one group at the snapshot: minus its
    loss's gradient with respect to one token's log-prob of each answer (at the snapshot every
    token of an answer gets the same), every answer ``length`` tokens long and equally likely
    (every ratio 1, so no clip is active yet). ``scores`` (K,); ``settings`` go to the
    loss (its defaults are the catalogue's settings; at the snapshot a KL has no gradient)."""
    r = torch.as_tensor(scores, dtype=torch.float64).reshape(1, -1)  # (1, K)
    k = r.shape[-1]
    old = torch.full((1, k, length), -math.log(k) / length, dtype=torch.float64)  # (1, K, T)
    new = old.clone().requires_grad_(True)
    loss = SEQUENCE_LOSSES[name](GroupBatch(new, old, r), **settings)
    (grad,) = torch.autograd.grad(loss.loss, new)
    return -grad[0, :, 0]  # (K,)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def sequence_log_probs(token_log_probs: torch.Tensor, mask: torch.Tensor | None = None):
    """Sequence log-likelihoods ``log pi(y) = sum_t log pi(y_t | y_<t)`` over the last dim.

    ``mask`` (bool, same shape) marks real tokens; padding contributes nothing.
    """
    _check_tensor("token_log_probs", token_log_probs)
    if token_log_probs.dim() == 0:
        raise ValueError("token_log_probs must have a token dimension (last axis)")
    x = _float32_or_wider(token_log_probs)
    if mask is None:
        return x.sum(-1)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError("mask must be a bool torch.Tensor marking the real tokens")
    _check_same_shape("mask", mask, "token_log_probs", token_log_probs)
    return x.masked_fill(~mask, 0.0).sum(-1)


def group_policy(log_probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The policy restricted to a group, ``p_i = softmax(l)_i`` over the candidates."""
    _check_tensor("log_probs", log_probs)
    _check_group("log_probs", log_probs)
    mask = _check_mask(mask, "log_probs", log_probs)
    return _group_log_softmax(log_probs, mask).exp()


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_i p_i log(p_i / q_i)`` over the last dim (0 log 0 = 0)."""
    ratio = torch.where(p > 0, p * (p.log() - q.log()), torch.zeros_like(p))
    return ratio.sum(-1)


def _kl_of_logs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """:func:`kl_divergence` from log-probabilities: finite wherever ``log_q`` is."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy ``-sum_i p_i log p_i`` over the last dim, in nats."""
    return -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1)


@dataclass(frozen=True)
class Replay:
    """A replay: where one batch's groups went while a method refitted it, per epoch ``e = 0..E``.

    * ``kl_to_target``: ``KL(q || p_e)``, mean over informative groups (scores not all equal);
    * ``success_mass``: ``p_e``'s mass on the best-scored candidates, informative groups;
    * ``flat_drift``: ``KL(p_0 || p_e)``, mean over zero-variance groups, where TPO's
      target is ``p_0`` itself (NaN when there are none).

    ``target_success_mass`` is ``q``'s mass on the best-scored candidates.
    """

    method: str
    kl_to_target: list[float]
    success_mass: list[float]
    flat_drift: list[float]
    target_success_mass: float
    informative_groups: int
    flat_groups: int

    @classmethod
    def from_epochs(cls, method: str, old_log_probs, scores, log_probs_by_epoch, eta: float = 1.0):
        """The replay of one batch from the snapshot's candidate log-probs and scores (..., K)
        and the candidates' log-probs after each epoch (a list of (..., K), the snapshot's first).

        Each group's policy is ``p = softmax(l)``; its target is ``q = tpo_target(l_old, s, eta)``.
        """
        q = tpo_target(old_log_probs, scores, eta)  # (..., K)
        log_p_0 = _group_log_softmax(old_log_probs.to(q.dtype), None)
        informative = scores.to(q.dtype).std(-1, unbiased=False) >= ZERO_STD  # (...,)
        best = (scores == scores.amax(-1, keepdim=True)).to(q.dtype)  # (..., K)

        def mean(values):
            return float(values.mean()) if values.numel() else math.nan

        # in log space: a candidate whose probability underflows float32 keeps a finite log
        logs = [_group_log_softmax(lp.to(q.dtype), None) for lp in log_probs_by_epoch]
        return cls(
            method=method,
            kl_to_target=[mean(_kl_of_logs(q.log(), lg)[informative]) for lg in logs],
            success_mass=[mean((lg.exp() * best).sum(-1)[informative]) for lg in logs],
            flat_drift=[mean(_kl_of_logs(log_p_0, lg)[~informative]) for lg in logs],
            target_success_mass=mean((q * best).sum(-1)[informative]),
            informative_groups=int(informative.sum()),
            flat_groups=int((~informative).sum()),
        )


__all__ = [
    "SEQUENCE_LOSSES",
    "snapshot_push",
    "setting",
    "GroupBatch",
    "Replay",
    "SequenceLoss",
    "ZERO_STD",
    "check_eta",
    "clipped_fraction",
    "dg_loss",
    "entropy",
    "group_pg_loss",
    "group_policy",
    "grpo_advantages",
    "grpo_loss",
    "kl_divergence",
    "kl_k3",
    "masked_mean",
    "pg_loss",
    "rloo_advantages",
    "ppo_loss",
    "sequence_log_probs",
    "standardize_scores",
    "tpo_loss",
    "tpo_target",
    "tpo_target_no_anchor",
]
