"""Muon and Adam as the paper's code runs them: torch's Muon in bfloat16, the reference's
Newton-Schulz scaling, matrix-by-matrix stacks, optax's Nesterov Adam, the Q/K/V biases as heads."""

import math

import pytest
import torch

from tpo_core.tokens.model import Muon


@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (64, 2)])
def test_muon_in_bfloat16_is_torch_muon_exactly(shape):
    torch.manual_seed(0)
    ours, theirs = (torch.nn.Parameter(w) for w in torch.randn(shape).repeat(2, 1, 1))
    a = Muon([ours], lr=1e-2, ns_dtype=torch.bfloat16)
    b = torch.optim.Muon([theirs], lr=1e-2, weight_decay=0.0, momentum=0.95, nesterov=True)
    for _ in range(4):
        ours.grad = torch.randn(shape)
        theirs.grad = ours.grad.clone()
        a.step()
        b.step()
    assert torch.equal(ours, theirs)


def test_muon_orthogonalises_and_scales_like_the_reference():
    g = torch.randn(64, 8, dtype=torch.float64)
    x = Muon.orthogonalise(g, 5, (3.4445, -4.7750, 2.0315), 1e-7, torch.float64)
    singular = torch.linalg.svdvals(x)
    assert singular.min() > 0.5 and singular.max() < 1.5  # roughly U V^T (quintic NS)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    assert torch.nn.functional.cosine_similarity(x.flatten(), (u @ vh).flatten(), 0) > 0.9
    w = torch.nn.Parameter(torch.zeros(64, 8))
    w.grad = g.float()
    Muon([w], lr=1.0, momentum=0.0, nesterov=False).step()
    step = Muon.orthogonalise(g.float(), 5, (3.4445, -4.7750, 2.0315), 1e-7, torch.float32)
    expected = -math.sqrt(64 / 8) * step
    torch.testing.assert_close(w.detach(), expected)


def test_muon_treats_a_stack_of_matrices_as_independent_matrices():
    torch.manual_seed(0)
    g = torch.randn(3, 16, 40)
    g[1] *= 100.0  # a replica with far larger gradients must not shrink the others' steps
    stacked = Muon.orthogonalise(g, 5, (3.4445, -4.7750, 2.0315), 1e-7, torch.float32)
    for r in range(3):
        alone = Muon.orthogonalise(g[r], 5, (3.4445, -4.7750, 2.0315), 1e-7, torch.float32)
        torch.testing.assert_close(stacked[r], alone, rtol=1e-4, atol=1e-5)


def test_nesterov_adam_is_optax_nesterov_adam():
    from tpo_core.tokens.model import NesterovAdam

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    expected = w.detach().clone()
    opt = NesterovAdam([w], lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    m = v = torch.zeros(5, dtype=torch.float64)
    for t in range(1, 4):
        g = torch.randn(5, dtype=torch.float64)
        w.grad = g
        opt.step()
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g  # optax scale_by_adam, nesterov
        m_hat = 0.9 * m / (1 - 0.9 ** (t + 1)) + 0.1 * g / (1 - 0.9**t)
        expected -= 0.1 * m_hat / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
        torch.testing.assert_close(w.detach(), expected)


def test_muon_takes_qkv_biases_as_head_matrices_with_the_reference_scale():
    from tpo_core.tokens.model import ModelConfig, Muon, TinyTransformer, make_optimizers

    model = TinyTransformer(ModelConfig(vocab=2, length=3))
    muon, adam = make_optimizers(model, lr=1.0, muon_qkv_bias=True)
    bias = model.blocks[0].q.bias
    assert any(p is bias for g in muon.param_groups for p in g["params"])
    assert not any(p is bias for g in adam.param_groups for p in g["params"])
    before = bias.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    bias.grad = torch.randn(64)
    muon.step()
    matrix = bias.grad.view(2, 32).T  # (head_dim, heads), scale sqrt(max(1, 32 / 2)) = 4
    # first step: momentum buffer 0.05 g, Nesterov update 0.05 g + 0.95 * 0.05 g
    ortho = Muon.orthogonalise(0.0975 * matrix, 5, (3.4445, -4.7750, 2.0315), 1e-7, torch.float32)
    torch.testing.assert_close(bias.detach() - before, -4.0 * ortho.T.flatten())
