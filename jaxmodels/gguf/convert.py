"""A GGUF file seen as a Hugging Face checkpoint: a transformers config dict and a weights reader keyed by the
family's Hugging Face names, so loading and converting go through `jaxmodels.pretrained` unchanged.

`GGUFWeights` has the `SafetensorsCheckpoint` interface; `get(key)` dequantises one tensor (float32, through
`gguf.quants.dequantize`) and undoes llama.cpp's layout changes, giving the tensor transformers would hold.
Every problem (unknown architecture, a type the library cannot dequantise, a tensor no parameter takes, a
parameter no tensor fills, a shape that does not fit) is reported before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from jaxmodels import family as families
from jaxmodels import quantize
from jaxmodels.gguf.archs import Arch, arch_of, hf_config
from jaxmodels.gguf.reader import GGUFError, GGUFFile
from jaxmodels.hf.convert import param_shapes, plan_import
from jaxmodels.hf.writer import PlannedTensor
from jaxmodels.layers import int8

_SUFFIXES = (".weight", ".bias")


class GGUFWeights:
    """keys() / shape(key) / dtype(key) / get(key) over a GGUF file's tensors, keyed by Hugging Face names.

    `hf_keys`: the names the target model's parameters have; each is looked up in the gguf library's name map
    of the architecture. `unused`: the file's tensors that none of them names.
    """

    def __init__(self, file: GGUFFile, arch: Arch, hf_cfg: dict, hf_keys: list[str]):
        self.file, self.directory, self.files = file, file.path, [file.path.name]
        name_map = arch.name_map(hf_cfg["num_hidden_layers"])
        self._transforms = arch.transforms(hf_cfg)
        self._source: dict[str, tuple[str, Any]] = {}  # hf key -> (gguf name, transform or None)
        for key in hf_keys:
            found = name_map.get_type_and_name(key, try_suffixes=_SUFFIXES)
            if found is not None and found[1] in file.tensors:
                self._source[key] = (found[1], self._transforms.get(found[0]))
        taken = {name for name, _ in self._source.values()}
        self.unused = [name for name in file.tensors if name not in taken]

    def keys(self) -> list[str]:
        return sorted(self._source)

    def __contains__(self, key: str) -> bool:
        return key in self._source

    def gguf_name(self, key: str) -> str:
        return self._source[key][0]

    def shape(self, key: str) -> tuple[int, ...]:
        return self.file.shape(self._source[key][0])

    def dtype(self, key: str) -> str:
        return "F32"  # dequantised

    def numpy_dtype(self, key: str) -> np.dtype:
        return np.dtype(np.float32)

    def get(self, key: str) -> np.ndarray:
        name, transform = self._source[key]
        values = self.file.dequantize(name)
        return values if transform is None else transform.from_gguf(values)

    def get_q8_0(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(int8 [N, K], float16 scales [N, K/32]) in transformers' layout (`GGUFFile.q8_0`); llama.cpp's row
        permutation is undone on both, the scales moving with their rows."""
        name, transform = self._source[key]
        values, scales = self.file.q8_0(name)
        return (values, scales) if transform is None else (transform.from_gguf(values), transform.from_gguf(scales))

    def total_bytes(self) -> int:
        return self.file.path.stat().st_size


@dataclasses.dataclass(frozen=True)
class GGUFSource:
    """An opened GGUF file: its architecture row, the family, our config, the transformers config dict it
    stands for, the Hugging Face attributes the family ignored, the weights, and the abstract model
    (`nnx.eval_shape` of `model_class`: its parameters' shapes, for the importer to fill)."""

    file: GGUFFile
    arch: Arch
    family: families.Family
    config: Any
    hf_config: dict
    ignored: dict
    model_class: type
    weights: GGUFWeights
    abstract: nnx.Module


def open_gguf(path: str | os.PathLike) -> GGUFSource:
    """Reads a .gguf file's header and checks everything the conversion needs (no tensor data is read)."""
    file = GGUFFile(path)
    arch = arch_of(file)
    bad = file.undequantizable()
    if bad:
        raise GGUFError(f"{file.path}: the gguf library cannot dequantise {len(bad)} tensor(s): {', '.join(bad[:5])}"
                        + (" ..." if len(bad) > 5 else ""))
    cfg = hf_config(file, arch)
    family = families.get(arch.model_type, source=str(file.path))
    config, ignored = family.from_hf(cfg, str(file.path))
    cls = family.model_class(config, [], cfg)
    abstract = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))  # traced once: ~0.5 s for 30 layers
    shapes = param_shapes(abstract)
    hf_keys = [family.table.to_hf(k)[0] for k in shapes]
    weights = GGUFWeights(file, arch, cfg, hf_keys)
    if weights.unused:
        raise GGUFError(f"{file.path}: {len(weights.unused)} tensor(s) have no parameter in a {family.name} model "
                        f"of this configuration: {weights.unused[:5]}")
    return GGUFSource(file, arch, family, config, cfg, ignored, cls, weights, abstract)


class Int8Weights:
    """A GGUF file's tensors keyed by our parameter paths for an int8 model (`jaxmodels.quantize`): each int8
    layer's values and Q8_0 scales from `GGUFWeights.get_q8_0`, moved to our layouts by the key table's own
    transform (a kernel's [N, K] -> [K, *out], its scales [N, K/32] -> [K/32, *out]), the other parameters
    dequantised to float32. The keys(), shape(), numpy_dtype(), get() of `jaxmodels.quantize.fill_exact`."""

    def __init__(self, source: GGUFSource, quantized: nnx.Module):
        family, weights = source.family, source.weights
        self._weights, self._shapes = weights, param_shapes(quantized)
        self._steps = {s.ours: s for s in plan_import(param_shapes(source.abstract), weights, family.table,
                                                      tied=family.tied(source.config))}
        self._scale_of = {f"{name}.{attr}": f"{name}.scale" for name, m in quantize.layers(quantized)
                          for attr in ("kernel", "weight") if f"{name}.{attr}" in self._steps}
        self._weight_of = {**{w: w for w in self._scale_of}, **{s: w for w, s in self._scale_of.items()}}
        self._dtypes = {k: np.dtype(np.float32) for k in self._steps}
        for weight, scale in self._scale_of.items():
            self._dtypes[weight], self._dtypes[scale] = np.dtype(np.int8), np.dtype(np.float16)
        self._pending: dict[str, np.ndarray] = {}  # the other half of a pair read, until asked for

    def keys(self) -> list[str]:
        return sorted(self._dtypes)

    def __contains__(self, key: str) -> bool:
        return key in self._dtypes

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def numpy_dtype(self, key: str) -> np.dtype:
        return self._dtypes[key]

    def get(self, key: str) -> np.ndarray:
        if key in self._pending:
            return self._pending.pop(key)
        weight = self._weight_of.get(key)
        if weight is None:
            return self._steps[key].load(self._weights)
        step, scale = self._steps[weight], self._scale_of[weight]
        values, scales = self._weights.get_q8_0(step.stored)
        if step.transform is not None:
            values = step.transform.to_ours(values, step.our_shape)
            scales = step.transform.to_ours(scales, self._shapes[scale])
        self._pending[scale if key == weight else weight] = scales if key == weight else values
        return values if key == weight else scales


def load_int8(source: GGUFSource, place=None) -> nnx.Module:
    """The GGUF file's model with every Linear and Embed int8 in Q8_0 blocks: a Q8_0 tensor's values and scales
    exactly, an F32 / F16 / BF16 one quantised as Q8_0; norms and biases dequantised to float32. `place`: as
    in `jaxmodels.quantize.fill_exact`."""
    quantized = quantize.abstract_int8(source.abstract, int8.BLOCK)
    return quantize.fill_exact(quantized, Int8Weights(source, quantized), source.file.path, place=place)


def planned_tensors(source: GGUFSource, dtype: np.dtype | None) -> list[PlannedTensor]:
    """Our parameters, produced one at a time from the file (float32, or cast to `dtype`)."""
    family = source.family
    shapes = param_shapes(source.abstract)
    out = np.dtype(dtype or np.float32)
    weights = source.weights
    return [PlannedTensor(s.ours, s.our_shape, out, lambda s=s: s.load(weights).astype(out, copy=False))
            for s in plan_import(shapes, weights, family.table, tied=family.tied(source.config))]
