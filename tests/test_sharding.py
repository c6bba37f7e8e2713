"""Logical axes on every parameter, the rules that map them to a mesh, sharded loading and sharded generate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, PartitionSpec as P

from jaxmodels import Hyformer, HyformerConfig, sharding
from jaxmodels.gemma3 import Gemma3Config, Gemma3ForCausalLM
from jaxmodels.layers.axes import axes_of, param
from jaxmodels.llama import LlamaConfig, LlamaForCausalLM
from jaxmodels.qwen3 import Qwen3Config, Qwen3ForCausalLM

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)


def abstract(cls, config):
    return nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))


def mesh_shape(**sizes):
    return AbstractMesh(tuple(sizes.get(a, 1) for a in sharding.MESH_AXES), sharding.MESH_AXES)


def flat_specs(model, mesh, rules=sharding.DEFAULT_RULES):
    specs = sharding.state_specs(nnx.state(model, nnx.Param), mesh, rules)
    return {".".join(map(str, k)): v.get_value() for k, v in nnx.to_flat_state(specs)}


MODELS = {
    "llama": (LlamaForCausalLM, LlamaConfig(**TINY)),
    "llama-untied-bias": (LlamaForCausalLM, LlamaConfig(**TINY, attention_bias=True, mlp_bias=True)),
    "qwen3": (Qwen3ForCausalLM, Qwen3Config(**TINY, head_dim=16)),
    "gemma3": (Gemma3ForCausalLM, Gemma3Config(**TINY, head_dim=16, tie_word_embeddings=True)),
    "hyformer": (Hyformer, HyformerConfig(vocab_size=64, d_model=32, n_heads=4, n_layers=2, max_seq_len=32,
                                          num_prediction_tasks=3)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_parameter_names_its_axes(name):
    cls, config = MODELS[name]
    flat = nnx.to_flat_state(nnx.state(abstract(cls, config), nnx.Param))
    unnamed = [k for k, v in flat if axes_of(v) is None or len(axes_of(v)) != len(v.shape)]
    assert not unnamed
    named = {".".join(map(str, k)): axes_of(v) for k, v in flat}
    assert named["embed.weight"] == ("vocab", "embed")
    assert named["blocks.0.attn.q_proj.kernel"] == ("embed", "heads", "head_dim")
    assert named["blocks.0.attn.k_proj.kernel"] == ("embed", "kv_heads", "head_dim")
    assert named["blocks.0.attn.o_proj.kernel"] == ("heads", "head_dim", "embed")
    assert named["blocks.0.mlp.down_proj.kernel"] == ("mlp", "embed")
    assert named["final_norm.weight"] == ("norm",)


def test_default_rules_fsdp_and_tensor():
    cls, config = MODELS["llama-untied-bias"]
    specs = flat_specs(abstract(cls, config), mesh_shape(fsdp=2, tensor=2))
    assert specs["blocks.0.attn.q_proj.kernel"] == P("fsdp", "tensor")
    assert specs["blocks.0.attn.q_proj.bias"] == P("tensor")
    assert specs["blocks.0.attn.o_proj.kernel"] == P("tensor", None, "fsdp")
    assert specs["blocks.0.mlp.gate_proj.kernel"] == P("fsdp", "tensor")
    assert specs["blocks.0.mlp.down_proj.kernel"] == P("tensor", "fsdp")
    assert specs["embed.weight"] == P("tensor", "fsdp")
    assert specs["lm_head.weight"] == P("tensor", "fsdp")
    assert specs["blocks.0.input_norm.weight"] == P()
    # axes of size 1 are left out: a data-only mesh replicates every parameter
    assert set(flat_specs(abstract(cls, config), mesh_shape(data=4)).values()) == {P()}


def test_a_mesh_axis_is_used_once_per_parameter():
    rules = (("embed", "tensor"), ("mlp", "tensor"))
    spec = sharding.logical_spec(("embed", "mlp"), (32, 48), mesh_shape(tensor=2), rules)
    assert spec == P("tensor")  # the first dimension that asks for the axis gets it
    assert sharding.logical_spec(("embed", "mlp"), (32, 48), mesh_shape(fsdp=2, tensor=2),
                                 (("embed", ("fsdp", "tensor")),)) == P(("fsdp", "tensor"))


def test_indivisible_dimension_names_parameter_and_axis():
    cls, config = MODELS["llama"]  # 2 kv heads
    with pytest.raises(sharding.ShardingError, match=r"blocks\.0\.attn\.k_proj\.kernel: dimension 1 \(kv_heads, "
                                                     r"size 2\) is not divisible by mesh axis tensor=4"):
        flat_specs(abstract(cls, config), mesh_shape(tensor=4))


@pytest.mark.parametrize("spec, message", [
    ("model=2", "expected comma-separated axis=size with axes data, fsdp, tensor"),
    ("data=0", "sizes >= 1"),
    ("data=x", "expected comma-separated"),
])
def test_parse_mesh_refuses(spec, message):
    with pytest.raises(sharding.ShardingError, match=message):
        sharding.parse_mesh(spec)


def test_make_mesh_device_count_and_rules_errors():
    with pytest.raises(sharding.ShardingError, match=r"needs 8 devices, found 1 .*device_count=8"):
        sharding.make_mesh({"fsdp": 8})
    with pytest.raises(sharding.ShardingError, match="unknown logical axis 'experts'"):
        sharding.check_rules((("experts", "tensor"),))
    with pytest.raises(sharding.ShardingError, match="unknown mesh axes"):
        sharding.check_rules((("mlp", "model"),))
    with pytest.raises(sharding.ShardingError, match="two rules"):
        sharding.check_rules((("mlp", "tensor"), ("mlp", None)))
    with pytest.raises(ValueError, match="name 1 dimensions; the parameter has shape"):
        param(jnp.zeros((2, 3)), ("embed",))


def test_batch_split_and_check():
    assert sharding.batch_spec(2) == P(("data", "fsdp"), None)
    with pytest.raises(sharding.ShardingError, match="batch size 6 is not divisible .* multiple of 4"):
        sharding.check_batch(6, mesh_shape(data=2, fsdp=2))


def test_llama_7b_shapes_on_64_devices():
    """Llama-2-7B abstractly (nnx.eval_shape, nothing allocated) on fsdp=8 x tensor=8: every matrix is split
    64 ways, so each device holds 1/64 of all but the norms."""
    config = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    model = abstract(LlamaForCausalLM, config)
    mesh = mesh_shape(fsdp=8, tensor=8)
    flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    specs = dict(nnx.to_flat_state(sharding.state_specs(nnx.state(model, nnx.Param), mesh)))
    total = per_device = 0
    for key, var in flat.items():
        spec = specs[key].get_value()
        ways = np.prod([mesh.shape[a] for part in spec if part for a in ((part,) if isinstance(part, str) else part)])
        total += np.prod(var.shape) * 4
        per_device += np.prod(var.shape) * 4 / ways
        if len(var.shape) > 1:
            assert ways == 64, (key, spec)
    assert 6.7e9 < total / 4 < 6.8e9
    norms = (2 * 32 + 1) * 4096 * 4
    assert per_device == pytest.approx((total - norms) / 64 + norms)


def test_optimizer_state_follows_the_parameters():
    import optax

    cls, config = MODELS["llama"]
    params = nnx.state(abstract(cls, config), nnx.Param)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), sharding.MESH_AXES)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    shardings = sharding.state_shardings(params, mesh)
    opt = sharding.optimizer_shardings(tx, jax.eval_shape(tx.init, params), shardings, mesh)
    assert jax.tree.structure(opt) == jax.tree.structure(jax.eval_shape(tx.init, params))


MULTI_DEVICE = textwrap.dedent("""
    import json, sys, tempfile
    import numpy as np
    import jax, jax.numpy as jnp
    from flax import nnx
    import jaxmodels
    from jaxmodels import sharding
    from jaxmodels.llama import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=64)
    path = tempfile.mkdtemp() + "/m"
    LlamaForCausalLM(config, rngs=nnx.Rngs(0)).save_pretrained(path)
    ids = np.random.default_rng(0).integers(0, 96, (4, 7))
    one = jaxmodels.from_pretrained(path)
    ref, logits = np.asarray(jaxmodels.generate(one, ids, 10)), np.asarray(one(jnp.asarray(ids)).logits)
    out = {}
    for spec in ["tensor=4", "data=2,tensor=2", "fsdp=2,tensor=2"]:
        mesh = sharding.make_mesh(sharding.parse_mesh(spec))
        model = jaxmodels.from_pretrained(path, mesh=mesh)
        kernel = model.blocks[0].mlp.down_proj.kernel[...]
        out[spec] = dict(tokens=bool((np.asarray(jaxmodels.generate(model, ids, 10)) == ref).all()),
                         logits=float(np.abs(np.asarray(model(jnp.asarray(ids)).logits) - logits).max()),
                         spec=str(kernel.sharding.spec), shard=list(kernel.addressable_shards[0].data.shape))
    print(json.dumps(out))
""")


def test_sharded_loading_and_generate_on_four_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, "-c", MULTI_DEVICE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["tensor=4"]["spec"] == "P('tensor',)" and out["tensor=4"]["shard"] == [12, 32]
    assert out["fsdp=2,tensor=2"]["shard"] == [24, 16]
    for spec, result in out.items():
        assert result["tokens"], spec
        assert result["logits"] < 1e-5, (spec, result)
