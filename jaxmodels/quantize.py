"""int8 weight-only quantisation: every `Linear` projection and every `Embed` (the embedding, a tied or untied
LM head) of a model, with symmetric int8 values and a scale per output channel or per Q8_0 block.

    model = jaxmodels.from_pretrained("smol", dtype="int8")      # quantised on load, a scale per output channel
    jaxmodels.quantize.quantize_int8(model)                      # or in place on a loaded float model
    jaxmodels.quantize.quantize_int8(model, block_size=32)       # llama.cpp's Q8_0: a float16 scale per 32 inputs
    model.save_pretrained("smol-int8")                           # int8 values and scales; config.json records it
    jaxmodels.from_pretrained("smol-int8")                       # back bit for bit
    jaxmodels.from_pretrained("model-Q8_0.gguf", dtype="int8")   # the file's int8 values and scales as they are

The array math is `jaxmodels.layers.int8`; the layers compute with it (`jaxmodels.layers.linear`). Norms and
biases stay as they are; activations are float32. The int8 values take no gradient (JAX refuses to
differentiate with respect to integers); their scales and every other parameter do. Measured speed and
drift, and the limits: docs/quantization.md.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels.checkpoint import QUANTIZATION_KEY
from jaxmodels.hf.convert import param_key
from jaxmodels.hf.source import CheckpointError
from jaxmodels.layers import int8
from jaxmodels.layers.linear import Embed, Linear

METHOD = "int8"
_WEIGHT = {Linear: "kernel", Embed: "weight"}


def layers(model: nnx.Module) -> list[tuple[str, Linear | Embed]]:
    """("blocks.0.attn.q_proj", module) for every Linear and Embed of the model, in tree order."""
    return [(param_key(path), m) for path, m in nnx.iter_modules(model) if isinstance(m, (Linear, Embed))]


def quantize_int8(model: nnx.Module, *, block_size: int | None = None) -> nnx.Module:
    """Quantises every Linear and Embed of `model` in place (jaxmodels.layers.int8) and returns the model.

    block_size None: a float32 scale per output channel (a Linear's out_shape, an embedding row); 32: Q8_0's
    float16 scale per 32 inputs, bit for bit what `gguf.quants.quantize` stores (every input dimension must be
    a multiple of 32). A model that is int8 already is refused.
    """
    int8.check_block(block_size)
    found = layers(model)
    done = [name for name, m in found if m.scale is not None]
    if done:
        raise ValueError(f"the model is int8 already ({done[0]!r} has a scale)")
    for _, module in found:
        module.quantize_int8(block_size)
    return model


def block_size_of(layer: Linear | Embed) -> int | None:
    """The block size of an int8 layer's scales: None (per output channel) or 32."""
    weight = getattr(layer, _WEIGHT[type(layer)])
    out_ndim = len(layer.out_shape) if isinstance(layer, Linear) else 1
    if layer.scale.ndim == out_ndim:
        return None
    return int(np.prod(weight.shape)) // int(np.prod(layer.scale.shape))


def record(model: nnx.Module) -> dict[str, Any] | None:
    """What our config.json records of the model's quantisation: None for a float model, else
    {"method": "int8", "block_size": None or 32}. A model with int8 and float layers, or two block sizes, is
    refused (it cannot be described by one record)."""
    found = layers(model)
    sizes = {block_size_of(m) if m.scale is not None else "float" for _, m in found}
    if sizes <= {"float"}:
        return None
    if len(sizes) > 1:
        raise ValueError(f"the model mixes int8 and float layers or block sizes ({sorted(map(str, sizes))}); "
                         f"quantize_int8 quantises all of them with one block size")
    return {"method": METHOD, "block_size": sizes.pop()}


def read_record(value: Any, source: str) -> int | None:
    """A config.json quantisation record -> its block size; an error naming the file for anything else."""
    if not isinstance(value, dict) or set(value) != {"method", "block_size"} or value["method"] != METHOD:
        raise ValueError(f"{source}: {QUANTIZATION_KEY} must be {{\"method\": \"int8\", \"block_size\": null or "
                         f"{int8.BLOCK}}}, got {value!r}")
    int8.check_block(value["block_size"])
    return value["block_size"]


def abstract_int8(abstract: nnx.Module, block_size: int | None) -> nnx.Module:
    """An abstract model (nnx.eval_shape) with the structure quantize_int8 gives it: no values computed."""
    return nnx.eval_shape(lambda m: quantize_int8(m, block_size=block_size), abstract)


def is_int8_dtype(dtype) -> bool:
    """Whether a from_pretrained `dtype` asks for int8 ("int8", jnp.int8, np.int8)."""
    return dtype is not None and jnp.dtype(dtype) == jnp.int8


def fill_exact(abstract: nnx.Module, weights, where: str | os.PathLike, place=None) -> nnx.Module:
    """The abstract model with every parameter read from `weights` (keys(), shape(key), numpy_dtype(key),
    get(key), keyed by our parameter paths), one tensor at a time, int8 values and scales kept bit for bit.

    int8 values must be stored as int8 and scales in their dtype (float32 per channel, float16 in blocks);
    the other parameters may be any float dtype and are cast to the model's. Every problem is listed at once.
    `place(key, var, array)` puts each on its device(s), as in `jaxmodels.hf.convert.fill`.
    """
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    flat = nnx.to_flat_state(params)
    exact = {f"{name}.{attr}" for name, m in layers(abstract) if m.scale is not None
             for attr in (_WEIGHT[type(m)], "scale")}
    expected = {param_key(path): var for path, var in flat}
    problems = [f"unexpected tensor {k!r}" for k in sorted(set(weights.keys()) - set(expected))]
    for key, var in sorted(expected.items()):
        if key not in weights:
            problems.append(f"missing tensor {key!r} (expected {np.dtype(var.dtype).name} {tuple(var.shape)})")
            continue
        stored = np.dtype(weights.numpy_dtype(key))
        if tuple(weights.shape(key)) != tuple(var.shape):
            problems.append(f"tensor {key!r} has shape {tuple(weights.shape(key))}, expected {tuple(var.shape)}")
        elif key in exact and stored != np.dtype(var.dtype):
            problems.append(f"tensor {key!r} is {stored.name}, expected {np.dtype(var.dtype).name}")
        elif key not in exact and stored.kind != "f":
            problems.append(f"tensor {key!r} is {stored.name}, expected a floating-point dtype")
    if problems:
        raise CheckpointError(f"{where}: {len(problems)} problem(s) with the int8 weights:\n  "
                              + "\n  ".join(problems))
    place = place or (lambda key, var, array: jnp.asarray(array))
    filled = [(path, var.replace(place(param_key(path), var,
                                       np.asarray(weights.get(param_key(path))).astype(var.dtype, copy=False))))
              for path, var in flat]
    return nnx.merge(graphdef, nnx.from_flat_state(filled), rest)
