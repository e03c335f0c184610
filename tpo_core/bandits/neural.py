"""A neural contextual bandit: classification learned from bandit feedback (the paper's MNIST
bandit; notebook 03).

The classifier sees an input, samples ONE class from its softmax, and is told
only whether that class was right (reward ``1{a = label}``); the label itself
stays hidden. Every method turns that one bit into a loss on the logits:

* PG: ``-A log pi(a)`` with ``A = r - b``, ``b = sum_c pi_c^2``: the chance that two
  samples from pi agree (the paper's baseline; the true expected reward ``pi(label)``
  needs the label).
* DG: the same term gated by ``sigmoid(A * surprisal / eta)``.
* GRPO (single sample): rewards z-scored across the minibatch, ``-A log pi(a)``.
* group-PG (ablation): TPO's score vector ``A(a) e_a`` z-scored over the classes
  (u), weighted REINFORCE ``-sum_c u_c log pi_c``.
* TPO: the same ``u``, target ``q ∝ pi exp(u)``, cross-entropy to ``q``. A wrong
  sample gets ``u = -sqrt(K-1)`` and every other class ``+1/sqrt(K-1)``.

Seeds train side by side (:class:`SeedStack`): one copy of the network per seed,
each with its own initialisation, minibatches and samples.

The default data set is synthetic and offline: Gaussian classes in pairs
whose prototypes have cosine similarity ``confusability``, so the share of
errors that land on one confusable label is a dial. :func:`load_mnist`
reads real MNIST from local IDX files when they are present.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from tpo_core.methods import implemented
from tpo_core.objectives import (
    dg_loss,
    group_pg_loss,
    grpo_advantages,
    pg_loss,
    tpo_loss,
    tpo_target,
)
from tpo_core.stats import mean_and_se

NEURAL_BANDIT_METHODS = implemented("neural_bandit")  # tpo_core.methods


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


def matched_noise(confusability: float, reference_confusability: float, reference_noise: float):
    """The noise that keeps a class as hard to tell from its partner as at the reference.

    Partners are ``sqrt(2 (1 - rho))`` apart, so the noise scales as ``sqrt(1 - rho)``:
    turning the confusability dial then moves *where* the mistakes go, not how hard a
    pair is.
    """
    for name, rho in (("confusability", confusability), ("reference", reference_confusability)):
        if not 0 <= rho < 1:
            raise ValueError(f"{name} must lie in [0, 1), got {rho}")
    return reference_noise * math.sqrt((1 - confusability) / (1 - reference_confusability))


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


class SeedStack(nn.Module):
    """One copy of the paper's MLP per seed, run side by side: (S, B, in) -> (S, B, classes).

    Copy ``s`` starts as :func:`make_classifier` does after ``torch.manual_seed(seeds[s])``.
    The copies share nothing: summed over seeds, each seed's loss moves only its own
    weights, and Adam works elementwise, so one Adam over the stack is S separate runs.
    """

    def __init__(self, seeds, in_features: int, num_classes: int, hidden: int = 50):
        super().__init__()
        copies = []
        for seed in seeds:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                net = make_classifier(in_features, num_classes, hidden)
            copies.append([layer for layer in net if isinstance(layer, nn.Linear)])
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([c[i].weight.detach().T for c in copies]))  # (S, in, out)
            for i in range(len(copies[0]))
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([c[i].bias.detach() for c in copies])[:, None])  # (S, 1, out)
            for i in range(len(copies[0]))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` is (S, B, in), one batch per seed, or (B, in), the same batch for every seed."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.matmul(x, w) + b  # (S, B, out)
            x = torch.relu(x) if i < last else x
        return x

    def member(self, s: int) -> nn.Module:
        """Copy ``s`` as a stand-alone :func:`make_classifier` network."""
        w0 = self.weights[0]
        net = make_classifier(w0.shape[1], self.weights[-1].shape[2], w0.shape[2])
        layers = [layer for layer in net if isinstance(layer, nn.Linear)]
        with torch.no_grad():
            for layer, w, b in zip(layers, self.weights, self.biases, strict=True):
                layer.weight.copy_(w[s].T)
                layer.bias.copy_(b[s, 0])
        return net


def bandit_scores(probs: torch.Tensor, actions: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """TPO's single-sample score vector ``A(a) e_a`` with ``A = r - sum_c pi_c^2`` (..., K)."""
    advantage = reward - (probs**2).sum(-1)  # (...,)
    return torch.zeros_like(probs).scatter_(-1, actions[..., None], advantage[..., None])


def neural_bandit_loss(method: str, logits: torch.Tensor, actions, reward) -> torch.Tensor:
    """The loss each method minimises for one minibatch of single-sample feedback.

    ``logits`` is (..., B, K), ``actions`` and ``reward`` (..., B); the loss is the mean over
    every example, and GRPO z-scores the rewards over the last dimension (one minibatch).
    """
    if method not in NEURAL_BANDIT_METHODS:
        raise ValueError(
            f"unknown method {method!r}; choose one of {', '.join(NEURAL_BANDIT_METHODS)}"
        )
    log_pi = torch.log_softmax(logits, -1)
    probs = log_pi.detach().exp()
    log_pi_a = log_pi.gather(-1, actions[..., None])[..., 0]  # (..., B)
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


def final_errors(runs: list[NeuralBanditRun]) -> torch.Tensor:
    """Each run's last test error, one per seed (seeds,)."""
    return torch.tensor([r.test_error[-1] for r in runs], dtype=torch.float64)


def seed_series(xs, per_point) -> tuple[list, list, list]:
    """``(xs, mean, se)`` over seeds at each x; ``per_point`` holds one list of values per seed."""
    summaries = [mean_and_se(values) for values in per_point]
    return list(xs), [float(m) for m, _ in summaries], [float(se) for _, se in summaries]


@torch.no_grad()
def classification_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Argmax error of ``model`` on ``(x, y)``; one value per seed for a :class:`SeedStack`."""
    return (model(x).argmax(-1) != y).float().mean(-1)


def train_neural_bandit(
    method: str,
    data: ClassificationData,
    steps: int = 2_000,
    batch: int = 100,
    lr: float = 1e-3,
    seeds=(0,),
    eval_every: int = 100,
    progress: bool = True,
) -> list[NeuralBanditRun]:
    """Train one MLP per seed from bandit feedback (Adam); test error every ``eval_every`` steps.

    The seeds train side by side (:class:`SeedStack`); seed ``s`` draws its minibatches and
    its sampled classes from its own generator, so its run does not depend on the other seeds.
    """
    if method not in NEURAL_BANDIT_METHODS:
        raise ValueError(
            f"unknown method {method!r}; choose one of {', '.join(NEURAL_BANDIT_METHODS)}"
        )
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    model = SeedStack(seeds, data.x_train.shape[1], data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    runs = [NeuralBanditRun(method, seed) for seed in seeds]
    for step in tqdm(range(steps + 1), desc=method, disable=not progress, leave=False):
        if step % eval_every == 0:
            errors = classification_error(model, data.x_test, data.y_test)  # (S,)
            for run, error in zip(runs, errors.tolist(), strict=True):
                run.steps.append(step)
                run.test_error.append(error)
        if step == steps:
            break
        idx = torch.stack([torch.randint(len(data.x_train), (batch,), generator=g) for g in gens])
        logits = model(data.x_train[idx])  # (S, B, K)
        probs = torch.softmax(logits.detach(), -1)
        actions = torch.stack(
            [torch.multinomial(p, 1, generator=g)[:, 0] for p, g in zip(probs, gens, strict=True)]
        )  # (S, B)
        reward = (actions == data.y_train[idx]).float()
        loss = neural_bandit_loss(method, logits, actions, reward) * len(seeds)  # sum of means
        opt.zero_grad()
        loss.backward()
        opt.step()
    for s, run in enumerate(runs):
        run.model = model.member(s)
    return runs
