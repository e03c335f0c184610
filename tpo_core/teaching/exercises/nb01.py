"""Exercises of notebook 01 (one scored group): each graded from the library."""

from __future__ import annotations

import torch

from tpo_core.group import descend_group, group_view, random_group
from tpo_core.objectives import tpo_target
from tpo_core.teaching.exercises.engine import (
    as_choice,
    as_vector,
    call_answer,
    close,
    diagnose,
    exercise,
    loss_and_grad,
    multiple_choice,
    plain_zscores,
    sample_groups,
)

PREDICT_Q = dict(p_old=[0.5, 0.25, 0.25], scores=[2.0, 1.0, 0.0], eta=1.0)


@exercise(
    "01-predict-q",
    "p_old = (0.5, 0.25, 0.25), scores = (2, 1, 0), eta = 1. Compute q by hand "
    "(two decimals are enough) and pass it as a list of three numbers.",
    "z-scores of (2, 1, 0): mean 1, population std sqrt(2/3), so u = (1.22, 0, -1.22). "
    "q ∝ p_old·exp(u) = (0.5·3.40, 0.25·1, 0.25·0.29) = (1.70, 0.25, 0.07); "
    "normalised q ≈ (0.84, 0.12, 0.04).",
)
def _grade_predict_q(answer):
    q = group_view(PREDICT_Q["p_old"], PREDICT_Q["scores"], PREDICT_Q["eta"]).q
    a = as_vector(answer, 3)
    if (a - q).abs().max() <= 0.015:
        return True, f"q = ({', '.join(f'{v:.3f}' for v in q)}): the old policy, tilted by exp(u)."
    raw = group_view(PREDICT_Q["p_old"], PREDICT_Q["scores"], standardize=False).q
    if (a - raw).abs().max() <= 0.015:
        return False, "that tilts by the raw scores; standardise them first (population std)."
    no_anchor = torch.softmax(group_view(PREDICT_Q["p_old"], PREDICT_Q["scores"]).u, -1)
    if (a - no_anchor).abs().max() <= 0.015:
        return False, "that is softmax(u) alone; multiply by p_old before normalising."
    if abs(float(a.sum()) - 1) > 0.02:
        return False, f"your numbers sum to {float(a.sum()):.3f}; q is a distribution."
    return False, "compute u = z-scores of the scores, then q_i ∝ p_old_i · exp(u_i)."


HALF_MASS = dict(p_old=[0.25, 0.25, 0.25, 0.25], scores=[3.0, 1.0, 0.0, 0.0])


@exercise(
    "01-half-mass-eta",
    "p_old uniform over 4 candidates, scores (3, 1, 0, 0). Find eta that puts half "
    "of the target's mass on the best candidate (within ±0.01 of 0.5).",
    "u = (1.633, 0, -0.816, -0.816); with uniform p_old, q_best = e^(1.633/eta) / "
    "(e^(1.633/eta) + 1 + 2 e^(-0.816/eta)). Setting it to 1/2 and bisecting on eta "
    "gives eta ≈ 1.95.",
)
def _grade_half_mass(answer):
    eta = float(answer)
    if not eta > 0:
        return False, "eta must be positive."
    q_best = float(group_view(HALF_MASS["p_old"], HALF_MASS["scores"], eta).q[0])
    if abs(q_best - 0.5) <= 0.01:
        return True, f"at eta = {eta:.3g} the best candidate gets {q_best:.3f}."
    direction = "raise" if q_best > 0.5 else "lower"
    return False, f"at eta = {eta:.3g} the best candidate gets {q_best:.3f}; {direction} eta."


OVERSHOOT = dict(k=5, seed=0, lr=1.0, epochs=50)


@exercise(
    "01-pg-overshoot",
    "On the OvershootExplorer's default group (k=5, seed=0), run 50 epochs at lr = 1. "
    "Predict before you look: does PG end 'above' or 'below' the target's p(best)?",
    "PG's gradient is -A/K at every step, so the best candidate's logit grows linearly "
    "forever: after 50 epochs it has passed the target and collapsed onto the best "
    "candidate, 'above'. TPO's gradient p - q vanishes at the target.",
)
def _grade_pg_overshoot(answer):
    a = as_choice(answer, ("above", "below"))
    p_old, scores = random_group(OVERSHOOT["k"], OVERSHOOT["seed"])
    traj = descend_group(p_old, scores, "pg", OVERSHOOT["lr"], OVERSHOOT["epochs"])
    view = group_view(p_old, scores)
    best = int(view.u.argmax())
    end, target = float(traj.probs[-1, best]), float(view.q[best])
    truth = "above" if end > target else "below"
    why = f"PG ends at p(best) = {end:.3f}, the target is {target:.3f}"
    if a == truth:
        return True, why + ": its gradient -A/K never shrinks, so it keeps going."
    return False, why + ". What happens to PG's gradient as p(best) grows?"


@exercise(
    "01-tiny-variance",
    "Scores (0.001, 0, 0, 0). What is the first candidate's standardised score u_1?",
    "The mean is 0.00025 and the population std 0.000433, so u_1 = 0.00075 / 0.000433 "
    "= sqrt(3) ≈ 1.732, exactly what (1, 0, 0, 0) gives: z-scores ignore scale, so a "
    "negligible difference becomes a full-strength preference (the difficulty bias known "
    "for GRPO).",
)
def _grade_tiny_variance(answer):
    u1 = float(group_view([0.25] * 4, [0.001, 0.0, 0.0, 0.0]).u[0])
    if abs(float(answer) - u1) <= 0.01:
        return True, f"u_1 = {u1:.3f}, the same as for scores (1, 0, 0, 0): scale is gone."
    return False, "z-scores divide by the spread, however small it is; try it for (1, 0, 0, 0)."


@exercise(
    "01-my-tpo-target",
    "Write my_tpo_target(old_log_probs, scores, eta) for a batch of groups, both (B, K): "
    "z-score the scores within each group (population std; a group of equal scores gets u = 0) "
    "and return q = softmax(log_softmax(old_log_probs) + u / eta) over the last dimension.",
    "def my_tpo_target(old_log_probs, scores, eta=1.0):\n"
    "    centred = scores - scores.mean(-1, keepdim=True)\n"
    "    std = scores.std(-1, unbiased=False, keepdim=True)\n"
    "    u = torch.where(std > 1e-6, centred / std.clamp_min(1e-6), torch.zeros_like(centred))\n"
    "    return torch.softmax(torch.log_softmax(old_log_probs, -1) + u / eta, -1)",
    kind="implement it",
)
def _grade_my_tpo_target(fn):
    for seed, eta in ((0, 1.0), (1, 0.5), (2, 3.0)):
        old, scores = sample_groups(seed)
        got = call_answer(fn, old, scores, eta)
        want = tpo_target(old, scores, eta)
        if close(got, want):
            continue
        anchor = torch.log_softmax(old, -1)
        mistakes = [
            (
                "you dropped the anchor: q must start from p_old (add log_softmax(old_log_probs))",
                torch.softmax(plain_zscores(scores) / eta, -1),
            ),
            (
                "you tilted by the raw scores: z-score them within each group first",
                torch.softmax(anchor + scores / eta, -1),
            ),
            (
                "you used the sample (Bessel-corrected) std; TPO's z-scores use the population std",
                torch.softmax(anchor + plain_zscores(scores, unbiased=True) / eta, -1),
            ),
            (
                "you multiplied by eta; the tilt is u / eta",
                torch.softmax(anchor + plain_zscores(scores) * eta, -1),
            ),
            (
                "q is not normalised: take the softmax over each group's K candidates",
                old.exp() * torch.exp(plain_zscores(scores) / eta),
            ),
        ]
        if torch.isnan(got).any():
            return False, "NaN in q: a group of equal scores has std 0; give it u = 0"
        return False, diagnose(got, mistakes, f"q differs from tpo_target at eta = {eta}")
    return (
        True,
        "equal to tpo_target on random groups, zero-variance groups and three temperatures.",
    )


@exercise(
    "01-my-tpo-loss",
    "Write my_tpo_loss(logits, q) for a batch of groups (B, K): the cross-entropy "
    "-sum_k q_k log softmax(logits)_k, averaged over the groups. Its gradient must be (p - q) / B.",
    "def my_tpo_loss(logits, q):\n    return -(q * torch.log_softmax(logits, -1)).sum(-1).mean()",
    kind="implement it",
)
def _grade_my_tpo_loss(fn):
    from tpo_core.objectives import tpo_loss

    old, scores = sample_groups(3)
    q = tpo_target(old, scores)
    logits = old + torch.randn(
        old.shape, generator=torch.Generator().manual_seed(4), dtype=old.dtype
    )
    loss, grad = loss_and_grad(fn, logits, q)
    want = tpo_loss(logits, q)
    closed = (torch.softmax(logits, -1) - q) / logits.shape[0]
    if torch.allclose(loss, want, atol=1e-6) and torch.allclose(grad, closed, atol=1e-6):
        return True, "equal to tpo_loss, and autograd gives the gradient (p - q) / B."
    b = logits.shape[0]
    mistakes = [
        ("the sign is flipped: minimise the cross-entropy, -sum q log p", -want),
        ("you summed over groups; average them (the step must not grow with B)", want * b),
        (
            "you used softmax where log_softmax belongs",
            -(q * torch.softmax(logits, -1)).sum(-1).mean(),
        ),
        (
            "you averaged over the K candidates too; sum over candidates, average over groups",
            want / logits.shape[1],
        ),
    ]
    return False, diagnose(loss, mistakes, "the loss differs from tpo_loss on random groups")


multiple_choice(
    "01-double-epochs",
    "With free logits, PG at lr x E = K / eta lands exactly on q. You double the epochs. PG ends",
    {
        "a": ("on q again", "that would be TPO; PG's gradient -A/K never shrinks."),
        "b": (
            "on the target of temperature eta / 2, past q",
            "right: its endpoint is the target "
            "at temperature K / (lr E), so doubling E halves it and PG overshoots.",
        ),
        "c": ("back at p_old", "PG keeps moving in the same direction every step."),
    },
    "b",
)


multiple_choice(
    "01-panel-lr",
    "In the panel of 20 groups, why does each group's best PG learning rate differ?",
    {
        "a": ("the groups have different K", "every group has the same K."),
        "b": (
            "shared features Phi_g change how a parameter step moves each group's logits",
            "right: PG's endpoint is log p_old + (lr E / K) Phi Phi^T A, which depends on "
            "the group; TPO's fixed point p = q does not (for features of rank K, as the "
            "panel's are).",
        ),
        "c": (
            "their scores have different scales",
            "z-scoring gives every group the same scale: "
            "with free logits the best setting is the same for all.",
        ),
    },
    "b",
)
