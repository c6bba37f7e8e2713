"""Few-shot CEM against the official Transformer² method: the mixing layout (alphas carry over), raw vs sigmoid
mixing against a NumPy re-statement of the official formula, the official tie-break by hand, seeded runs."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmodels import LlamaForCausalLM, Qwen2Config
from jaxmodels.svf import (SVFWrapper, alphas_from_official, alphas_to_official, mix_masks, official_matrix_order,
                           own_correct_loglik)
from jaxmodels_training import svf as svf_cli
from jaxmodels_training.svf_adapt import Adapter
from jaxmodels_training.svf_rl import rollout_with
from jaxmodels_training.svf_tasks import Example, exact_match, get_task
from jaxmodels_training.tokenizer import ByteTokenizer
from tests.svf.helpers import logits

LAYERS = 2
# The official α columns: its policy's learnable parameters, i.e. the "mlp" tensors of the Hugging Face state
# dict in order (LlamaMLP defines gate_proj, up_proj, down_proj), layer after layer.
OFFICIAL_NAMES = [f"model.layers.{i}.mlp.{p}.weight" for i in range(LAYERS) for p in ("gate_proj", "up_proj",
                                                                                         "down_proj")]


def random_model(cfg, *, seed):
    """LlamaForCausalLM(cfg) with NumPy-random weights: its own init compiles one kernel per parameter shape,
    which takes most of a test's time on a busy CPU. Norm weights near 1, every other parameter ~N(0, 1/fan-in)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: LlamaForCausalLM(cfg, rngs=nnx.Rngs(seed))))
    rng = np.random.default_rng(seed)
    flat = []
    for path, var in nnx.to_flat_state(state):
        shape, dtype = var.get_value().shape, var.get_value().dtype
        if "norm" in ".".join(map(str, path)):
            value = 1 + 0.1 * rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / np.sqrt(shape[0] if len(shape) > 1 else 16)
        flat.append((path, var.replace(jnp.asarray(value, dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random Qwen2 (byte vocabulary), two experts keyed by HF names on disk, and an Adapter over them."""
    path = tmp_path_factory.mktemp("cem-official")
    cfg = Qwen2Config(vocab_size=260, hidden_size=16, intermediate_size=24, num_hidden_layers=LAYERS,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    model = random_model(cfg, seed=1)
    model.save_pretrained(path / "model")
    wrapper = SVFWrapper(model)
    rng = np.random.default_rng(5)
    by_hf = [{m.hf_name: rng.normal(0.3, 1.5, m.rank) for m in wrapper.decomposition.matrices} for _ in range(2)]
    by_hf[1] = {k: v - 2.5 for k, v in by_hf[1].items()}  # mostly negative: raw mixtures with sum(S m) < 0
    experts = {}
    for name, z in zip(("sort", "reverse"), by_hf):
        wrapper.save(path / f"{name}.safetensors", {m.key: z[m.hf_name] for m in wrapper.decomposition.matrices},
                     name=name)
        experts[name] = wrapper.load(path / f"{name}.safetensors", set_current=False)
    adapter = Adapter(wrapper, ByteTokenizer(), experts, max_new_tokens=4, batch_size=4, prompt_len=13)
    return wrapper, by_hf, adapter, path


@pytest.fixture(scope="module")
def llama(setup):
    return setup[:2]


@pytest.fixture(scope="module")
def adapter(setup):
    return setup[2:]


def hf_kernels(model, wrapper) -> dict[str, np.ndarray]:
    """{hf name: W [O, I]} of a model's selected matrices."""
    flat = {".".join(map(str, p)): np.asarray(v[...], np.float64) for p, v in
            nnx.to_flat_state(nnx.state(model, nnx.Param))}
    return {m.hf_name: flat[m.key].reshape(m.flat_shape).T for m in wrapper.decomposition.matrices}


def official_weights(w_hf, alphas, by_hf, *, raw):
    """The official few-shot W' in NumPy, on its own terms: column l of alphas is OFFICIAL_NAMES[l];
    m = sum_k alpha[k, l] z_k (raw; the official) or sum_k alpha[k, l] sigmoid(z_k);
    W' = U diag(S m) V^T * sum S / sum(S m)."""
    out, masks = {}, {}
    for l, name in enumerate(OFFICIAL_NAMES):
        m = sum(alphas[k, l] * (z[name] if raw else 1 / (1 + np.exp(-z[name]))) for k, z in enumerate(by_hf))
        u, s, vt = np.linalg.svd(w_hf[name], full_matrices=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[name] = (u * (s * m)) @ vt * (s.sum() / (s * m).sum())
        masks[name] = m
    return out, masks


def test_alpha_layout_is_the_officials_and_converts(llama):
    wrapper, _ = llama
    dec = wrapper.decomposition
    key_of = {m.hf_name: m.key for m in dec.matrices}
    assert official_matrix_order(dec) == [key_of[n] for n in OFFICIAL_NAMES]
    assert [k.split(".")[-2] for k in dec.keys[:3]] == ["down_proj", "gate_proj", "up_proj"]  # ours: alphabetical
    a_keys = np.arange(12.0).reshape(2, 6)  # columns in dec.keys order
    a_off = alphas_to_official(a_keys, dec)
    for l, name in enumerate(OFFICIAL_NAMES):
        np.testing.assert_array_equal(a_off[:, l], a_keys[:, dec.keys.index(key_of[name])])
    np.testing.assert_array_equal(alphas_from_official(a_off, dec), a_keys)
    np.testing.assert_array_equal(alphas_to_official(np.ones((2, 1)), dec), np.ones((2, 1)))  # [K, 1]: no order
    with pytest.raises(ValueError, match=r"shape \[K, L=6 or 1\], got \(2, 4\)"):
        alphas_to_official(np.ones((2, 4)), dec)
    attn = SVFWrapper(wrapper.model, pattern=r"(attn\.(o|q|v|k)|mlp\.(up|down))_proj").decomposition
    assert [k.split(".")[-2] for k in official_matrix_order(attn)[:6]] == ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                           "up_proj", "down_proj"]


@pytest.mark.parametrize("mix", ["raw", "sigmoid"])
def test_mixing_carries_over_from_the_official_formula(llama, mix):
    wrapper, by_hf = llama
    dec = wrapper.decomposition
    experts = [{m.key: z[m.hf_name].astype(np.float32) for m in dec.matrices} for z in by_hf]
    alphas = np.random.default_rng(2).uniform(0, 1, (2, 6))  # an alphas array in the official layout
    alphas[:, 4] = 0.0  # an all-zero column: the official formula divides by zero there
    want, want_masks = official_weights(hf_kernels(wrapper.model, wrapper), alphas, by_hf, raw=mix == "raw")
    got_masks = mix_masks(alphas, experts, official_matrix_order(dec), mix=mix)
    for name, key in zip(OFFICIAL_NAMES, official_matrix_order(dec)):
        np.testing.assert_allclose(np.asarray(got_masks[key]), want_masks[name], rtol=1e-5, atol=1e-6)
    got = hf_kernels(wrapper.patch_mixture(alphas, experts, mix=mix), wrapper)
    base = hf_kernels(wrapper.model, wrapper)
    totals = {}
    for l, name in enumerate(OFFICIAL_NAMES):
        s = np.linalg.svd(base[name], compute_uv=False)
        totals[name] = float(np.sum(s * want_masks[name]))
        if l == 4:  # documented: a zero mixture keeps the base weights (the official: NaN weights)
            assert totals[name] == 0.0 and np.all(~np.isfinite(want[name]))
            np.testing.assert_allclose(got[name], base[name], atol=1e-5)
            continue
        np.testing.assert_allclose(got[name], want[name], atol=2e-4 * np.abs(want[name]).max())
        assert np.abs(got[name] - base[name]).max() > 1e-3  # a real change, not the base weights
    if mix == "raw":  # the official W' also where sum(S m) < 0 (compose alone would give the base weights there)
        assert any(t < 0 for t in totals.values())
    with pytest.raises(ValueError, match=r"unknown few-shot mixing 'tanh'; expected one of \('sigmoid', 'raw'\)"):
        mix_masks(alphas, experts, official_matrix_order(dec), mix="tanh")


def test_own_correct_loglik():
    assert own_correct_loglik(np.array([-1.0, -3.0, -0.5]), np.array([True, False, True])) == pytest.approx(-0.75)
    assert own_correct_loglik(np.array([-1.0, -2.0]), np.array([False, False])) == 0.0
    with pytest.raises(ValueError, match="two \\[N\\] arrays"):
        own_correct_loglik(np.zeros(3), np.zeros(2, bool))


def test_official_score_by_hand(adapter):
    adapter, _ = adapter
    tok, codec, model = adapter.tokenizer, adapter.codec, adapter.base
    prompts = get_task("sort").examples(5, 0)
    out = rollout_with(model, prompts[:4], codec, exact_match)  # the batch size own_answer_score generates with
    own = out.completions + [""]
    examples = [Example(p.prompt, own[i] if i in (0, 2, 3) else "no such answer", "sort")  # own answer: correct
                for i, p in enumerate(prompts)]
    rows = []
    for i in (0, 2, 3):  # unpadded prompt + the generated ids up to and including the stop token
        prompt = tok.encode(examples[i].prompt)
        gen = out.tokens[i, codec.prompt_len:]
        stops = np.flatnonzero((gen == codec.stop_id) | (gen == tok.eos_id))
        rows.append((prompt, gen[: stops[0] + 1] if len(stops) else gen))
    width = max(len(p) + len(g) for p, g in rows)  # right padding: causal, so it changes no earlier position
    ids = np.array([np.pad(np.concatenate(r), (0, width - len(r[0]) - len(r[1])), constant_values=tok.pad_id)
                    for r in rows])
    z = logits(model, ids).astype(np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    hand = [np.mean([logp[j, len(p) - 1 + t, g[t]] for t in range(len(g))]) for j, (p, g) in enumerate(rows)]
    acc, ll = adapter.own_answer_score(model, examples)  # 5 examples: two batches, the second one padded
    assert acc == pytest.approx(3 / 5) and ll == pytest.approx(np.mean(hand), abs=1e-4) and ll < 0
    assert adapter.own_answer_score(model, [Example(p.prompt, "x", "sort") for p in prompts]) == (0.0, 0.0)


def test_few_shot_options_are_seeded_and_score_as_asked(adapter):
    adapter, _ = adapter
    shots, test = get_task("sort").examples(3, 3), get_task("sort").examples(2, 4)
    kw = dict(iterations=2, pop_size=4, num_elites=2)
    runs = {}
    for mix, score, seed in [("sigmoid", "reference", 0), ("sigmoid", "reference", 0), ("sigmoid", "reference", 1),
                             ("raw", "official", 0)]:
        runs.setdefault((mix, score, seed), []).append(adapter.few_shot(shots, test, mix=mix, score=score, seed=seed,
                                                                        **kw))
    for (mix, score, seed), results in runs.items():
        (acc, res), *again = results
        assert res.alphas.shape == (2, 6) and 0 <= res.alphas.min() and res.alphas.max() <= 1 and 0 <= acc <= 1
        for acc2, res2 in again:  # same seed, same search
            assert acc2 == acc and res2.history == res.history
            np.testing.assert_array_equal(res2.alphas, res.alphas)
        model = adapter.wrapper.patch_mixture(res.alphas, [adapter.experts[n] for n in adapter.names], mix=mix)
        if score == "official":
            want = adapter.own_answer_score(model, shots)
        else:
            want = adapter.accuracy(model, shots), adapter.answer_loglik(model, shots)
        assert (res.score, res.loglik) == pytest.approx(want, abs=1e-5)
    assert not np.array_equal(runs["sigmoid", "reference", 0][0][1].alphas, runs["sigmoid", "reference", 1][0][1].alphas)
    with pytest.raises(ValueError, match=r"unknown few-shot CEM score 'mean'; expected one of \('reference', 'official'\)"):
        adapter.few_shot(shots, test, score="mean")


def test_adapt_cli_cem_options(adapter, tmp_path, capsys):
    _, path = adapter
    out = tmp_path / "adapt.json"
    common = ["adapt", "--model", str(path / "model"), "--experts", f"sort={path / 'sort.safetensors'}",
              f"reverse={path / 'reverse.safetensors'}"]
    svf_cli.main([*common, "--tasks", "sort", "--strategies", "few-shot", "--shots", "1", "--n-test", "1",
                  "--cem-iterations", "1", "--cem-mix", "raw", "--cem-score", "official", "--batch-size", "4",
                  "--max-new-tokens", "4", "--json", str(out)])
    results = json.loads(out.read_text())
    assert results["cem"] == {"mix": "raw", "score": "official", "iterations": 1, "shots": 1}
    assert 0 <= results["per_task"]["sort"]["few-shot"] <= 1
    with pytest.raises(SystemExit):
        svf_cli.main([*common, "--cem-mix", "tanh"])
    assert "argument --cem-mix: invalid choice: 'tanh'" in capsys.readouterr().err
