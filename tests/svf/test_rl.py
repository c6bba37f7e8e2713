"""A few REINFORCE / PPO steps on z raise the reward of a trivial task (tiny model); NaN rewards are refused;
the `python -m training.svf train` CLI writes its run directory and an expert."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmodels import Hyformer, HyformerConfig
from jaxmodels.svf import SVFWrapper
from jaxmodels_training import svf as svf_cli
from jaxmodels_training.svf_rl import PromptCodec, RewardError, SVFPolicy, SVFPPOTrainer
from jaxmodels_training.svf_tasks import Example

CHARS = "abcdefghijklm"
TARGET = "cdefgh"  # a first letter from this set earns +1


class TinyTokenizer:
    """13 letters, newline 13, pad 14, eos 15; vocab 17 (the tiny Hyformer)."""

    vocab_size, pad_id, eos_id = 17, 14, 15

    def encode(self, text):
        return np.array([13 if c == "\n" else CHARS.index(c) for c in text], np.int32)

    def decode(self, ids):
        return "".join("\n" if i == 13 else CHARS[i] if i < 13 else "" for i in np.asarray(ids).reshape(-1))


def target_reward(completion, answer):
    return 1.0 if completion[:1] and completion[0] in answer else -1.0


@pytest.fixture(scope="module")
def setup():
    model = Hyformer.from_config(HyformerConfig.tiny(max_seq_len=16), seed=0)
    # A random tiny model's MLPs barely touch its output (init std 0.02); scaled up, they decide it.
    nnx.update(model, jax.tree.map(lambda x: x * 25.0 if x.ndim >= 2 else x, nnx.state(model, nnx.Param)))
    policy = SVFPolicy(SVFWrapper(model, seed=0))
    examples = [Example("ab", TARGET, "toy")] * 8
    codec = PromptCodec.for_examples(TinyTokenizer(), examples, 2)
    return policy, examples, codec


def expected_reward(policy, z, codec):
    """Exact E[reward] of the first sampled token: 2 p(TARGET) - 1."""
    ids, mask = codec.encode(["ab"])
    # log-probs at position t score token t+1: append any token to read the distribution after the prompt
    full = jnp.concatenate([jnp.asarray(ids), jnp.zeros((1, 1), jnp.int32)], axis=1)
    attention = jnp.concatenate([jnp.asarray(mask), jnp.ones((1, 1), jnp.int32)], 1)
    logp = policy._logprobs(z, policy.frozen, full, attention)[0]
    return 2 * float(jnp.exp(logp[0, -1, [CHARS.index(c) for c in TARGET]]).sum()) - 1


@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_a_few_steps_raise_the_reward(setup, algo):
    policy, examples, codec = setup
    trainer = SVFPPOTrainer(policy.wrapper, codec, algo=algo, lr=0.1, grad_clip=1.0, kl_coef=0.01, epochs=2,
                            group_size=2, temperature=1.0)
    before = expected_reward(policy, trainer.z, codec)
    for step in range(4):
        _, metrics = trainer.step(examples, target_reward, seed=step)
        assert np.isfinite(metrics["loss"]) and metrics["kl"] >= 0
    after = expected_reward(policy, trainer.z, codec)
    np.testing.assert_array_equal(policy.wrapper.z_vectors[policy.keys[0]], policy.z_list()[0])  # wrapper untouched
    assert after > before + 0.3, (before, after)


def test_nan_rewards_are_refused(setup):
    policy, examples, codec = setup
    with pytest.raises(RewardError, match=r"the reward function of task 'toy' returned nan for 8 of 8 samples "
                                          r"\(indices \[0, 1, 2, 3, 4, 5, 6, 7\]\); rewards must be finite numbers"):
        policy.rollout(policy.z_list(), examples, codec, lambda c, a: float("nan"), task_name="toy")


def test_train_cli_writes_a_run_and_an_expert(tmp_path, capsys):
    model_dir = tmp_path / "model"
    Hyformer.from_config(HyformerConfig.tiny(vocab_size=260, max_seq_len=24), seed=1).save_pretrained(model_dir)
    out = tmp_path / "run"
    argv = ["train", "--model", str(model_dir), "--task", "sort", "--steps", "2", "--batch-size", "4",
            "--n-train", "8", "--n-valid", "4", "--eval-every", "1", "--max-new-tokens", "4", "--out", str(out),
            "--svd-cache", str(tmp_path / "cache")]
    svf_cli.main(argv)
    assert (out / "expert.safetensors").is_file() and (out / "run.json").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in records] == ["valid", "train", "valid", "train", "valid"]
    assert {"reward", "loss", "grad_norm", "steps_per_s"} <= set(records[1])
    assert len(list((tmp_path / "cache").glob("svd-*.safetensors"))) == 1
    with pytest.raises(SystemExit, match=r"holds another run"):
        svf_cli.main(argv)
    with pytest.raises(SystemExit, match=r"--resume: .* holds a run with another configuration \(steps: run has 2, "
                                         r"now 3\)"):
        svf_cli.main(argv[:5] + ["--steps", "3"] + argv[7:] + ["--resume"])
    svf_cli.main(argv[:5] + ["--steps", "2"] + argv[7:] + ["--resume"])  # nothing left to do, expert rewritten
    with pytest.raises(SystemExit, match=r"SVF pattern 'nothing' selects no matrices"):
        svf_cli.main(argv + ["--force", "--pattern", "nothing"])


def test_window_logprobs_are_the_full_forward_sliced(setup):
    policy, _, _ = setup
    from jaxmodels_training.svf_losses import token_logprobs

    tokens = jnp.asarray([[14, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6]])
    mask = jnp.asarray([[0, 1, 1, 1, 1, 1, 1], [1] * 7])
    z = policy.z_list()
    full_logp, full_chosen = token_logprobs(policy.model_for(z, policy.frozen)(tokens, attention_mask=mask).logits,
                                            tokens)
    logp, chosen = policy._logprobs(z, policy.frozen, tokens, mask, 4)
    np.testing.assert_allclose(np.asarray(logp), np.asarray(full_logp[:, 3:]), atol=2e-5)
    np.testing.assert_allclose(np.asarray(chosen), np.asarray(full_chosen[:, 3:]), atol=2e-5)


def test_the_lora_baseline_raises_the_reward_under_the_same_objective(setup):
    from jaxmodels_training.svf_lora import LoRAPolicy

    policy, examples, codec = setup
    lora_policy = LoRAPolicy(policy.wrapper.model, rank=2, seed=0)
    trainer = SVFPPOTrainer(None, codec, policy=lora_policy, algo="reinforce", lr=0.05, grad_clip=1.0,
                            kl_coef=0.01, group_size=2, temperature=1.0)
    assert lora_policy.num_params(trainer.z) == sum(2 * (i + o) for i, o in
                                                    [m.flat_shape for m in policy.wrapper.decomposition.matrices])
    assert expected_reward(lora_policy, trainer.z, codec) == pytest.approx(expected_reward(policy, None, codec),
                                                                           abs=1e-6)  # B = 0: the base model
    before = expected_reward(lora_policy, trainer.z, codec)
    for step in range(5):
        trainer.step(examples, target_reward, seed=step)
    assert expected_reward(lora_policy, trainer.z, codec) > before + 0.3
    with pytest.raises(ValueError, match="pass an SVFWrapper or another Policy"):
        SVFPPOTrainer(policy.wrapper, codec, policy=lora_policy)
