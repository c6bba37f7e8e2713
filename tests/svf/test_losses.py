"""REINFORCE / PPO losses and KL against hand computation on tiny numbers (and torch's kl_div)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the PyTorch side (the torch extra)")

import torch

from jaxmodels_training.svf_losses import group_advantages, kl_ref_pi, ppo_loss, reinforce_loss, token_logprobs


def test_token_logprobs_pick_the_next_token():
    logits = jnp.log(jnp.asarray([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]]))
    _, chosen = token_logprobs(logits, jnp.asarray([[0, 2, 1]]))
    np.testing.assert_allclose(chosen, np.log([[0.25, 0.1]]), rtol=1e-6)


def test_kl_matches_torch_kl_div_log_target():
    rng = np.random.default_rng(0)
    ref = torch.log_softmax(torch.tensor(rng.normal(size=(2, 3, 5))), -1)
    pi = torch.log_softmax(torch.tensor(rng.normal(size=(2, 3, 5))), -1)
    expected = torch.nn.functional.kl_div(pi, ref, log_target=True, reduction="sum").item()
    got = float(kl_ref_pi(jnp.asarray(ref.numpy()), jnp.asarray(pi.numpy())).sum())
    assert got == pytest.approx(expected, rel=1e-5)
    hand = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(kl_ref_pi(jnp.log(jnp.asarray([0.5, 0.5])), jnp.log(jnp.asarray([0.25, 0.75])))) == pytest.approx(hand)


def test_reinforce_loss_by_hand():
    chosen = jnp.asarray([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    mask = jnp.asarray([[1, 1, 0], [1, 1, 1]])
    rewards = jnp.asarray([1.0, -1.0])
    kl = jnp.asarray([[0.1, 0.2, 5.0], [0.0, 0.3, 0.0]])
    loss, aux = reinforce_loss(chosen, mask, rewards, kl, kl_coef=0.5)
    # sample 0: -(-3) * 1 = 3; sample 1: -(-1.5) * -1 = -1.5 -> mean 0.75; KL sums 0.3 and 0.3 -> 0.5 * 0.3
    assert float(aux["pg_loss"]) == pytest.approx(0.75) and float(aux["kl"]) == pytest.approx(0.3)
    assert float(loss) == pytest.approx(0.75 + 0.15)


def test_group_advantages_by_hand():
    adv = group_advantages(jnp.asarray([1.0, -1.0, 1.0, 1.0]), 2)
    np.testing.assert_allclose(adv, [1.0, -1.0, 0.0, 0.0], atol=1e-6)
    batch_wide = group_advantages(jnp.asarray([2.0, 0.0, 1.0]), 1)
    np.testing.assert_allclose(batch_wide, np.array([1, -1, 0]) / math.sqrt(2 / 3), rtol=1e-6)


def test_ppo_loss_clips_by_hand():
    old = jnp.log(jnp.asarray([[0.5, 0.5], [0.5, 0.5]]))
    new = jnp.log(jnp.asarray([[0.75, 0.5], [0.25, 0.5]]))  # ratios 1.5, 1 and 0.5, 1
    mask = jnp.asarray([[1, 1], [1, 0]])
    loss, aux = ppo_loss(new, old, mask, jnp.asarray([1.0, -1.0]), clip_eps=0.2)
    # seq 0 (A=1): -min(1.5, 1.2) = -1.2 and -1 -> mean -1.1; seq 1 (A=-1): -min(-0.5, -0.8) = 0.8 -> total -0.15
    assert float(loss) == pytest.approx(-0.15, abs=1e-6)
    assert float(aux["clip_fraction"]) == pytest.approx(2 / 3)
    kl = jnp.asarray([[0.2, 0.4], [0.6, 9.0]])
    loss_kl, aux = ppo_loss(new, old, mask, jnp.asarray([1.0, -1.0]), kl, clip_eps=0.2, kl_coef=0.1)
    assert float(aux["kl"]) == pytest.approx((0.3 + 0.6) / 2) and float(loss_kl) == pytest.approx(-0.15 + 0.045)
