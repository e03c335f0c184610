"""Neural contextual bandit: data, loaders, per-method losses, learning, mechanism."""

import gzip
import math

import pytest
import torch

import tpo_core as tc
from tpo_core import bandits
from tpo_core.bandits.neural import (
    NEURAL_BANDIT_METHODS,
    bandit_scores,
    binned_means,
    load_mnist,
    make_confusable_data,
    neural_bandit_loss,
    tpo_gain_over_one_vs_rest,
    train_neural_bandit,
)


def write_idx(path, array, opener=open):
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with opener(path, "wb") as f:
        f.write(header + array.to(torch.uint8).numpy().tobytes())


def test_load_mnist_reads_idx_files(tmp_path):
    g = torch.Generator().manual_seed(0)
    train_x = torch.randint(256, (6, 28, 28), generator=g)
    test_x = torch.randint(256, (3, 28, 28), generator=g)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_x, gzip.open)
    write_idx(tmp_path / "train-labels-idx1-ubyte", torch.tensor([0, 1, 2, 3, 4, 9]))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test_x)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", torch.tensor([7, 8, 9]), gzip.open)
    data = load_mnist(tmp_path)
    assert data.x_train.shape == (6, 784) and data.x_test.shape == (3, 784)
    torch.testing.assert_close(data.x_train, train_x.reshape(6, -1).float() / 255)
    assert data.y_test.tolist() == [7, 8, 9] and data.num_classes == 10


def test_load_mnist_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="IDX"):
        load_mnist(tmp_path)


def test_confusable_pairs_have_the_requested_similarity():
    data = make_confusable_data(n_train=20_000, dim=200, confusability=0.7, noise=0.2, seed=1)
    means = torch.stack([data.x_train[data.y_train == c].mean(0) for c in range(10)])
    cos = torch.nn.functional.cosine_similarity(means[0], means[1], dim=0)
    unrelated = torch.nn.functional.cosine_similarity(means[0], means[2], dim=0)
    assert cos == pytest.approx(0.7, abs=0.08)
    assert abs(unrelated) < 0.2


def test_confusable_data_is_reproducible_and_checked():
    a, b = (
        make_confusable_data(n_train=50, n_test=10, seed=3),
        make_confusable_data(n_train=50, n_test=10, seed=3),
    )
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    with pytest.raises(ValueError, match="confusability"):
        make_confusable_data(confusability=1.0)
    with pytest.raises(ValueError, match="even"):
        make_confusable_data(num_classes=5)


def test_single_sample_tpo_scores_follow_spec():
    # Wrong sample: sampled class u = -3, others +1/3 (K = 10); a correct one mirrors it.
    probs = torch.softmax(torch.randn(2, 10, dtype=torch.float64), -1)
    actions, reward = torch.tensor([4, 7]), torch.tensor([0.0, 1.0], dtype=torch.float64)
    u = tc.standardize_scores(bandit_scores(probs, actions, reward))
    expected_wrong = torch.full((10,), 1 / 3, dtype=torch.float64)
    expected_wrong[4] = -3
    torch.testing.assert_close(u[0], expected_wrong)
    torch.testing.assert_close(u[1], -torch.roll(expected_wrong, 3))


def test_tpo_loss_gradient_is_p_minus_q_per_example():
    logits = torch.randn(5, 10, dtype=torch.float64, requires_grad=True)
    actions, reward = (
        torch.tensor([0, 1, 2, 3, 4]),
        torch.tensor([1.0, 0, 0, 1, 0], dtype=torch.float64),
    )
    neural_bandit_loss("tpo", logits, actions, reward).backward()
    probs = torch.softmax(logits.detach(), -1)
    q = tc.tpo_target(logits.detach(), bandit_scores(probs, actions, reward))
    torch.testing.assert_close(logits.grad, (probs - q) / 5)


def test_pg_loss_uses_expected_reward_baseline():
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    actions, reward = torch.tensor([0, 2, 3]), torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    probs = torch.softmax(logits.detach(), -1)
    advantage = reward - (probs**2).sum(-1)
    log_pi_a = torch.log_softmax(logits, -1)[torch.arange(3), actions]
    torch.testing.assert_close(
        neural_bandit_loss("pg", logits, actions, reward), -(advantage * log_pi_a).mean()
    )


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        neural_bandit_loss("ppo", torch.zeros(1, 3), torch.tensor([0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="unknown method"):
        train_neural_bandit("ppo", make_confusable_data(n_train=10, n_test=5), steps=1)


@pytest.mark.parametrize("method", NEURAL_BANDIT_METHODS)
def test_every_method_trains_without_error(method):
    data = make_confusable_data(n_train=500, n_test=100, dim=20, seed=0)
    run = train_neural_bandit(method, data, steps=20, eval_every=10, progress=False)
    assert run.steps == [0, 10, 20] and all(0 <= e <= 1 for e in run.test_error)


def test_tpo_learns_an_easy_task_from_bandit_feedback():
    data = make_confusable_data(
        n_train=5000, n_test=1000, dim=50, confusability=0.0, noise=0.15, seed=0
    )
    run = train_neural_bandit("tpo", data, steps=600, eval_every=100, progress=False)
    assert run.test_error[0] > 0.5  # chance is 0.9
    assert run.test_error[-1] < 0.05
    assert run.steps_to(0.1) is not None and run.steps_to(-1) is None


def test_training_is_reproducible():
    data = make_confusable_data(n_train=300, n_test=100, dim=20, seed=0)
    a = train_neural_bandit("dg", data, steps=30, eval_every=10, seed=4, progress=False)
    b = train_neural_bandit("dg", data, steps=30, eval_every=10, seed=4, progress=False)
    assert a.test_error == b.test_error


def test_one_vs_rest_reference_is_pg_and_tpo_gains_with_concentration():
    # One label, two wrong-mass shapes with the same p_y: spread thin, or on one confuser.
    p_y = 0.5
    spread = torch.tensor([p_y] + [0.5 / 9] * 9, dtype=torch.float64)
    concentrated = torch.tensor([p_y, 0.45] + [0.05 / 8] * 8, dtype=torch.float64)
    labels = torch.tensor([0, 0])
    conc, extra = tpo_gain_over_one_vs_rest(torch.stack([spread, concentrated]).log(), labels)
    assert conc[0] == pytest.approx(1 / 9) and conc[1] == pytest.approx(0.9)
    assert extra[1] > extra[0]
    # The reference is PG's exact expected update, p_y (e_y - pi).
    ovr = bandits.exact_update("pg", spread.log()[None], labels[:1])[0]
    torch.testing.assert_close(ovr, p_y * (torch.eye(10, dtype=torch.float64)[0] - spread))


def test_binned_means():
    x = torch.tensor([0.1, 0.15, 0.5, 0.9])
    y = torch.tensor([1.0, 3.0, 5.0, 7.0])
    centres, means, counts = binned_means(x, y, [0.0, 0.2, 0.4, 0.6, 1.0])
    assert (
        centres == pytest.approx([0.1, 0.5, 0.8])
        and means == [2.0, 5.0, 7.0]
        and counts == [2, 1, 1]
    )
    assert math.isfinite(sum(means))
