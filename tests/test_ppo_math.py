"""PPO math checked against values derived by hand in each docstring."""

from __future__ import annotations

import math

import pytest
import torch

from tether.train.ppo import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    gae,
    kl_penalized_rewards,
    kl_per_token,
    masked_mean,
    masked_var,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)


def test_gae_three_steps_by_hand():
    """rewards (1, 0, 2), values (0.5, 1.0, 1.5), gamma 0.9, lam 0.8; the bootstrap after step 2 is 0.

    delta_2 = 2 + 0.9*0 - 1.5          = 0.5    A_2 = 0.5
    delta_1 = 0 + 0.9*1.5 - 1.0        = 0.35   A_1 = 0.35 + 0.72*0.5  = 0.71
    delta_0 = 1 + 0.9*1.0 - 0.5        = 1.4    A_0 = 1.4 + 0.72*0.71  = 1.9112
    returns = A + V = (2.4112, 1.71, 2.0)
    """
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, torch.tensor([[1.9112, 0.71, 0.5]]))
    torch.testing.assert_close(ret, torch.tensor([[2.4112, 1.71, 2.0]]))


def test_gae_ignores_right_padding():
    """Row 0 is the hand example padded with junk; row 1 has one real token: A = 3 - 1 = 2, G = 3."""
    rewards = torch.tensor([[1.0, 0.0, 2.0, 7.0, 7.0], [3.0, 5.0, 5.0, 5.0, 5.0]])
    values = torch.tensor([[0.5, 1.0, 1.5, 9.0, 9.0], [1.0, 4.0, 4.0, 4.0, 4.0]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, torch.tensor([[1.9112, 0.71, 0.5, 0, 0], [2.0, 0, 0, 0, 0]]))
    torch.testing.assert_close(ret, torch.tensor([[2.4112, 1.71, 2.0, 0, 0], [3.0, 0, 0, 0, 0]]))


def test_gae_with_lambda_one_gives_discounted_returns():
    """With lam = 1 the returns are the plain discounted reward sums, whatever the values."""
    torch.manual_seed(0)
    rewards, values = torch.randn(2, 6), torch.randn(2, 6)
    _, ret = gae(rewards, values, torch.ones(2, 6), gamma=0.95, lam=1.0)
    expected = torch.zeros(2, 6)
    running = torch.zeros(2)
    for t in reversed(range(6)):
        running = rewards[:, t] + 0.95 * running
        expected[:, t] = running
    torch.testing.assert_close(ret, expected)


def test_kl_penalty_and_score_placement():
    """kl_coef 0.1, k1: d = logp - ref.

    row 0: d = (0.5, 0, -1), score 2 on the last token  -> (-0.05, 0, 0.1 + 2)
    row 1: d = (1, 0, pad), score -1 on token 1 (the last real one) -> (-0.1, -1, 0)
    """
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -4.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -1.0, -0.5]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards = kl_penalized_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.0, 2.1], [-0.1, -1.0, 0.0]]))


def test_kl_penalty_skips_empty_rows():
    rewards = kl_penalized_rewards(
        torch.tensor([5.0]), torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 3), kl_coef=0.1
    )
    assert rewards.abs().sum() == 0


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        ("k1", [0.5, -1.0]),
        ("k2", [0.125, 0.5]),
        # exp(-d) - 1 + d: exp(-0.5) - 0.5 = 0.1065307, exp(1) - 2 = 0.7182818
        ("k3", [math.exp(-0.5) - 0.5, math.e - 2.0]),
        ("abs", [0.5, 1.0]),
    ],
)
def test_kl_estimators(estimator, expected):
    d = kl_per_token(torch.tensor([0.0, -2.0]), torch.tensor([-0.5, -1.0]), estimator)
    torch.testing.assert_close(d, torch.tensor(expected))


def test_non_negative_estimators_penalise_moving_below_reference():
    """With k1 a token less likely than under the reference earns a *bonus*; k3 and abs charge for it."""
    logp, ref, mask = torch.tensor([[-3.0]]), torch.tensor([[-1.0]]), torch.ones(1, 1)
    scores = torch.zeros(1)
    assert kl_penalized_rewards(scores, logp, ref, mask, 0.1, "k1").item() > 0
    assert kl_penalized_rewards(scores, logp, ref, mask, 0.1, "k3").item() < 0
    assert kl_penalized_rewards(scores, logp, ref, mask, 0.1, "abs").item() == pytest.approx(-0.2)


def test_policy_loss_clipping_by_hand():
    """clip_eps 0.2, old log-probs 0.

    token 0: ratio 1.5, A = +1: max(-1.5, -1.2) = -1.2, clipped (no gradient)
    token 1: ratio 0.5, A = -1: max(0.5, 0.8)   =  0.8, clipped (no gradient)
    token 2: ratio 1.1, A = +1: max(-1.1, -1.1) = -1.1, inside: d/dlogp = -A*ratio/3 = -1.1/3
    token 3: ratio 1.5, A = -1: max(1.5, 1.2)   =  1.5, past the clip but the unclipped term is worse,
             so it keeps its gradient: d/dlogp = 1.5/4 (pad), and is not counted as clipped
    token 4 is padding.
    loss = (-1.2 + 0.8 - 1.1 + 1.5) / 4 = 0.0; clipfrac = 2/4
    approx_kl = mean((r - 1) - log r) over the 4 real tokens
    """
    ratios = torch.tensor([1.5, 0.5, 1.1, 1.5, 3.0])
    logp = ratios.log().unsqueeze(0).requires_grad_()
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, clipfrac, approx_kl = ppo_policy_loss(logp, torch.zeros(1, 5), adv, mask, clip_eps=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.5)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0, -1.1 / 4, 1.5 / 4, 0.0]]))
    real = ratios[:4]
    assert approx_kl.item() == pytest.approx(((real - 1) - real.log()).mean().item(), rel=1e-5)


def test_policy_loss_at_ratio_one_is_minus_mean_advantage():
    adv = torch.tensor([[2.0, -1.0, 0.5]])
    loss, clipfrac, approx_kl = ppo_policy_loss(
        torch.zeros(1, 3), torch.zeros(1, 3), adv, torch.ones(1, 3), 0.2
    )
    assert loss.item() == pytest.approx(-0.5)
    assert clipfrac.item() == 0.0
    assert approx_kl.item() == 0.0


def test_value_loss_clipping_by_hand():
    """old values 0, returns 1, clip 0.2.

    v = 0.5: v_clip = 0.2; (0.5-1)^2 = 0.25 < (0.2-1)^2 = 0.64 -> clipped term, no gradient
    v = 0.1: v_clip = 0.1; both 0.81 -> not counted as clipped; d/dv 0.5*(v-1)^2/3 = -0.9/3
    v = -0.5: v_clip = -0.2; 2.25 > 1.44 -> unclipped; d/dv = -1.5/3
    loss = 0.5 * (0.64 + 0.81 + 2.25) / 3 = 0.61666..; clipfrac = 1/3
    """
    values = torch.tensor([[0.5, 0.1, -0.5]], requires_grad=True)
    loss, clipfrac = ppo_value_loss(values, torch.zeros(1, 3), torch.ones(1, 3), torch.ones(1, 3), 0.2)
    loss.backward()
    assert loss.item() == pytest.approx(0.5 * 3.7 / 3)
    assert clipfrac.item() == pytest.approx(1 / 3)
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, -0.3, -0.5]]))


def test_whiten_on_masked_positions():
    torch.manual_seed(0)
    x = torch.randn(4, 7) * 3 + 5
    mask = torch.ones(4, 7)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    x = x.masked_fill(mask == 0, 1e4)  # junk in the padding must not move the statistics
    white = whiten(x, mask)
    real = white[mask.bool()]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert real.std().item() == pytest.approx(1.0, abs=1e-4)
    assert white[mask == 0].abs().sum() == 0
    kept = whiten(x, mask, shift_mean=False)[mask.bool()]
    assert kept.mean().item() == pytest.approx(x[mask.bool()].mean().item(), rel=1e-5)
    assert kept.std().item() == pytest.approx(1.0, abs=1e-4)


def test_masked_mean_and_var():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 3.0]))
    assert masked_var(x, mask).item() == pytest.approx(1.0)  # (1 + 0 + 1) / (3 - 1)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(2 / 3)


def test_entropy_from_logits():
    """Uniform over 8 tokens: log 8. A one-hot-ish row has ~0 entropy but is masked out here."""
    logits = torch.zeros(1, 2, 8)
    logits[0, 1, 0] = 50.0
    assert entropy_from_logits(logits, torch.tensor([[1, 0]])).item() == pytest.approx(math.log(8), rel=1e-6)
    assert entropy_from_logits(logits, torch.tensor([[0, 1]])).item() == pytest.approx(0.0, abs=1e-6)


def test_adaptive_kl_controller_by_hand():
    """init 0.1, target 6, horizon 10000, 256 samples.

    KL 6.6: error 0.1  -> coef 0.1 * (1 + 0.1 * 0.0256) = 0.100256
    KL 9:   error 0.5, clipped to 0.2  -> 0.1 * 1.00512 = 0.100512
    KL 3:   error -0.5, clipped to -0.2 -> 0.1 * 0.99488 = 0.099488
    """
    for kl, expected in [(6.6, 0.100256), (9.0, 0.100512), (3.0, 0.099488), (6.0, 0.1)]:
        ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
        assert ctl.update(kl, n_steps=256) == pytest.approx(expected, rel=1e-9)
        assert ctl.coef == pytest.approx(expected, rel=1e-9)


def test_adaptive_kl_controller_direction_and_bound():
    high, low = AdaptiveKLController(0.2, 6.0, 1000), AdaptiveKLController(0.2, 6.0, 1000)
    for _ in range(5):
        high.update(60.0, n_steps=100)
        low.update(0.0, n_steps=100)
    assert high.coef > 0.2 > low.coef
    # Each step moves by at most 20% of n_steps / horizon = 2%, however far the KL is from target.
    assert high.coef == pytest.approx(0.2 * 1.02**5)
    assert low.coef == pytest.approx(0.2 * 0.98**5)


def test_fixed_kl_controller_never_moves():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, n_steps=64) == 0.05
    assert ctl.coef == 0.05
