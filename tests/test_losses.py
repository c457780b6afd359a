"""Losses: softmax cross-entropy and stochmax (as defined in this project)."""
import math

import pytest
import torch
import torch.nn.functional as F

from brainsnn.learn.losses import LossError, SoftmaxCrossEntropy, StochMax, gumbel_noise, make_loss


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 10, generator=g) * 3
    y = torch.randint(0, 10, (16,), generator=g)
    return z, y


def test_stochmax_with_zero_noise_is_softmax_cross_entropy(batch):
    z, y = batch
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    loss = StochMax(sigma=0.0, tau=1.0).train()(z1, y)
    ref = SoftmaxCrossEntropy()(z2, y)
    # hand formula: -log softmax(z)_y averaged over the batch
    hand = float(torch.mean(torch.logsumexp(z, 1) - z[torch.arange(16), y]))
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), abs=1e-6)
    assert float(ref.detach()) == pytest.approx(hand, abs=1e-5)
    loss.backward()
    ref.backward()
    assert torch.allclose(z1.grad, z2.grad, atol=1e-7)


def test_stochmax_noise_only_in_training(batch):
    z, y = batch
    sm = StochMax(sigma=1.0, generator=torch.Generator().manual_seed(1))
    noisy = float(sm.train()(z, y))
    assert noisy != pytest.approx(float(F.cross_entropy(z, y)), abs=1e-4)
    assert float(sm.eval()(z, y)) == pytest.approx(float(F.cross_entropy(z, y)), abs=1e-6)
    # the same seed gives the same noise
    a = StochMax(sigma=1.0, generator=torch.Generator().manual_seed(5)).train()(z, y)
    b = StochMax(sigma=1.0, generator=torch.Generator().manual_seed(5)).train()(z, y)
    assert float(a) == float(b)


def test_stochmax_gumbel_perturbation_is_the_defined_one(batch):
    z, y = batch
    sm = StochMax(sigma=0.7, tau=2.0, generator=torch.Generator().manual_seed(3)).train()
    g = gumbel_noise(z.shape, torch.Generator().manual_seed(3))
    assert torch.allclose(sm.perturb(z, y), (z + 0.7 * g) / 2.0)


def test_gumbel_noise_statistics():
    g = gumbel_noise((200000,), torch.Generator().manual_seed(0))
    assert float(g.mean()) == pytest.approx(0.5772, abs=0.01)   # Euler-Mascheroni constant
    assert float(g.var()) == pytest.approx(math.pi ** 2 / 6, rel=0.03)


def test_noisy_target_pushes_only_the_true_logit_down(batch):
    z, y = batch
    sm = StochMax(form="noisy_target", alpha=0.5,
                  generator=torch.Generator().manual_seed(2)).train()
    zp = sm.perturb(z, y)
    mask = F.one_hot(y, 10).bool()
    assert torch.equal(zp[~mask], z[~mask])
    assert torch.all(zp[mask] <= z[mask])
    xi = torch.randn(16, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(zp[mask], z[mask] - 0.5 * z[mask].abs() * xi.abs())
    zero = StochMax(form="noisy_target", alpha=0.0).train()
    assert float(zero(z, y)) == pytest.approx(float(F.cross_entropy(z, y)), abs=1e-6)


def test_bad_configurations():
    with pytest.raises(LossError, match="unknown loss 'hinge'"):
        make_loss("hinge")
    with pytest.raises(LossError, match="tau must be > 0"):
        StochMax(tau=0)
    with pytest.raises(LossError, match="form 'uniform' unknown"):
        StochMax(form="uniform")
    with pytest.raises(LossError, match=r"logits must be \(batch, n_classes\)"):
        make_loss("softmax")(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(LossError, match="targets"):
        make_loss("stochmax")(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    assert isinstance(make_loss("stochmax", sigma=0.5), StochMax)


def test_label_smoothing_matches_the_hand_computed_loss():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 1])
    eps = 0.2
    logp = z - torch.logsumexp(z, dim=1, keepdim=True)
    nll = -logp[torch.arange(2), y]
    uniform = -logp.mean(dim=1)
    expected = ((1 - eps) * nll + eps * uniform).mean()
    loss = make_loss("softmax", label_smoothing=eps)
    assert float(loss(z, y)) == pytest.approx(float(expected), rel=1e-6)
    assert loss.config() == {"loss": "softmax", "label_smoothing": eps}
    assert float(make_loss("softmax")(z, y)) == pytest.approx(float(nll.mean()), rel=1e-6)
    with pytest.raises(LossError, match=r"label_smoothing must be in \[0, 1\)"):
        SoftmaxCrossEntropy(label_smoothing=1.0)
    with pytest.raises(LossError, match="takes only label_smoothing"):
        make_loss("softmax", sigma=1.0)


def test_stochmax_loss_and_gradient_by_hand_with_noise_and_temperature():
    """sigma = 0.7, tau = 2 on fixed noise: the loss mean_b[log sum_k exp(p_bk) - p_by] with
    p = (z + sigma g) / tau, g = -log(-log u), and its gradient (softmax(p) - onehot(y)) / (tau B),
    both computed here element by element in Python floats."""
    z = torch.tensor([[2.0, -1.0, 0.5], [0.3, 1.2, -0.4]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([2, 0])
    sigma, tau, B, K = 0.7, 2.0, 2, 3
    u = torch.rand((B, K), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    loss = StochMax(sigma=sigma, tau=tau, generator=torch.Generator().manual_seed(11)).train()(z, y)
    loss.backward()
    zs, us, ys = z.detach().tolist(), u.tolist(), y.tolist()
    hand, grad = 0.0, [[0.0] * K for _ in range(B)]
    for b in range(B):
        p = [(zs[b][k] + sigma * -math.log(-math.log(us[b][k]))) / tau for k in range(K)]
        norm = sum(math.exp(v) for v in p)
        hand += (math.log(norm) - p[ys[b]]) / B
        for k in range(K):
            grad[b][k] = (math.exp(p[k]) / norm - (k == ys[b])) / (tau * B)
    assert float(loss) == pytest.approx(hand, rel=1e-12)
    assert torch.allclose(z.grad, torch.tensor(grad, dtype=torch.float64), rtol=1e-10, atol=0)
    # the noise matters: without it the loss is another number
    assert float(StochMax(sigma=0.0, tau=tau).train()(z, y)) != pytest.approx(hand, rel=1e-3)
