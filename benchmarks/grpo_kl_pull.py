"""What moves GRPO on the epochs that reuse a batch: its clipped surrogate or its KL term?

    python benchmarks/grpo_kl_pull.py                  # H = 6 exact match, seed 0, 60 episodes
    python benchmarks/grpo_kl_pull.py --per-token      # the same with per-token ratios

Trains sequence-level GRPO (the settings of the paper's Table 3) and prints, every few
episodes, the error and, for each of the 4 epochs on the batch, the gradient
norm of the clipped surrogate, of the KL term ``beta * k3`` and the share of
informative answers whose ratio the clip has cut. On the snapshot (epoch 1)
the KL has no gradient. Formed on a whole answer its gradient is
``beta * (1 - 1 / rho)`` per answer: it grows without bound as an answer's
probability falls, whereas the surrogate's is at most ``|A| * rho``. Muon
turns whichever gradient is left into a step of the same size.
"""

import argparse
import math

import torch

from tpo_core.methods import METHODS
from tpo_core.objectives import grpo_advantages, kl_k3, ppo_loss
from tpo_core.tokens.model import ModelConfig, TinyTransformer, make_optimizers
from tpo_core.tokens.rollouts import sequence_rollouts


def grad_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float((g**2).sum()) for g in grads if g is not None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=6)
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--every", type=int, default=5, help="print every N episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-token", action="store_true", help="ratios and KL per token")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = TinyTransformer(ModelConfig(vocab=2, length=args.length))
    params = list(model.parameters())
    optimizers = make_optimizers(model)
    generator = torch.Generator().manual_seed(args.seed)
    print(
        f"GRPO, {'per-token' if args.per_token else 'whole-answer'} ratios, H = {args.length}:"
        " per epoch [surrogate grad | KL grad | clipped share]"
    )
    for episode in range(args.episodes):
        model.eval()
        batch = sequence_rollouts(model, "reverse_copy", "terminal", 100, 8, generator)
        model.train()
        advantages = grpo_advantages(batch.scores)
        old = batch.old_log_probs if args.per_token else batch.old_log_probs.sum(-1)
        if args.per_token:
            advantages = advantages[..., None].expand_as(old)
        informative = advantages != 0
        cells = []
        for _ in range(4):
            new = batch.new_log_probs(model)
            new = new if args.per_token else new.sum(-1)
            surrogate = ppo_loss(new, old, advantages)
            kl = METHODS["grpo"].settings["beta"] * kl_k3(new, old).mean()
            ratio = (new - old).exp()
            cut = ((ratio > 1.2) & (advantages > 0)) | ((ratio < 0.8) & (advantages < 0))
            share = cut[informative].float().mean().item() if informative.any() else math.nan
            cells.append(
                f"{grad_norm(surrogate, params):7.1e} | {grad_norm(kl, params):7.1e} | {share:4.2f}"
            )
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            (surrogate + kl).backward()
            for opt in optimizers:
                opt.step()
        if episode % args.every == 0 or episode == args.episodes - 1:
            print(f"episode {episode:>3}  error {batch.error:.3f}  " + "   ".join(cells))


if __name__ == "__main__":
    main()
