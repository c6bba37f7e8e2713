"""Linear projections and the token embedding, laid out for einsum-style heads.

A `Linear` kernel has shape `in_shape + out_shape` (e.g. [D, N, H] for a query projection, [N, H, D] for
the output projection), the JAX convention; PyTorch's `nn.Linear.weight` is its flattened transpose.
Conversion tables name that transform explicitly. Each layer runs its "tuned" or "plain" form
(`jaxmodels.layers.backend`, docs/layers.md); a module's `layers` attribute is the default for its calls.

`quantize_int8` (what `jaxmodels.quantize` calls) makes a layer's weight int8 with a `scale` Param beside it
(`jaxmodels.layers.int8`; docs/quantization.md): decode steps read it in the int8 kernels, which dequantise in
registers; other shapes dequantise in XLA, a scale per output channel applied to the dot's output (exact, and
cheaper than scaling the weight), Q8_0 blocks to the weight before the dot. int8 layers compute in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmodels.layers import backend, dense, int8, skinny
from jaxmodels.layers.axes import param

_INIT_STD = 0.02


def _shape(s: int | Sequence[int]) -> tuple[int, ...]:
    return (s,) if isinstance(s, int) else tuple(s)


class Linear(nnx.Module):
    """y = x @ kernel + bias, with kernel of shape [*in_shape, *out_shape] and bias of shape out_shape.

    Quantised (`quantize_int8`): kernel int8 and scale float32 [*out_shape] (per output channel) or float16
    [K/32, *out_shape] (Q8_0 blocks of 32 of the K = prod(in_shape) inputs); `scale` is None otherwise.
    `axes` names the kernel's dimensions (`jaxmodels.layers.axes`; None: all unnamed); the bias and the
    scales take the names of the output dimensions.
    """

    def __init__(self, in_shape, out_shape, *, use_bias: bool = False, param_dtype=jnp.float32,
                 init_std: float = _INIT_STD, layers: str = "auto", axes: Sequence[str | None] | None = None,
                 rngs: nnx.Rngs):
        self.in_shape, self.out_shape = _shape(in_shape), _shape(out_shape)
        self.layers = backend.check(layers)
        self.axes = tuple(axes) if axes is not None else (None,) * (len(self.in_shape) + len(self.out_shape))
        key = rngs.params()
        self.kernel = param(init_std * jax.random.normal(key, self.in_shape + self.out_shape, param_dtype), self.axes)
        self.bias = param(jnp.zeros(self.out_shape, param_dtype), self.out_axes) if use_bias else None
        self.scale = None

    @property
    def out_axes(self) -> tuple[str | None, ...]:
        return self.axes[len(self.in_shape):]

    def quantize_int8(self, block_size: int | None = None) -> None:
        """Replaces the kernel by int8 values and adds their scales (jaxmodels.layers.int8), in place."""
        if self.scale is not None:
            raise ValueError("this Linear is int8 already")
        q, scale = int8.quantize_kn(self.flat_kernel(), block_size)
        k = math.prod(self.in_shape)
        self.kernel = param(q.reshape(self.in_shape + self.out_shape), self.axes)
        scale = scale.reshape(int8.scale_shape(k, self.out_shape, block_size))
        scale_axes = (None,) * (scale.ndim - len(self.out_shape)) + self.out_axes  # Q8_0: [K/32, *out]
        # nnx.data: `scale` was None, a static attribute, until now
        self.scale = nnx.data(param(scale, scale_axes))

    def flat_kernel(self) -> jax.Array:
        """The kernel as a matrix [prod(in_shape), prod(out_shape)], in its stored dtype."""
        return self.kernel[...].reshape(math.prod(self.in_shape), math.prod(self.out_shape))

    def flat_bias(self) -> jax.Array | None:
        return None if self.bias is None else self.bias[...].reshape(-1)

    def flat_scale(self) -> jax.Array | None:
        """None, or the scales as [N] (per output channel) or [K/32, N] (blocks)."""
        if self.scale is None:
            return None
        return self.scale[...].reshape(*self.scale.shape[: self.scale.ndim - len(self.out_shape)], -1)

    def __call__(self, x: jax.Array, *, layers: str | None = None) -> jax.Array:
        """x of shape [..., *in_shape] -> [..., *out_shape]; `layers` None: this module's `layers`."""
        return fused_linear(x, [self], layers=self.layers if layers is None else layers)[0]


def _dot_operands(p: Linear, dtype) -> tuple[jax.Array, jax.Array | None]:
    """(kernel [K, N] in `dtype` for an XLA dot, scale [N] for the dot's output or None): Q8_0 blocks are
    dequantised into the kernel; a scale per output channel is left for the output (exact, and cheaper)."""
    kernel, scale = p.flat_kernel(), p.flat_scale()
    if scale is not None and scale.ndim == 2:
        return int8.dequantize_kn(kernel, scale).astype(dtype), None
    return kernel.astype(dtype), scale


def fused_linear(x: jax.Array, linears: Sequence[Linear], *, layers: str = "auto") -> list[jax.Array]:
    """Several projections of the same input: x [..., *in_shape] -> one array [..., *out_shape] per projection.

    Tuned: one dot per projection inside one custom VJP (`dense.projections`), which shares x's transpose
    between the weight gradients and sums dx; inputs of few rows (decode steps) go to the CPU kernels
    (`skinny.projections`), which read each kernel in its stored dtype. Plain: one contraction per projection,
    differentiated by JAX.
    Either way there is no kernel concatenation per call, and storage stays one parameter per projection,
    so checkpoints keep the original's separate keys.
    """
    in_shape = linears[0].in_shape
    if any(p.in_shape != in_shape for p in linears):
        raise ValueError(f"fused_linear needs projections of one input shape, got {[p.in_shape for p in linears]}")
    if backend.resolve(layers) == "plain":
        return [_plain_linear(x, p) for p in linears]
    lead = x.shape[: x.ndim - len(in_shape)]
    x = x.reshape(*lead, -1)
    if skinny.applies(x):  # a decode step: the CPU kernels read each kernel once, in its stored dtype
        outs = skinny.projections(x, tuple(p.flat_kernel() for p in linears), tuple(p.flat_scale() for p in linears),
                                  tuple(p.flat_bias() for p in linears))
        return [y.reshape(*lead, *p.out_shape) for y, p in zip(outs, linears)]
    ops = [_dot_operands(p, x.dtype) for p in linears]
    # With an output scale the bias is added after it, so it stays out of the custom VJP's dot.
    biases = tuple(None if p.bias is None or scale is not None else p.flat_bias().astype(x.dtype)
                   for p, (_, scale) in zip(linears, ops))
    outs = []
    for y, p, (_, scale) in zip(dense.projections(x, tuple(k for k, _ in ops), biases), linears, ops):
        if scale is not None:
            y = y * scale.astype(y.dtype)
            y = y if p.bias is None else y + p.flat_bias().astype(y.dtype)
        outs.append(y.reshape(*lead, *p.out_shape))
    return outs


def _plain_linear(x: jax.Array, p: Linear) -> jax.Array:
    """x [..., *in_shape] contracted with the kernel [*in_shape, *out_shape] -> [..., *out_shape]."""
    kernel, scale = _dot_operands(p, x.dtype)
    y = jnp.tensordot(x, kernel.reshape(p.in_shape + p.out_shape), axes=len(p.in_shape))
    if scale is not None:
        y = y * scale.reshape(p.out_shape).astype(y.dtype)
    return y if p.bias is None else y + p.bias[...].astype(x.dtype)


class Embed(nnx.Module):
    """Token embedding [V, D]; `decode` reuses it as the tied output head.

    Quantised (`quantize_int8`): weight int8 and scale float32 [V] (per row: each token, each logit) or
    float16 [V, D/32] (Q8_0 blocks); `scale` is None otherwise.
    """

    def __init__(self, vocab_size: int, dim: int, *, param_dtype=jnp.float32, layers: str = "auto",
                 rngs: nnx.Rngs):
        self.layers = backend.check(layers)
        self.weight = param(_INIT_STD * jax.random.normal(rngs.params(), (vocab_size, dim), param_dtype),
                            ("vocab", "embed"))
        self.scale = None

    @property
    def dtype(self):
        """The dtype of the embeddings it returns: the weight's, float32 for an int8 weight."""
        return self.weight[...].dtype if self.scale is None else jnp.dtype(jnp.float32)

    def quantize_int8(self, block_size: int | None = None) -> None:
        """Replaces the weight by int8 values and adds their scales (jaxmodels.layers.int8), in place."""
        if self.scale is not None:
            raise ValueError("this Embed is int8 already")
        q, scale = int8.quantize_rows(self.weight[...], block_size)
        # scale [V] or [V, D/32]; nnx.data: see Linear.quantize_int8
        self.weight, self.scale = param(q, ("vocab", "embed")), nnx.data(param(scale, ("vocab", None)[: scale.ndim]))

    def __call__(self, ids: jax.Array) -> jax.Array:
        """ids [B, T] int -> [B, T, D]."""
        rows = jnp.take(self.weight[...], ids, axis=0)
        return rows if self.scale is None else int8.dequantize_rows(rows, jnp.take(self.scale[...], ids, axis=0))

    def decode(self, x: jax.Array, *, layers: str | None = None) -> jax.Array:
        """x [B, T, D] -> logits [B, T, V], tied to the embedding by construction.

        `layers` None: this module's `layers`.
        """
        plain = backend.resolve(self.layers if layers is None else layers) == "plain"
        scale = None if self.scale is None else self.scale[...]
        if not plain and skinny.applies(x):  # a decode step: the weight [V, D] read once, in its stored dtype
            return skinny.matmul_t(x, self.weight[...], scale)
        weight = self.weight[...]
        if scale is not None and scale.ndim == 2:  # Q8_0 blocks: dequantised before the dot
            weight, scale = int8.dequantize_rows(weight, scale), None
        weight = weight.astype(x.dtype)
        y = jnp.einsum("...D,VD->...V", x, weight) if plain else dense.matmul_t(x, weight)
        return y if scale is None else y * scale.astype(y.dtype)  # a scale per row of V: per logit
