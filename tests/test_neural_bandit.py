"""Neural contextual bandit: data, loaders, per-method losses, learning, mechanism."""

import gzip
import math

import pytest
import torch

import tpo_core as tc
from tpo_core.bandits import mechanism
from tpo_core.bandits.neural import (
    NEURAL_BANDIT_METHODS,
    SeedStack,
    bandit_scores,
    final_errors,
    load_mnist,
    make_classifier,
    make_confusable_data,
    matched_noise,
    neural_bandit_loss,
    seed_series,
    train_neural_bandit,
)

DOUBLE = torch.float64


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


def test_matched_noise_keeps_partners_equally_far_apart_in_noise_units():
    ref = math.sqrt(2 * (1 - 0.6)) / 0.2
    for rho in (0.0, 0.3, 0.9):
        assert math.sqrt(2 * (1 - rho)) / matched_noise(rho, 0.6, 0.2) == pytest.approx(ref)
    assert matched_noise(0.6, 0.6, 0.2) == 0.2
    with pytest.raises(ValueError, match="confusability"):
        matched_noise(1.0, 0.6, 0.2)


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
    with pytest.raises(ValueError, match="seeds is empty"):
        train_neural_bandit("pg", make_confusable_data(n_train=10, n_test=5), steps=1, seeds=[])
    with pytest.raises(ValueError, match="unknown method"):
        mechanism.failed_sample_weight("group_pg", torch.zeros(1, 3), torch.tensor([0]))


@pytest.mark.parametrize("method", NEURAL_BANDIT_METHODS)
def test_every_method_trains_without_error(method):
    data = make_confusable_data(n_train=500, n_test=100, dim=20, seed=0)
    (run,) = train_neural_bandit(method, data, steps=20, eval_every=10, progress=False)
    assert run.steps == [0, 10, 20] and all(0 <= e <= 1 for e in run.test_error)


def test_tpo_learns_an_easy_task_from_bandit_feedback():
    data = make_confusable_data(
        n_train=5000, n_test=1000, dim=50, confusability=0.0, noise=0.15, seed=0
    )
    (run,) = train_neural_bandit("tpo", data, steps=600, eval_every=100, progress=False)
    assert run.test_error[0] > 0.5  # chance is 0.9
    assert run.test_error[-1] < 0.05
    assert run.steps_to(0.1) is not None and run.steps_to(-1) is None


def test_training_is_reproducible_and_a_seed_ignores_its_neighbours():
    data = make_confusable_data(n_train=300, n_test=100, dim=20, seed=0)
    a = train_neural_bandit("dg", data, steps=30, eval_every=10, seeds=[4, 9], progress=False)
    b = train_neural_bandit("dg", data, steps=30, eval_every=10, seeds=[9], progress=False)
    c = train_neural_bandit("dg", data, steps=30, eval_every=10, seeds=[4, 9], progress=False)
    assert [r.test_error for r in a] == [r.test_error for r in c]
    assert a[1].seed == b[0].seed == 9 and a[1].test_error == b[0].test_error
    for x, y in zip(a[1].model.parameters(), b[0].model.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    assert final_errors(a).tolist() == [a[0].test_error[-1], a[1].test_error[-1]]


def test_seed_stack_starts_as_make_classifier_and_its_members_compute_the_same():
    stack = SeedStack([3, 5], 12, 4)
    torch.manual_seed(5)
    alone = make_classifier(12, 4)
    x = torch.randn(7, 12)
    torch.testing.assert_close(stack(x)[1], alone(x))
    torch.testing.assert_close(stack.member(0)(x), stack(x)[0])
    assert stack(x[None].expand(2, 7, 12)).shape == (2, 7, 4)


def random_examples(n=6, k=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=DOUBLE) * 1.5
    return logits, torch.randint(k, (n,), generator=g)


def test_pg_expected_update_is_one_vs_rest_and_grpo_a_multiple_of_it():
    logits, labels = random_examples()
    probs = torch.softmax(logits, -1)
    p_y = probs.gather(-1, labels[:, None])
    one_vs_rest = p_y * (torch.eye(10, dtype=DOUBLE)[labels] - probs)
    torch.testing.assert_close(mechanism.expected_updates("pg", logits, labels), one_vs_rest)
    mean = p_y.mean()
    torch.testing.assert_close(
        mechanism.expected_updates("grpo", logits, labels),
        one_vs_rest / torch.sqrt(mean * (1 - mean)),
    )


def test_tpo_expected_update_enumerates_the_targets():
    logits, labels = random_examples(n=3, k=5, seed=1)
    probs = torch.softmax(logits, -1)
    want = torch.zeros_like(probs)
    for a in range(5):
        actions = torch.full((3,), a)
        reward = (actions == labels).to(DOUBLE)
        q = tc.tpo_target(logits, bandit_scores(probs, actions, reward))
        want += probs[:, a, None] * (q - probs)
    torch.testing.assert_close(mechanism.expected_updates("tpo", logits, labels), want)


def test_group_pg_sample_update_is_u_itself():
    logits, labels = random_examples(n=2, k=10, seed=2)
    probs = torch.softmax(logits, -1)
    g = mechanism.sampled_class_updates("group_pg", logits, labels)  # (n, K, K)
    for a in (0, 7):
        actions = torch.full((2,), a)
        reward = (actions == labels).to(DOUBLE)
        u = tc.standardize_scores(bandit_scores(probs, actions, reward))
        torch.testing.assert_close(g[:, a], u)


def test_failed_sample_weights_follow_their_closed_forms():
    logits, labels = random_examples(n=4, k=10, seed=3)
    probs = torch.softmax(logits, -1)
    b = (probs**2).sum(-1, keepdim=True)
    kappa = math.exp(-10 / 3)
    mean = probs.gather(-1, labels[:, None]).mean()
    closed = {
        "pg": b.expand_as(probs),
        "grpo": (mean / torch.sqrt(mean * (1 - mean))).expand_as(probs),
        "dg": b * torch.sigmoid(b * probs.log()),
        "tpo": probs * (1 - kappa) / (1 - probs * (1 - kappa)),
    }
    wrong = torch.ones_like(probs, dtype=torch.bool).scatter(-1, labels[:, None], False)
    for method, want in closed.items():
        w = mechanism.failed_sample_weight(method, logits, labels)
        torch.testing.assert_close(w[wrong], want[wrong])
        assert torch.isnan(w[~wrong]).all()
        # The update is exactly -w (e_a - pi): nothing is left over.
        g = mechanism.sampled_class_updates(method, logits, labels)
        direction = torch.eye(10, dtype=DOUBLE) - probs[:, None, :]
        rebuilt = -w.nan_to_num()[..., None] * direction
        torch.testing.assert_close(g[wrong], rebuilt[wrong])


def test_confusion_examples_and_concentration():
    logits, labels = mechanism.confusion_examples(0.4, [1 / 9, 0.5, 0.9])
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(probs[:, 0], torch.full((3,), 0.4, dtype=DOUBLE))
    torch.testing.assert_close(
        mechanism.concentration(logits, labels), torch.tensor([1 / 9, 0.5, 0.9], dtype=DOUBLE)
    )
    with pytest.raises(ValueError, match="concentrations"):
        mechanism.confusion_examples(0.4, [0.05])
    with pytest.raises(ValueError, match="p_label"):
        mechanism.confusion_examples(1.0, [0.5])


def test_relative_step_share_of_pg_follows_its_closed_form():
    # ||p (e_y - pi)||^2 = p^2 ((1 - p)^2 + sum_wrong pi_c^2).
    p, k, cs = 0.3, 10, torch.tensor([0.2, 0.6, 0.95], dtype=DOUBLE)

    def sq(c):
        wrong = 1 - p
        return p**2 * (wrong**2 + (c * wrong) ** 2 + (k - 2) * ((1 - c) * wrong / (k - 2)) ** 2)

    want = sq(cs) / sq(torch.tensor(1 / (k - 1), dtype=DOUBLE))
    torch.testing.assert_close(mechanism.relative_step_share("pg", p, cs, k), want)
    shares = mechanism.step_shares(torch.randn(5, 4, dtype=DOUBLE))
    assert float(shares.sum()) == pytest.approx(1.0) and (shares > 0).all()


def test_tpo_shares_more_of_the_step_with_concentrated_mistakes_than_pg():
    cs = [0.3, 0.6, 0.9]
    for p in (0.2, 0.5, 0.8):
        tpo = mechanism.relative_step_share("tpo", p, cs)
        pg = mechanism.relative_step_share("pg", p, cs)
        assert (tpo > pg).all() and (tpo.diff() > 0).all()
    a, b = torch.randn(3, 4, dtype=DOUBLE), torch.randn(3, 4, dtype=DOUBLE)
    torch.testing.assert_close(mechanism.cosine(a, 2 * a), torch.ones(3, dtype=DOUBLE))
    torch.testing.assert_close(mechanism.cosine(a, b), mechanism.cosine(b, a))


def test_seed_series_gives_mean_and_standard_error_per_point():
    xs, mean, se = seed_series([0.0, 0.9], [[0.1, 0.3], [0.2, 0.2, 0.2]])
    assert xs == [0.0, 0.9] and mean == pytest.approx([0.2, 0.2])
    assert se == pytest.approx([math.sqrt(0.02) / math.sqrt(2), 0.0])
