"""int8 weight-only quantisation (jaxmodels.quantize, jaxmodels.layers.int8): the quantised layers against a
float64 product with their dequantised weights, in every path (decode kernels, XLA dots, plain); cached greedy
decoding against the full forward; our checkpoint round trip bit for bit; Q8_0 GGUF files (written with
tests/test_gguf.py's helpers) against gguf's own dequantisation; and the refusals.
"""

import json

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

import jaxmodels
from jaxmodels import LlamaConfig, LlamaForCausalLM, quantize
from jaxmodels.checkpoint import flat_params
from jaxmodels.family import family_of
from jaxmodels.gguf import GGUFError
from jaxmodels.hf.source import CheckpointError
from jaxmodels.layers import int8, skinny
from jaxmodels.layers.linear import Embed, Linear
from jaxmodels.pretrained import convert_to_hf
from tests.test_gguf import Q, T, source_model, write_gguf

Q8 = gguf.GGMLQuantizationType.Q8_0
PATHS = ["tuned", "plain"]


def _split_q8_0(stored: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """gguf.quants.quantize(w [N, K], Q8_0) bytes -> (int8 [N, K], float16 scales [N, K/32])."""
    blocks = stored.reshape(rows, -1, 34)
    return blocks[..., 2:].copy().view(np.int8).reshape(rows, -1), blocks[..., :2].copy().view(np.float16)[..., 0]


def test_quantize_rows_is_gguf_q8_0_and_per_channel_rounds_to_half_a_step():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((19, 96)) * rng.uniform(1e-3, 5.0, (19, 1))).astype(np.float32)
    w[4, 32:64] = 0.0  # an all-zero block gets scale 0, values 0
    q, scale = int8.quantize_rows(jnp.asarray(w), 32)
    ref_q, ref_scale = _split_q8_0(gguf.quants.quantize(w, Q8), 19)
    assert q.dtype == jnp.int8 and scale.dtype == jnp.float16 and scale.shape == (19, 3)
    np.testing.assert_array_equal(np.asarray(q), ref_q)
    np.testing.assert_array_equal(np.asarray(scale).view(np.uint16), ref_scale.view(np.uint16))
    np.testing.assert_array_equal(np.asarray(int8.dequantize_rows(q, scale)),
                                  gguf.quants.dequantize(gguf.quants.quantize(w, Q8), Q8))
    # Values just below the half-way points of blocks whose step d = max / 127 a multiplication by 1/127 rounds
    # differently from the division (XLA's rewrite of x / 127): only the division gives gguf's values.
    amax = rng.uniform(0.01, 1, 4096).astype(np.float32)
    amax = amax[amax / np.float32(127) != amax * np.float32(1 / np.float32(127))][:16]
    halves = np.arange(31, dtype=np.float32) * 4 + 0.5
    edge = np.stack([np.concatenate([[a], np.nextafter(halves * (a / np.float32(127)), np.float32(0))]) for a in amax])
    np.testing.assert_array_equal(np.asarray(int8.quantize_rows(jnp.asarray(edge, jnp.float32), 32)[0]),
                                  _split_q8_0(gguf.quants.quantize(edge.astype(np.float32), Q8), len(edge))[0])
    q, scale = int8.quantize_rows(jnp.asarray(w), None)
    assert scale.dtype == jnp.float32 and scale.shape == (19,) and int(jnp.abs(q).max()) == 127
    err = np.abs(np.asarray(int8.dequantize_rows(q, scale)) - w)
    assert np.all(err <= np.asarray(scale)[:, None] * (0.5 + 1e-6))


def _float64_linear(x, lin: Linear) -> np.ndarray:
    w = np.asarray(int8.dequantize_kn(lin.flat_kernel(), lin.flat_scale()), np.float64)  # [K, N]
    x2 = np.asarray(x, np.float64).reshape(*x.shape[: x.ndim - len(lin.in_shape)], -1)
    y = x2 @ w + (0 if lin.bias is None else np.asarray(lin.flat_bias(), np.float64))
    return y.reshape(*y.shape[:-1], *lin.out_shape)


@pytest.mark.parametrize("block", [None, 32])
@pytest.mark.parametrize("in_shape, out_shape", [(64, (5, 7)), ((3, 32), 13)])
def test_int8_linear_matches_a_float64_product_in_every_path(block, in_shape, out_shape):
    lin = Linear(in_shape, out_shape, use_bias=True, rngs=nnx.Rngs(0))
    lin.bias[...] = jax.random.normal(jax.random.key(1), lin.bias.shape)
    lin.quantize_int8(block)
    assert lin.kernel[...].dtype == jnp.int8
    assert lin.scale.shape == int8.scale_shape(64 if in_shape == 64 else 96, lin.out_shape, block)
    lead = (in_shape,) if isinstance(in_shape, int) else in_shape
    for rows in (3, 37):  # decode kernels (<= 16 rows), then XLA dots
        x = jax.random.normal(jax.random.key(rows), (rows, 1, *lead))
        ref = _float64_linear(x, lin)
        for layers in PATHS:
            y = np.asarray(jax.jit(lambda x, layers=layers: lin(x, layers=layers))(x))
            np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6 * np.abs(ref).max(), err_msg=f"{rows} {layers}")


@pytest.mark.parametrize("block", [None, 32])
def test_int8_embed_lookup_and_head_match_float64(block):
    emb = Embed(41, 64, rngs=nnx.Rngs(2))
    emb.quantize_int8(block)
    w = np.asarray(int8.dequantize_rows(emb.weight[...], emb.scale[...]), np.float64)  # [V, D]
    ids = jnp.asarray([[0, 40, 7], [3, 3, 12]], jnp.int32)
    np.testing.assert_array_equal(np.asarray(emb(ids)), w[np.asarray(ids)].astype(np.float32))
    assert emb.dtype == jnp.float32
    for rows in (2, 19):
        x = jax.random.normal(jax.random.key(rows), (rows, 1, 64))
        ref = np.asarray(x, np.float64) @ w.T
        for layers in PATHS:
            y = np.asarray(jax.jit(lambda x, layers=layers: emb.decode(x, layers=layers))(x))
            np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6 * np.abs(ref).max(), err_msg=f"{rows} {layers}")


@pytest.mark.parametrize("block", [None, 32])
def test_decode_kernel_gradients_are_autodiff_of_the_dequantised_product(block):
    """Scales, biases and inputs get the gradients JAX gives the plain formula; the int8 values none."""
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.standard_normal((96, 40)), jnp.float32)
    q, s = int8.quantize_kn(w, block)
    qt, st = int8.quantize_rows(w.T, block)
    x, b = jnp.asarray(rng.standard_normal((2, 96)), jnp.float32), jnp.asarray(rng.standard_normal(40), jnp.float32)

    def kernels(x, s, b, st):
        (y,) = skinny.projections(x, (q,), (s,), (b,))
        return jnp.sum(jnp.sin(y)) + jnp.sum(jnp.cos(skinny.matmul_t(x, qt, st)))

    def plain(x, s, b, st):
        y = x @ int8.dequantize_kn(q, s) + b
        return jnp.sum(jnp.sin(y)) + jnp.sum(jnp.cos(x @ int8.dequantize_rows(qt, st).T))

    got, want = (jax.grad(f, argnums=(0, 1, 2, 3))(x, s, b, st) for f in (kernels, plain))
    for a, e in zip(got, want):  # sums in another order: 1e-5 of the largest entry (float16 scales: an ulp)
        tol = (1e-5 if a.dtype == jnp.float32 else 1e-3) * float(jnp.abs(e.astype(jnp.float32)).max())
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(e, np.float32), rtol=0, atol=tol)


BLOCK_SIZES = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=64)


@pytest.mark.parametrize("block, tied", [(None, False), (32, True)])
def test_cached_greedy_decode_equals_the_full_forward(block, tied):
    config = LlamaConfig.tiny(tie_word_embeddings=tied) if block is None else LlamaConfig(
        **BLOCK_SIZES, tie_word_embeddings=tied)
    model = quantize.quantize_int8(LlamaForCausalLM(config, rngs=nnx.Rngs(4)), block_size=block)
    prompt = np.random.default_rng(5).integers(0, config.vocab_size, (2, 7))
    tokens = np.asarray(jaxmodels.generate(model, prompt, 9))
    logits = np.asarray(model(jnp.asarray(tokens[:, :-1], jnp.int32)).logits)
    np.testing.assert_array_equal(tokens[:, 7:], logits[:, 6:].argmax(-1))


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("float") / "m"
    LlamaForCausalLM(LlamaConfig(**BLOCK_SIZES), rngs=nnx.Rngs(6)).save_pretrained(path)
    return path


def _same_params(a, b):
    pa, pb = flat_params(a), flat_params(b)
    assert sorted(pa) == sorted(pb)
    for k in pa:
        assert pa[k].dtype == pb[k].dtype and np.array_equal(np.asarray(pa[k]), np.asarray(pb[k])), k


@pytest.mark.parametrize("block", [None, 32])
def test_save_and_load_are_bit_exact_and_the_config_records_it(float_dir, tmp_path, block):
    model = quantize.quantize_int8(jaxmodels.from_pretrained(float_dir), block_size=block)
    model.save_pretrained(tmp_path / "q", max_shard_size=40_000)  # shards too
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["quantization"] == {"method": "int8", "block_size": block}
    loaded = jaxmodels.from_pretrained(tmp_path / "q")
    assert quantize.record(loaded) == {"method": "int8", "block_size": block}
    _same_params(model, loaded)
    assert flat_params(loaded)["blocks.0.mlp.down_proj.scale"].dtype == (jnp.float32 if block is None else jnp.float16)
    _same_params(loaded, jaxmodels.from_pretrained(tmp_path / "q", dtype="int8"))
    if block is None:  # dtype="int8" on a float checkpoint: quantise_int8 of the float model
        _same_params(model, jaxmodels.from_pretrained(float_dir, dtype=jnp.int8))


def test_int8_checkpoint_refusals(float_dir, tmp_path):
    model = jaxmodels.from_pretrained(float_dir, dtype="int8")
    model.save_pretrained(tmp_path / "q")
    with pytest.raises(ValueError, match=r"holds int8 weights \(quantization in config.json\); they load as int8 "
                                         r"\(dtype None or 'int8'\), not as bfloat16"):
        jaxmodels.from_pretrained(tmp_path / "q", dtype="bfloat16")
    with pytest.raises(ValueError, match="an int8 model has no Hugging Face export"):
        model.export_hf(tmp_path / "hf")
    with pytest.raises(ValueError, match="holds int8 weights .* which have no Hugging Face export"):
        convert_to_hf(tmp_path / "q", tmp_path / "hf")

    config = json.loads((tmp_path / "q" / "config.json").read_text())
    (tmp_path / "q" / "config.json").write_text(json.dumps({**config, "quantization": {"method": "int4"}}))
    with pytest.raises(ValueError, match=r"config.json: quantization must be \{\"method\": \"int8\""):
        jaxmodels.from_pretrained(tmp_path / "q")
    (tmp_path / "q" / "config.json").write_text(json.dumps(config))

    tensors = load_file(str(tmp_path / "q" / "model.safetensors"))
    tensors["blocks.1.attn.k_proj.kernel"] = tensors["blocks.1.attn.k_proj.kernel"].astype(np.float32)
    tensors["embed.scale"] = tensors["embed.scale"][:-1]
    del tensors["blocks.0.attn.o_proj.scale"]
    save_file(tensors, str(tmp_path / "q" / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        jaxmodels.from_pretrained(tmp_path / "q")
    assert "3 problem(s) with the int8 weights" in str(err.value)
    for line in ("tensor 'blocks.1.attn.k_proj.kernel' is float32, expected int8",
                 "tensor 'embed.scale' has shape (96,), expected (97,)",
                 "missing tensor 'blocks.0.attn.o_proj.scale' (expected float32 (64,))"):
        assert line in str(err.value)


def test_quantize_refusals():
    model = LlamaForCausalLM(LlamaConfig.tiny(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"block_size must be None \(a scale per output channel\) or 32"):
        quantize.quantize_int8(model, block_size=16)
    with pytest.raises(ValueError, match=r"Q8_0 blocks need rows of a multiple of 32 values, got \[N, K\] = "):
        quantize.quantize_int8(model, block_size=32)  # hidden size 24
    model = quantize.quantize_int8(LlamaForCausalLM(LlamaConfig.tiny(), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"the model is int8 already \('blocks.0.attn.k_proj' has a scale\)"):
        quantize.quantize_int8(model)
    ids = jnp.zeros((1, 3), jnp.int32)
    with pytest.raises(TypeError, match="grad requires real- or complex-valued inputs"):
        nnx.grad(lambda m: jnp.sum(m(ids).logits))(model)


# -- Q8_0 GGUF ---------------------------------------------------------------------------------------------------

ALL_Q8_0 = {kind: Q8 for kind in T}


@pytest.mark.parametrize("kind, tied, types", [("llama", True, ALL_Q8_0), ("qwen2", False, {**ALL_Q8_0, T.ATTN_V: Q.F16})])
def test_q8_0_gguf_loads_with_gguf_dequantised_values(tmp_path, kind, tied, types):
    """Every Q8_0 tensor's int8 values and float16 scales multiply to gguf.quants.dequantize of the file (the llama
    q/k rows un-permuted, scales with them); an F16 tensor is quantised as Q8_0 on load."""
    config, hf = source_model(kind, tied)
    expected = write_gguf(tmp_path / "m.gguf", kind, config, hf, types)
    model = jaxmodels.from_pretrained(tmp_path / "m.gguf", dtype="int8")
    assert quantize.record(model) == {"method": "int8", "block_size": 32}
    table = family_of(config).table
    for name, layer in quantize.layers(model):
        weight = layer.kernel if isinstance(layer, Linear) else layer.weight
        ours = (int8.dequantize_kn(layer.flat_kernel(), layer.flat_scale()).reshape(weight.shape)
                if isinstance(layer, Linear) else int8.dequantize_rows(weight[...], layer.scale[...]))
        key = f"{name}.{'kernel' if isinstance(layer, Linear) else 'weight'}"
        hf_key, transform = table.to_hf(key)
        want = expected[hf_key]
        if types[T.ATTN_V] != Q8 and ".v_proj." in key:  # F16 in the file: quantised here as llama.cpp would
            want = gguf.quants.dequantize(gguf.quants.quantize(want, Q8), Q8)
        np.testing.assert_array_equal(np.asarray(transform.to_hf(np.asarray(ours))), want, err_msg=key)
    floats = jaxmodels.from_pretrained(tmp_path / "m.gguf")
    ids = jnp.asarray(np.random.default_rng(8).integers(0, config.vocab_size, (2, 21)), jnp.int32)
    want = np.asarray(floats(ids).logits)
    atol = 1e-5 if types[T.ATTN_V] == Q8 else 1e-2
    np.testing.assert_allclose(np.asarray(model(ids).logits), want, rtol=0, atol=atol)
    model.save_pretrained(tmp_path / "ours")
    _same_params(model, jaxmodels.from_pretrained(tmp_path / "ours"))


def test_q8_0_gguf_refuses_other_quantised_types(tmp_path):
    config, hf = source_model("llama", True)
    write_gguf(tmp_path / "m.gguf", "llama", config, hf, {**ALL_Q8_0, T.FFN_DOWN: Q.Q4_1})
    with pytest.raises(GGUFError, match=r"tensor 'blk.0.ffn_down.weight' is Q4_1 of shape \[64, 96\]; int8 loading "
                                        r"takes 2-D Q8_0 tensors .* load the file without dtype='int8'"):
        jaxmodels.from_pretrained(tmp_path / "m.gguf", dtype="int8")
