"""What one bit of feedback asks of a classifier's logits (notebook 03, section 2).

For one example with policy ``pi`` over K classes and label ``y``, sampling class
``a`` gives each method's ascent direction ``g^(a)`` on the logits: minus the
gradient of its loss (:func:`~tpo_core.bandits.neural.neural_bandit_loss`). Its
expectation over ``a ~ pi`` is what the method asks for on average.

* A failed sample ``a`` moves PG, DG, GRPO and TPO along ``-(e_a - pi)``, i.e. it lowers
  ``log pi(a)``, with a weight ``w``. PG's and GRPO's ``w`` is the same for every wrong
  class; DG's gate and TPO's target make ``w`` grow with ``pi(a)``: they condition on
  *which* wrong class was sampled.
* PG's expected update ``p_y (e_y - pi)`` is the one-vs-rest update, the gradient of
  ``p_y`` itself: per unit of length no direction raises ``p_y`` faster, so a fair
  comparison normalises the step. Under one normalised step over many examples, the
  methods differ in how they share it (:func:`step_shares`), as in notebook 02.
"""

from __future__ import annotations

import torch

from tpo_core.bandits.neural import NEURAL_BANDIT_METHODS, neural_bandit_loss
from tpo_core.methods import implemented
from tpo_core.objectives import pg_loss

FAILED_SAMPLE_METHODS = implemented("failed_sample")  # tpo_core.methods


def _check_method(method: str, known: tuple[str, ...]) -> None:
    if method not in known:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(known)}")


def label_mass(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``p_y = pi(label)`` per example (n,)."""
    return torch.softmax(logits.double(), -1).gather(-1, labels[:, None])[:, 0]


def concentration(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Largest wrong-class mass over all wrong mass, per example (n,): 1/(K-1) to 1."""
    probs = torch.softmax(logits.double(), -1)
    wrong = probs.scatter(-1, labels[:, None], 0.0)  # (n, K)
    return wrong.max(-1).values / wrong.sum(-1).clamp_min(1e-300)


def sampled_class_updates(method: str, logits: torch.Tensor, labels: torch.Tensor):
    """``g[i, a]``: the ascent direction on example i's logits when class ``a`` is sampled.

    Returns (n, K sampled classes, K logits), minus the autograd gradient of the method's
    loss on that one sample. GRPO's minibatch mean and standard deviation of the reward
    are taken at their expected values over these examples (a large minibatch).
    """
    _check_method(method, NEURAL_BANDIT_METHODS)
    n, k = logits.shape
    z = logits.detach().double()[:, None, :].expand(n, k, k).reshape(n * k, k)
    z = z.clone().requires_grad_(True)  # (n K, K): example i with class a sampled
    actions = torch.arange(k).repeat(n)  # (n K,)
    reward = (actions == labels.repeat_interleave(k)).double()  # (n K,)
    if method == "grpo":
        mean = label_mass(logits, labels).mean()
        advantage = (reward - mean) / torch.sqrt(mean * (1 - mean))
        log_pi_a = torch.log_softmax(z, -1).gather(-1, actions[:, None])[:, 0]
        loss = pg_loss(log_pi_a, advantage)
    else:
        loss = neural_bandit_loss(method, z, actions, reward)
    (grad,) = torch.autograd.grad(loss * n * k, z)  # undo the mean over the n K samples
    return -grad.view(n, k, k)


def expected_updates(method: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``E_{a ~ pi}[g^(a)] = sum_a pi_a g^(a)``: what the method asks for on average (n, K)."""
    probs = torch.softmax(logits.detach().double(), -1)  # (n, K)
    g = sampled_class_updates(method, logits, labels)  # (n, K, K)
    return (probs[:, :, None] * g).sum(1)


def failed_sample_weight(method: str, logits: torch.Tensor, labels: torch.Tensor):
    """``w[i, a]`` with ``g^(a) = -w (e_a - pi)`` for every wrong class ``a`` (n, K); NaN at y.

    PG: ``b = sum_c pi_c^2`` for every wrong class. GRPO: ``mean / std`` of the reward,
    the same for every wrong class. DG: ``b sigmoid(-b surprisal(a))``, larger for a likely
    ``a``. TPO: ``pi_a (1 - kappa) / (1 - pi_a (1 - kappa))``, ``kappa = exp(-K / sqrt(K - 1))``.
    """
    _check_method(method, FAILED_SAMPLE_METHODS)
    probs = torch.softmax(logits.detach().double(), -1)  # (n, K)
    eye = torch.eye(logits.shape[-1], dtype=torch.float64)
    direction = eye - probs[:, None, :]  # (n, K, K): e_a - pi for each sampled a
    g = sampled_class_updates(method, logits, labels)  # (n, K, K)
    w = -(g * direction).sum(-1) / (direction**2).sum(-1)  # (n, K)
    return w.scatter(-1, labels[:, None], torch.nan)


def step_shares(updates: torch.Tensor) -> torch.Tensor:
    """Share of one normalised step's squared length that each example gets (n,); sums to 1."""
    sq = updates.pow(2).sum(-1)  # (n,)
    return sq / sq.sum()


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of two updates, per example (n,)."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-300)


def confusion_examples(p_label: float, concentrations, k: int = 10):
    """Examples with ``pi(label) = p_label`` and wrong mass of a given concentration.

    Class 0 is the label; class 1 gets ``c (1 - p_label)`` and classes 2..K-1 share the
    rest evenly, so ``c = 1/(K-1)`` spreads the mistakes and ``c -> 1`` puts them all on
    class 1. Returns ``(logits (n, K), labels (n,))``, one example per concentration.
    """
    c = torch.as_tensor(concentrations, dtype=torch.float64)
    if not 0 < p_label < 1:
        raise ValueError(f"p_label must lie strictly between 0 and 1, got {p_label}")
    if ((c < 1 / (k - 1) - 1e-12) | (c >= 1)).any():
        raise ValueError(f"concentrations must lie in [1/(K-1), 1) = [{1 / (k - 1):.3f}, 1)")
    wrong = 1 - p_label
    probs = torch.empty(len(c), k, dtype=torch.float64)
    probs[:, 0] = p_label
    probs[:, 1] = c * wrong
    probs[:, 2:] = ((1 - c) * wrong / (k - 2))[:, None]
    return probs.log(), torch.zeros(len(c), dtype=torch.long)


def relative_step_share(method: str, p_label: float, concentrations, k: int = 10):
    """How much more of a normalised step an example gets than one with its mistakes spread.

    ``||g(c)||^2 / ||g(1/(K-1))||^2`` for the expected updates of
    :func:`confusion_examples` at the same ``p_label`` (one value per concentration ``c``).
    """
    spread_first = torch.cat([torch.tensor([1 / (k - 1)]), torch.as_tensor(concentrations)])
    logits, labels = confusion_examples(p_label, spread_first, k)
    sq = expected_updates(method, logits, labels).pow(2).sum(-1)  # (1 + n,)
    return sq[1:] / sq[0]
