"""Load, save, export and convert, written once over the family records (`jaxmodels.family`).

Two directory formats: ours (config.json with our fields and `jaxmodels_version`, safetensors keyed by NNX
parameter paths in our layouts) and Hugging Face's (a transformers config.json, safetensors in PyTorch layouts,
keys from the family's table). Every function here picks the family from `model_type` and does the rest from
its record, so a new family needs no change here.

Tensors move as `PlannedTensor`s (key, shape, dtype and a function producing the values), so conversions
between directories stream one tensor at a time and check every key and shape before a byte is written.

`dtype="int8"` loads an int8 model (jaxmodels.quantize): a float checkpoint quantised with a scale per output
channel, a GGUF file's Q8_0 blocks as they are; our int8 checkpoints (config.json's "quantization") load as
saved, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from jaxmodels import family as families
from jaxmodels import quantize, sharding
from jaxmodels.checkpoint import CONFIG_NAME, FORMAT_KEY, QUANTIZATION_KEY, model_tensors, write_native
from jaxmodels.family import Family, RemoteCode
from jaxmodels.hf.convert import fill, param_shapes, plan_import
from jaxmodels.hf.source import SafetensorsCheckpoint
from jaxmodels.hf.writer import PlannedTensor, parse_size, write_shards
from jaxmodels.io import atomic_directory, read_json_object
from jaxmodels.paths import check_destination

DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
          "float16": np.dtype(np.float16), "float64": np.dtype(np.float64)}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def read_config(directory: str | os.PathLike) -> dict:
    """config.json of a checkpoint directory as a dict; a clear error when missing or not a JSON object."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no config.json (expected a checkpoint directory)")
    return read_json_object(path)


def model_dir(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or the one a training run directory holds in model/."""
    path = Path(path)
    if (path / "run.json").is_file() and (path / "model" / CONFIG_NAME).is_file():
        return path / "model"
    return path


@dataclasses.dataclass(frozen=True)
class Resolved:
    """What a checkpoint directory's config.json says: the family, our config, which format, the Hugging
    Face attributes accepted but not read (see jaxmodels.hf.config_policy), and our quantisation record
    (jaxmodels.quantize.record) or None."""

    family: Family
    config: Any
    native: bool
    ignored: dict[str, Any]
    hf_config: dict | None
    quantization: dict | None = None


def resolve(path: str | os.PathLike, model_type: str | None = None) -> Resolved:
    """Reads config.json: model_type from the argument, else the file, else a family's `detect`."""
    path = Path(path)
    cfg = read_config(path)
    source = str(path / CONFIG_NAME)
    found = model_type or cfg.get("model_type")
    family = families.get(found, source=source) if found else families.detect(cfg, source)
    if FORMAT_KEY in cfg:
        quantization = cfg.pop(QUANTIZATION_KEY, None)
        if quantization is not None:
            quantize.read_record(quantization, source)
        return Resolved(family, family.config_class.from_dict(cfg, source=source), True, {}, None, quantization)
    config, ignored = family.from_hf(cfg, source)
    return Resolved(family, config, False, ignored, cfg)


def check_dtype(family: Family, dtype) -> np.dtype | None:
    if dtype is None:
        return None
    name = jnp.dtype(dtype).name
    if name not in family.dtypes:
        raise ValueError(f"{family.name} parameters can be {', '.join(family.dtypes)}; got {name}")
    return np.dtype(DTYPES[name])


def _scope(family: Family, dtype):
    return contextlib.nullcontext() if family.dtype_scope is None else family.dtype_scope(dtype or np.float32)


def _abstract(family: Family, config, cls: type):
    return nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))


def _choose(resolved: Resolved, keys: list[str], where, expected: type | None) -> type:
    cls = resolved.family.model_class(resolved.config, keys, resolved.hf_config)
    if expected is not None and not issubclass(cls, expected):
        raise ValueError(f"{where}: holds a {cls.__name__} checkpoint, not a {expected.__name__}; load it with "
                         f"{cls.__name__}.from_pretrained or jaxmodels.from_pretrained")
    return cls


def gguf_in(path: str | os.PathLike) -> Path | None:
    """The .gguf file `path` names: the file itself, or the only .gguf of a directory without config.json.
    None when it names neither; an error for such a directory holding several."""
    path = Path(path)
    if path.suffix == ".gguf" and not path.is_dir():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        return path
    if not path.is_dir() or (path / CONFIG_NAME).exists():
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        raise ValueError(f"{path}: holds {len(found)} .gguf files ({', '.join(f.name for f in found)}); pass one")
    return found[0] if found else None


def _resolve_gguf(path: Path, model_type: str | None):
    """A .gguf file as a Hugging Face checkpoint (jaxmodels.gguf: the family from its architecture), with the
    abstract model reading it built: (Resolved, the jaxmodels.gguf.GGUFSource)."""
    from jaxmodels.gguf import open_gguf

    source = open_gguf(path)
    if model_type is not None and model_type not in source.family.model_types:
        raise ValueError(f"{path}: a GGUF {source.arch.name} file is a {source.family.name} model, not {model_type!r}")
    return Resolved(source.family, source.config, False, source.ignored, source.hf_config), source


def from_pretrained(path: str | os.PathLike, *, model_type: str | None = None, dtype=None,
                    expected: type | None = None, weights=None, mesh=None, rules=None) -> nnx.Module:
    """Loads a checkpoint directory (config.json + safetensors, single or sharded) into a Flax NNX model.

    Either format: ours (`save_pretrained`, or a training run directory holding one in model/), or a Hugging
    Face one of a registered family (`jaxmodels.family.model_types()`); or a llama.cpp .gguf file (or a
    directory holding exactly one and no config.json), dequantised to float32 (jaxmodels.gguf). The family
    comes from `model_type` (argument, else config.json, else the GGUF architecture); the class from the family
    (V.V.A.L.T: from the stored heads); `expected` insists on a class. Every tensor is checked against the
    model's shapes and every problem reported at once.
    `dtype`: the parameters' dtype (default: as stored), or "int8" for int8 Linear and Embed weights
    (jaxmodels.quantize): a float checkpoint quantised per output channel, a GGUF file's Q8_0 tensors kept as
    they are (F32 / F16 / BF16 ones quantised as Q8_0). Our int8 checkpoints load as int8 (dtype None or "int8").
    `weights`: another reader with the SafetensorsCheckpoint interface (e.g. PyTorch .bin files).
    `mesh` (a jax.sharding.Mesh, e.g. from jaxmodels.sharding.make_mesh): every tensor goes straight onto its
    sharding by the parameters' logical axes and `rules` (default jaxmodels.sharding.DEFAULT_RULES) as it is
    read, so the host holds one tensor at a time; a mesh that does not divide a dimension is refused before
    anything is read. (dtype "int8" from a float checkpoint quantises on one device, then places the model.)
    """
    int8 = quantize.is_int8_dtype(dtype)
    gguf_file = gguf_in(path)
    abstract = source = None
    if gguf_file is not None:
        resolved, source = _resolve_gguf(gguf_file, model_type)
        weights, abstract, path = source.weights, source.abstract, gguf_file
    else:
        path = model_dir(path)
        resolved = resolve(path, model_type)
        weights = SafetensorsCheckpoint(path) if weights is None else weights
    family = resolved.family
    cls = _choose(resolved, weights.keys(), path, expected)
    if resolved.quantization is not None:
        if dtype is not None and not int8:
            raise ValueError(f"{path}: holds int8 weights ({QUANTIZATION_KEY} in config.json); they load as int8 "
                             f"(dtype None or 'int8'), not as {jnp.dtype(dtype).name}")
        abstract = quantize.abstract_int8(_abstract(family, resolved.config, cls),
                                          resolved.quantization["block_size"])
        return quantize.fill_exact(abstract, weights, path, place=_placer(abstract, mesh, rules))
    if int8 and source is not None:
        from jaxmodels.gguf.convert import load_int8

        from jaxmodels.layers.int8 import BLOCK

        abstract = None if mesh is None else quantize.abstract_int8(source.abstract, BLOCK)
        return load_int8(source, place=_placer(abstract, mesh, rules))
    dtype = np.dtype(np.float32) if int8 else check_dtype(family, dtype)
    with _scope(family, dtype):
        # A GGUF file's reader has built the abstract model already: one trace of the whole model fewer.
        if abstract is None or type(abstract) is not cls or family.dtype_scope is not None:
            abstract = _abstract(family, resolved.config, cls)
        place = None if int8 else _placer(abstract, mesh, rules)
        if resolved.native:
            model = fill(abstract, weights, None, dtype=dtype, place=place)
        else:
            model = fill(abstract, weights, family.table, tied=family.tied(resolved.config), dtype=dtype, place=place)
    if not int8:
        return model
    model = quantize.quantize_int8(model)
    return model if mesh is None else sharding.shard_model(model, mesh, rules or sharding.DEFAULT_RULES)


def _placer(abstract: nnx.Module, mesh, rules):
    """The loaders' `place` for `mesh` (None: the default device), after checking that the mesh divides
    every parameter of the abstract model (so that a bad mesh is refused before any tensor is read)."""
    if mesh is None:
        return None
    rules = sharding.DEFAULT_RULES if rules is None else rules
    sharding.state_specs(nnx.state(abstract, nnx.Param), mesh, rules)  # raises on a dimension it does not divide
    return sharding.placer(mesh, rules)


def _shard_bytes(max_shard_size) -> int | None:
    return None if max_shard_size is None else parse_size(max_shard_size)


def _cast(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return array if array.dtype == dtype else array.astype(dtype)


def _summary(family: Family, path, tensors: list[PlannedTensor]) -> dict:
    return {"model_type": family.model_types[0], "path": str(path), "tensors": len(tensors),
            "total_size": sum(t.nbytes for t in tensors)}


def save_pretrained(model, path: str | os.PathLike, *, overwrite: bool = True, max_shard_size=None) -> Path:
    """Our format: config.json + model.safetensors (or shards + index), written atomically."""
    families.family_of(model.config)  # only registered families can be read back
    return write_native(model.config, model_tensors(model), path, overwrite=overwrite,
                        max_shard_bytes=_shard_bytes(max_shard_size), quantization=quantize.record(model))


def convert_from_hf(src: str | os.PathLike, dst: str | os.PathLike, *, model_type: str | None = None, dtype=None,
                    max_shard_size=None, overwrite: bool = False, weights=None) -> dict:
    """A Hugging Face checkpoint directory -> ours, one tensor at a time (dtype: cast; default keep). `dst` may
    not be, hold or lie inside `src`."""
    src = Path(src)
    check_destination(dst, [src], what="DST")
    resolved = resolve(src, model_type)
    if resolved.native:
        raise ValueError(f"{src} is already a jaxmodels checkpoint; use `to-hf` to export it")
    family, config = resolved.family, resolved.config
    weights = SafetensorsCheckpoint(src) if weights is None else weights
    dtype = check_dtype(family, dtype)
    cls = _choose(resolved, weights.keys(), src, None)
    with _scope(family, dtype):
        shapes = param_shapes(_abstract(family, config, cls))
    tensors = []
    for step in plan_import(shapes, weights, family.table, tied=family.tied(config)):
        out = dtype or np.dtype(weights.numpy_dtype(step.stored))
        tensors.append(PlannedTensor(step.ours, step.our_shape, out, lambda s=step, d=out: _cast(s.load(weights), d)))
    write_native(config, tensors, dst, overwrite=overwrite, max_shard_bytes=_shard_bytes(max_shard_size))
    return _summary(family, dst, tensors)


def _remote_code(code: RemoteCode, cls: type, dst: Path) -> dict[str, str]:
    """Copies the modeling files into dst (located, not imported: they need torch); returns the auto_map."""
    spec = importlib.util.find_spec(code.package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the modeling code package {code.package!r} is not installed")
    src = Path(next(iter(spec.submodule_search_locations)))
    for name, file in code.files.items():
        shutil.copyfile(src / file, dst / name)
    return code.auto_map(cls)


def _to_hf_tensors(family: Family, ours: list[PlannedTensor], dtype: np.dtype | None) -> list[PlannedTensor]:
    out = []
    for t in ours:
        mapped = family.table.to_hf(t.key)
        if mapped is None:
            raise ValueError(f"parameter {t.key!r} has no entry in the {family.table.name} key table")
        key, transform = mapped
        d = dtype or t.dtype
        out.append(PlannedTensor(key, transform.hf_shape(t.shape), d,
                                 lambda t=t, tr=transform, d=d: _cast(tr.to_hf(t.produce()), d)))
    return out


def write_hf(family: Family, config, cls: type, ours: list[PlannedTensor], dst: str | os.PathLike, *, dtype=None,
             max_shard_size=None, layout: str = "transformers", overwrite: bool = False,
             extra: Callable[[Path], None] | None = None) -> dict:
    """Our tensors -> a Hugging Face directory: keys and layouts from the family's table, its config.json, and
    its modeling code (auto_map) where it has some. `layout` names one of the family's other layouts.
    `extra(directory)` writes further files (a tokenizer) into the directory before it is renamed into place."""
    dtype = check_dtype(family, dtype)
    tensors = _to_hf_tensors(family, ours, dtype)
    hf_config = family.to_hf(config, cls)
    if layout != "transformers":
        if layout not in family.layouts:
            raise ValueError(f"--layout {layout!r}: the {family.name} family has the layouts "
                             f"{['transformers', *sorted(family.layouts)]}")
        hf_config, tensors = family.layouts[layout](config, hf_config, tensors)
    tensors.sort(key=lambda t: t.key)
    with atomic_directory(dst, overwrite=overwrite) as tmp:
        if layout == "transformers":
            if family.remote_code is not None:
                hf_config["auto_map"] = _remote_code(family.remote_code, cls, tmp)
            hf_config["dtype"] = _DTYPE_NAMES.get(np.dtype(tensors[0].dtype), "float32")
        write_shards(tensors, tmp, max_shard_bytes=_shard_bytes(max_shard_size), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        if extra is not None:
            extra(tmp)
    return _summary(family, dst, tensors)


def export_hf(model, path: str | os.PathLike, *, dtype=None, max_shard_size=None, layout: str = "transformers",
              overwrite: bool = False) -> Path:
    """Writes a model as a Hugging Face directory that transformers loads (`AutoModel*.from_pretrained`, with
    `trust_remote_code=True` for families that ship their modeling code). Atomic; an existing path needs
    overwrite=True. dtype: cast the weights (default: keep); max_shard_size: e.g. "2GB" or bytes."""
    family = families.family_of(model.config)
    if quantize.record(model) is not None:
        raise ValueError("an int8 model has no Hugging Face export (transformers' checkpoints hold float weights); "
                         "export the float model it was quantised from")
    write_hf(family, model.config, type(model), model_tensors(model), path, dtype=dtype,
             max_shard_size=max_shard_size, layout=layout, overwrite=overwrite)
    return Path(path)


def convert_to_hf(src: str | os.PathLike, dst: str | os.PathLike, *, dtype=None, max_shard_size=None,
                  overwrite: bool = False, layout: str = "transformers") -> dict:
    """Our checkpoint directory (or a training run holding one) -> a Hugging Face one, one tensor at a time.
    `dst` may not be, hold or lie inside `src` (nor the run directory's model)."""
    check_destination(dst, [src, model_dir(src)], what="DST")
    src = model_dir(src)
    resolved = resolve(src)
    if not resolved.native:
        raise ValueError(f"{src} is not a jaxmodels checkpoint (its config.json has no {FORMAT_KEY}); "
                         f"`from-hf` converts Hugging Face checkpoints")
    if resolved.quantization is not None:
        raise ValueError(f"{src} holds int8 weights ({QUANTIZATION_KEY} in config.json), which have no Hugging Face "
                         f"export; convert the float checkpoint it was quantised from")
    family, config = resolved.family, resolved.config
    ckpt = SafetensorsCheckpoint(src)
    cls = _choose(resolved, ckpt.keys(), src, None)
    with _scope(family, check_dtype(family, dtype)):
        shapes = param_shapes(_abstract(family, config, cls))
    ours = [PlannedTensor(s.ours, s.our_shape, np.dtype(ckpt.numpy_dtype(s.ours)), lambda s=s: ckpt.get(s.ours))
            for s in plan_import(shapes, ckpt, None)]
    return write_hf(family, config, cls, ours, dst, dtype=dtype, max_shard_size=max_shard_size, layout=layout,
                    overwrite=overwrite)


class Pretrained:
    """`save_pretrained`, `from_pretrained` and `export_hf` for a model class whose family is registered."""

    config: Any

    def save_pretrained(self, path: str | os.PathLike, *, overwrite: bool = True, max_shard_size=None,
                        max_shard_bytes: int | None = None) -> Path:
        """Our format: config.json + model.safetensors (or shards + index for max_shard_size), atomically."""
        return save_pretrained(self, path, overwrite=overwrite,
                               max_shard_size=max_shard_bytes if max_shard_size is None else max_shard_size)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, dtype=None, mesh=None, rules=None):
        """Our checkpoint directory, or a Hugging Face one of this class's family (see jaxmodels.from_pretrained)."""
        return from_pretrained(path, dtype=dtype, expected=cls, mesh=mesh, rules=rules)

    def export_hf(self, path: str | os.PathLike, **kwargs) -> Path:
        """A Hugging Face directory (see jaxmodels.export_hf)."""
        return export_hf(self, path, **kwargs)
