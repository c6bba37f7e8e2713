"""SVF formula and invariants, gradients to z, the on-disk SVD cache, and experts on disk."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from jaxmodels import Hyformer, HyformerConfig, LlamaForCausalLM, Qwen2Config
from jaxmodels.svf import (DEFAULT_PATTERN, ExpertMismatchError, SVFWrapper, SvdComponent, decompose,
                           load_z_checkpoint, mask_from_z, save_z_checkpoint)
from jaxmodels.svf.patch import masks_from_z
from tests.svf.helpers import logits

CFG = HyformerConfig.tiny()


@pytest.fixture(scope="module")
def model():
    return Hyformer.from_config(CFG, seed=3)


@pytest.fixture(scope="module")
def wrapper(model):
    return SVFWrapper(model)


def qwen(hidden=24, ffn=40):
    cfg = Qwen2Config(vocab_size=29, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))


def reference_compose(w, m):
    """The official formula in float64 NumPy on the torch layout [O, I]: U diag(S m) V^T * sum S / sum(S m)."""
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    return (u * (s * m)) @ vt * (s.sum() / (s * m).sum())


def test_formula_matches_a_numpy_reference_on_both_layouts():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((13, 7))  # ours [I, O]
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    comp = SvdComponent(jnp.asarray(u, jnp.float32), jnp.asarray(s, jnp.float32), jnp.asarray(vt.T, jnp.float32))
    z = rng.standard_normal(7)
    got = np.asarray(comp.compose(mask_from_z(jnp.asarray(z, jnp.float32))))
    m = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(got, reference_compose(w, m), atol=1e-5)
    np.testing.assert_allclose(got.T, reference_compose(w.T, m), atol=1e-5)  # HF layout: same mask, transposed W'


def test_uniform_mask_reproduces_w_and_z_count(model, wrapper):
    params = {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    for key in wrapper.keys:
        comp = wrapper.components[key]
        w = params[key].reshape(comp.u.shape[0], comp.v.shape[0])
        for m in (0.5, 0.03, 1.0):
            got = np.asarray(comp.compose(jnp.full(comp.rank, m)))
            assert np.linalg.norm(got - w) / np.linalg.norm(w) <= 1e-5
    assert wrapper.num_z == sum(min(params[k].reshape(-1, params[k].shape[-1]).shape) for k in wrapper.keys)
    assert wrapper.num_z == 2 * 3 * 24 == sum(v.size for v in wrapper.z_vectors.values())
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 17, (2, 11)))
    uniform = wrapper.patch_weights({k: jnp.full_like(v, 2.5) for k, v in wrapper.z_vectors.items()})
    np.testing.assert_allclose(logits(uniform, ids), logits(model, ids), atol=1e-5)


def test_pattern_selects_attention_with_head_shaped_kernels():
    m = qwen()
    w = SVFWrapper(m, pattern=r"attn\.(o|q)_proj")
    names = [x.hf_name for x in w.decomposition.matrices]
    assert names[:2] == ["model.layers.0.self_attn.o_proj.weight", "model.layers.0.self_attn.q_proj.weight"]
    assert [x.hf_shape for x in w.decomposition.matrices[:2]] == [(24, 24), (24, 24)]
    assert w.num_z == 4 * 24
    ids = jnp.arange(9)[None]
    z = jax.tree.map(lambda v: 3 * jnp.ones_like(v), w.z_vectors)
    np.testing.assert_allclose(logits(w.patch_weights(z), ids), logits(m, ids), atol=1e-5)


def test_gradient_reaches_every_z_and_base_stays_frozen(model, wrapper):
    ids = jnp.asarray(np.random.default_rng(2).integers(0, 17, (2, 9)))
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(wrapper.params))

    @jax.jit
    def loss(z, params, ids):
        patched = wrapper.merge(wrapper.patched_params(params, masks_from_z(z)))
        return patched(ids, labels=ids).loss

    grads = jax.grad(loss)(wrapper.z_vectors, wrapper.params, ids)
    assert set(grads) == set(wrapper.keys)
    for key, g in grads.items():
        assert g.shape == wrapper.z_vectors[key].shape and float(jnp.abs(g).max()) > 0, key
    after = jax.tree.map(np.asarray, nnx.to_pure_dict(wrapper.params))
    jax.tree.map(np.testing.assert_array_equal, before, after)


def test_patch_weights_leaves_the_base_model_alone(model, wrapper):
    ids = jnp.arange(7)[None]
    base = np.asarray(logits(model, ids))
    z = {k: jnp.linspace(-3, 3, v.shape[0]) for k, v in wrapper.z_vectors.items()}
    patched = wrapper.patch_weights(z)
    assert np.abs(np.asarray(logits(patched, ids)) - base).max() > 1e-4
    np.testing.assert_array_equal(np.asarray(logits(model, ids)), base)


def test_pattern_selecting_nothing_is_refused(model):
    with pytest.raises(ValueError, match=r"SVF pattern 'lm_head' selects no matrices of this hyformer model; it "
                                         r"is searched in the Linear kernels' paths, e.g. blocks\.0\.attn"):
        SVFWrapper(model, pattern="lm_head")
    with pytest.raises(ValueError, match=r"not a valid regular expression"):
        SVFWrapper(model, pattern="mlp(")


def test_svd_cache_is_written_once_and_reused(model, tmp_path):
    first = decompose(model, cache_dir=tmp_path)
    files = list(tmp_path.glob("svd-*.safetensors"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    second = decompose(model, cache_dir=tmp_path)
    assert files[0].stat().st_mtime_ns == mtime
    for k in first.keys:
        np.testing.assert_array_equal(first.components[k].s, second.components[k].s)
    other = decompose(model, r"attn\.q_proj", cache_dir=tmp_path)  # another pattern, another file
    assert len(list(tmp_path.glob("svd-*.safetensors"))) == 2 and other.num_z == 2 * 24
    files[0].write_bytes(b"garbage")  # a broken cache is rebuilt, not trusted
    rebuilt = decompose(model, cache_dir=tmp_path)
    np.testing.assert_array_equal(rebuilt.components[first.keys[0]].s, first.components[first.keys[0]].s)


def test_expert_round_trip_is_keyed_by_hf_names(tmp_path):
    m = qwen()
    w = SVFWrapper(m, seed=5)
    path = save_z_checkpoint(w, tmp_path / "math.safetensors", name="math")
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        keys = sorted(f.keys())
        manifest = json.loads(f.metadata()["manifest"])
    assert keys[0] == "model.layers.0.mlp.down_proj.weight" and len(keys) == 6
    assert manifest["model_type"] == "qwen2" and manifest["name"] == "math"
    assert manifest["matrices"]["model.layers.1.mlp.gate_proj.weight"] == {"shape": [40, 24], "rank": 24}
    other = SVFWrapper(m, seed=9)
    z = load_z_checkpoint(other, path)
    for k in w.keys:
        np.testing.assert_array_equal(z[k], w.z_vectors[k])
        np.testing.assert_array_equal(other.z_vectors[k], w.z_vectors[k])


def test_an_expert_for_another_model_is_refused(tmp_path, wrapper):
    path = SVFWrapper(qwen()).save(tmp_path / "qwen.safetensors")
    wider = SVFWrapper(qwen(hidden=24, ffn=44))
    with pytest.raises(ExpertMismatchError, match=r"does not fit this qwen2 model .*model\.layers\.0\.mlp\.down_proj"
                                                  r"\.weight: expert has weight shape \[24, 40\] and z of shape "
                                                  r"\[24\], this qwen2 model .* has weight shape \[24, 44\]"):
        wider.load(path)
    with pytest.raises(ExpertMismatchError, match=r"made for model_type 'qwen2', this is 'hyformer'; 6 matrix\(es\) "
                                                  r"of this hyformer model .* missing from the expert, e.g. "
                                                  r"\['blocks\.0\.mlp\.down_proj\.weight'"):
        wrapper.load(path)
    attn_only = SVFWrapper(qwen(), pattern=r"attn\.q_proj")
    with pytest.raises(ExpertMismatchError, match=r"6 matrix\(es\) that this qwen2 model \(pattern 'attn\\\\.q_proj'"
                                                  r"\) does not select"):
        attn_only.load(path)
    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ExpertMismatchError, match=r"no jaxmodels-svf-expert manifest"):
        wrapper.load(tmp_path / "plain.safetensors")
    with pytest.raises(FileNotFoundError, match=r"SVF expert .*absent\.safetensors: no such file"):
        wrapper.load(tmp_path / "absent.safetensors")


def test_default_pattern_matches_the_official_mlp_choice():
    names = [x.hf_name for x in decompose(qwen()).matrices]
    assert DEFAULT_PATTERN and all(".mlp." in n for n in names) and len(names) == 6
