"""A neural contextual bandit: classification learned from bandit feedback (the paper's MNIST
bandit; notebook 03).

The classifier sees an input, samples ONE class from its softmax, and is told
only whether that class was right (reward ``1{a = label}``); the label itself
stays hidden. Every method turns that one bit into a loss on the logits:

* PG: ``-A log pi(a)`` with ``A = r - b``, ``b = sum_c pi_c^2`` (the expected reward).
* DG: the same term gated by ``sigmoid(A * surprisal / eta)``.
* GRPO (single sample): rewards z-scored across the minibatch, ``-A log pi(a)``.
* group-PG (ablation): TPO's score vector ``A(a) e_a`` z-scored over the classes
  (u), weighted REINFORCE ``-sum_c u_c log pi_c``.
* TPO: the same ``u``, target ``q ∝ pi exp(u)``, cross-entropy to ``q``. A wrong
  sample gets ``u = -sqrt(K-1)`` and every other class ``+1/sqrt(K-1)``, so it
  suppresses exactly the sampled wrong class.

The default data set is synthetic and offline: Gaussian classes in pairs
whose prototypes have cosine similarity ``confusability``, so the share of
errors that land on one confusable label is a dial. :func:`load_mnist`
reads real MNIST from local IDX files when they are present.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from tpo_core.bandits.tabular import exact_update
from tpo_core.objectives import (
    dg_loss,
    group_pg_loss,
    grpo_advantages,
    pg_loss,
    tpo_loss,
    tpo_target,
)
from tpo_core.stats import mean_and_se

NEURAL_BANDIT_METHODS = ("pg", "dg", "grpo", "group_pg", "tpo")


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class ClassificationData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(self.y_train.max()) + 1


def make_confusable_data(
    n_train: int = 20_000,
    n_test: int = 2_000,
    num_classes: int = 10,
    dim: int = 784,
    confusability: float = 0.6,
    noise: float = 0.3,
    seed: int = 0,
) -> ClassificationData:
    """Gaussian classes ``x = mu_y + noise * eps`` whose prototypes come in confusable pairs.

    Prototypes have unit norm; ``noise`` is the per-feature standard deviation,
    so the pair ``(2j, 2j + 1)``, a distance ``sqrt(2 (1 - rho))`` apart, is
    what a model mostly confuses.

    Classes (0, 1), (2, 3), ... share a direction: ``mu_{2j+1} = rho mu_{2j} +
    sqrt(1 - rho^2) nu_j`` with ``rho = confusability`` and independent unit
    Gaussians, so a model's mistakes on class ``2j`` concentrate on ``2j + 1``
    (and back) as ``rho -> 1``; at ``rho = 0`` they spread over all classes.
    """
    if not 0 <= confusability < 1:
        raise ValueError(f"confusability must lie in [0, 1), got {confusability}")
    if num_classes < 2 or num_classes % 2:
        raise ValueError(f"num_classes must be an even number >= 2, got {num_classes}")
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(num_classes // 2, dim, generator=g)
    other = torch.randn(num_classes // 2, dim, generator=g)
    partner = confusability * base + math.sqrt(1 - confusability**2) * other
    prototypes = torch.stack([base, partner], 1).reshape(num_classes, dim) / math.sqrt(dim)

    def sample(n):
        y = torch.randint(num_classes, (n,), generator=g)
        x = prototypes[y] + noise * torch.randn(n, dim, generator=g)
        return x / noise, y  # unit-variance features

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return ClassificationData(x_train, y_train, x_test, y_test)


def _read_idx(path: Path) -> torch.Tensor:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = data[4 + 4 * ndim :]
    if len(body) != math.prod(shape):
        raise ValueError(f"{path} holds {len(body)} bytes of data but its header says {shape}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def load_mnist(root: str | Path) -> ClassificationData:
    """Real MNIST from the four standard IDX files (optionally ``.gz``) in ``root``.

    Nothing is downloaded: put ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` there first.
    Pixels are scaled to [0, 1] and flattened to 784 features.
    """
    root = Path(root)

    def find(stem):
        for name in (stem, stem + ".gz"):
            if (root / name).exists():
                return root / name
        raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {root}")

    def images(stem):
        x = _read_idx(find(stem)).float() / 255
        return x.reshape(len(x), -1)

    def labels(stem):
        return _read_idx(find(stem)).long()

    return ClassificationData(
        images("train-images-idx3-ubyte"),
        labels("train-labels-idx1-ubyte"),
        images("t10k-images-idx3-ubyte"),
        labels("t10k-labels-idx1-ubyte"),
    )


# ---------------------------------------------------------------- model and losses


def make_classifier(in_features: int = 784, num_classes: int = 10, hidden: int = 50) -> nn.Module:
    """The paper's MLP: in -> 50 -> 50 -> classes with ReLU."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def bandit_scores(probs: torch.Tensor, actions: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """TPO's single-sample score vector ``A(a) e_a`` with ``A = r - sum_c pi_c^2``."""
    advantage = reward - (probs**2).sum(-1)
    return torch.zeros_like(probs).scatter_(-1, actions[:, None], advantage[:, None])


def neural_bandit_loss(method: str, logits: torch.Tensor, actions, reward) -> torch.Tensor:
    """The loss each method minimises for one minibatch of single-sample feedback."""
    if method not in NEURAL_BANDIT_METHODS:
        raise ValueError(
            f"unknown method {method!r}; choose one of {', '.join(NEURAL_BANDIT_METHODS)}"
        )
    log_pi = torch.log_softmax(logits, -1)
    probs = log_pi.detach().exp()
    log_pi_a = log_pi.gather(-1, actions[:, None])[:, 0]
    if method in ("pg", "dg"):
        advantage = reward - (probs**2).sum(-1)
        return pg_loss(log_pi_a, advantage) if method == "pg" else dg_loss(log_pi_a, advantage)
    if method == "grpo":
        return pg_loss(log_pi_a, grpo_advantages(reward))
    scores = bandit_scores(probs, actions, reward)
    if method == "group_pg":
        return group_pg_loss(log_pi, scores)
    return tpo_loss(logits, tpo_target(log_pi.detach(), scores))


# ---------------------------------------------------------------- training


@dataclass
class NeuralBanditRun:
    """One training run: test error (argmax) at each evaluation step."""

    method: str
    seed: int
    steps: list[int] = field(default_factory=list)
    test_error: list[float] = field(default_factory=list)
    model: nn.Module | None = None

    def steps_to(self, threshold: float) -> int | None:
        """First evaluated step whose test error is at or below ``threshold``; None if never."""
        return next(
            (s for s, e in zip(self.steps, self.test_error, strict=True) if e <= threshold), None
        )


def mean_curve(runs: list[NeuralBanditRun]) -> tuple[list, list, list]:
    """``(steps, mean, se)`` of test error over runs (seeds) of one method."""
    mean, se = mean_and_se([r.test_error for r in runs])
    return runs[0].steps, mean.tolist(), se.tolist()


@torch.no_grad()
def classification_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(-1) != y).float().mean().item()


def train_neural_bandit(
    method: str,
    data: ClassificationData,
    steps: int = 2_000,
    batch: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    eval_every: int = 100,
    callback: Callable[[NeuralBanditRun], None] | None = None,
    progress: bool = True,
) -> NeuralBanditRun:
    """Train the MLP from bandit feedback (Adam); test error every ``eval_every`` steps."""
    if method not in NEURAL_BANDIT_METHODS:
        raise ValueError(
            f"unknown method {method!r}; choose one of {', '.join(NEURAL_BANDIT_METHODS)}"
        )
    torch.manual_seed(seed)
    model = make_classifier(data.x_train.shape[1], data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    run = NeuralBanditRun(method, seed, model=model)
    for step in tqdm(
        range(steps + 1), desc=f"{method} seed {seed}", disable=not progress, leave=False
    ):
        if step % eval_every == 0:
            run.steps.append(step)
            run.test_error.append(classification_error(model, data.x_test, data.y_test))
            if callback is not None:
                callback(run)
        if step == steps:
            break
        idx = torch.randint(len(data.x_train), (batch,), generator=g)
        x, y = data.x_train[idx], data.y_train[idx]
        logits = model(x)
        actions = torch.multinomial(torch.softmax(logits.detach(), -1), 1, generator=g)[:, 0]
        reward = (actions == y).float()
        loss = neural_bandit_loss(method, logits, actions, reward)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return run


# ---------------------------------------------------------------- mechanism


def tpo_gain_over_one_vs_rest(logits: torch.Tensor, labels: torch.Tensor):
    """Per example: wrong-class concentration, and TPO's extra first-order gain in ``p_y``.

    In expectation over the sampled class, PG (and DG, GRPO) move the logits
    along the one-vs-rest update ``p_y (e_y - pi)``: raise the label, lower every
    wrong class in proportion to its mass. TPO's expected update is
    ``sum_a pi_a (q^(a) - pi)``, where a failed sample ``a`` lowers ``a`` alone,
    with a weight that grows with ``pi_a``: it hits the dominant wrong class
    hardest. A logit update ``g`` changes ``p_y`` to first order by
    ``p_y (g_y - <pi, g>)``; the extra gain is TPO's minus one-vs-rest's, both
    per unit step. Returns ``(concentration, extra_gain)`` with
    ``concentration = largest wrong-class mass / total wrong mass``.
    """
    k = logits.shape[-1]
    log_pi = torch.log_softmax(logits.detach().double(), -1)
    probs = log_pi.exp()
    n = len(labels)
    # Every class as the sampled action, for every example: (n, K actions, K classes).
    actions = torch.arange(k).expand(n, k)
    reward = (actions == labels[:, None]).double()
    advantage = reward - (probs**2).sum(-1, keepdim=True)
    q = tpo_target(log_pi[:, None, :].expand(n, k, k), torch.diag_embed(advantage))
    tpo_update = (probs[:, :, None] * (q - probs[:, None, :])).sum(1)
    one_vs_rest = exact_update("pg", log_pi, labels)
    p_y = probs.gather(-1, labels[:, None])[:, 0]

    def gain(g):
        return p_y * (g.gather(-1, labels[:, None])[:, 0] - (probs * g).sum(-1))

    wrong = probs.scatter(-1, labels[:, None], 0.0)
    concentration = wrong.max(-1).values / wrong.sum(-1).clamp_min(1e-300)
    return concentration, gain(tpo_update) - gain(one_vs_rest)


def binned_means(
    x: torch.Tensor, y: torch.Tensor, edges
) -> tuple[list[float], list[float], list[int]]:
    """Mean of ``y`` within bins of ``x`` (bin centres, means, counts; empty bins skipped)."""
    centres, means, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (x >= lo) & (x < hi)
        if inside.any():
            centres.append((lo + hi) / 2)
            means.append(y[inside].mean().item())
            counts.append(int(inside.sum()))
    return centres, means, counts
