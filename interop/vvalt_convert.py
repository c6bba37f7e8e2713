"""V.V.A.L.T between our Flax models and the PyTorch twin / Hugging Face layout.

The key table (`jaxmodels.vvalt.convert.VVALT_TABLE`, data: HF key, our path, named transform) drives both
directions; it lives beside the model so that `jaxmodels.vvalt.load` reads twin checkpoints without interop.

    Hugging Face (twin)            Flax                           transform
    [vvalt.]encoder_W_semantic     [vvalt.]encoder.W_semantic     identity  (both [in, out])
    [vvalt.]attention_b_output     [vvalt.]attention.b_output     identity
    classifier.weight              classifier.kernel              linear    ([L, F] <-> [F, L])

Export writes exactly the twin's key set, streamed through jaxmodels.hf.writer (shards on request), plus
config.json with auto_map and the twin's source as modeling_vvalt.py, so that
`AutoModel*.from_pretrained(dir, trust_remote_code=True)` works where only torch + transformers exist.
Pure NumPy: converting needs no torch.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from jaxmodels.hf.convert import param_shapes, stored_key
from jaxmodels.hf.source import SafetensorsCheckpoint
from jaxmodels.hf.writer import PlannedTensor, write_shards
from jaxmodels.io import atomic_directory
from jaxmodels.vvalt.convert import VVALT_TABLE, config_to_hf, kind_of
from jaxmodels.vvalt.convert import load as load_hf
from jaxmodels.vvalt.model import to_numpy_weights

TWIN_SOURCE = Path(__file__).with_name("vvalt_torch.py")

__all__ = ["export_hf", "flax_to_hf_tensors", "from_hf", "load_hf", "to_hf", "verify_dirs", "verify_export"]


def flax_to_hf_tensors(model) -> dict[str, np.ndarray]:
    """{twin state-dict key: array} for every parameter of a Flax V.V.A.L.T model."""
    out = {}
    for key, value in to_numpy_weights(model).items():
        hf_key = stored_key(key, VVALT_TABLE)
        out[hf_key] = VVALT_TABLE.to_hf(key)[1].to_hf(value)
    return out


def export_hf(model, path: str | os.PathLike, *, overwrite: bool = False, max_shard_bytes: int | None = None,
              dtype=None) -> Path:
    """Writes a transformers-loadable directory for `model` atomically; an existing `path` needs overwrite."""
    kind = kind_of(param_shapes(model), type(model).__name__)
    weights = to_numpy_weights(model)
    planned = []
    for key in sorted(weights):
        hf_key, transform = VVALT_TABLE.to_hf(key)
        out_dtype = np.dtype(dtype or weights[key].dtype)
        shape = transform.hf_shape(weights[key].shape)
        planned.append(PlannedTensor(hf_key, tuple(shape), out_dtype,
                                     lambda k=key, t=transform, d=out_dtype: t.to_hf(weights[k]).astype(d)))
    with atomic_directory(path, overwrite=overwrite) as tmp:
        write_shards(planned, tmp, max_shard_bytes=max_shard_bytes, metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config_to_hf(model.config, kind), indent=2) + "\n")
        shutil.copyfile(TWIN_SOURCE, tmp / "modeling_vvalt.py")
    return Path(path)


def _summary(directory: Path) -> dict:
    ckpt = SafetensorsCheckpoint(directory)
    return {"model_type": "vvalt", "tensors": len(ckpt.keys()), "total_size": ckpt.total_bytes()}


def to_hf(src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False, max_shard_bytes: int | None = None,
          dtype=None) -> dict:
    """Our checkpoint directory (or a training run holding one in model/) -> a transformers directory.
    Returns {"model_type", "tensors", "total_size"} as jaxmodels-convert prints it."""
    src = Path(src)
    if (src / "run.json").is_file() and (src / "model" / "config.json").is_file():
        src = src / "model"
    export_hf(load_hf(src), dst, overwrite=force, max_shard_bytes=max_shard_bytes, dtype=dtype)
    return _summary(Path(dst))


def from_hf(src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False, max_shard_bytes: int | None = None,
            dtype=None) -> dict:
    """A transformers V.V.A.L.T directory (the twin's) -> our checkpoint directory (dtype float32 or float64)."""
    load_hf(src, dtype=dtype).save_pretrained(dst, overwrite=force, max_shard_bytes=max_shard_bytes)
    return _summary(Path(dst))


def verify_dirs(hf_dir: str | os.PathLike, ours_dir: str | os.PathLike, *, tolerance: float = 1e-5) -> float:
    """jaxmodels-convert --verify: Flax (ours_dir) vs the twin (hf_dir) on random inputs; raises past tolerance."""
    diff = verify_export(load_hf(ours_dir), hf_dir)
    print(f"verify: max |output difference| = {diff:.3g} (tolerance {tolerance:g})")
    if not diff <= tolerance:
        raise ValueError(f"V.V.A.L.T outputs differ by {diff:.3g}, more than the tolerance {tolerance:g}")
    return diff


def verify_export(model, hf_dir: str | os.PathLike, *, batch: int = 4, seed: int = 0) -> float:
    """Runs `model` and the exported twin on the same random inputs; returns the largest output difference."""
    import torch

    from jaxmodels_interop import vvalt_torch

    kind = kind_of(param_shapes(model), type(model).__name__)
    cls = {"base": vvalt_torch.VVALTModel, "classification": vvalt_torch.VVALTForSequenceClassification,
           "regression": vvalt_torch.VVALTForRegression}[kind]
    twin = cls.from_pretrained(hf_dir).eval()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, model.config.input_dim)).astype(np.float32)
    t = rng.standard_normal((batch, model.config.task_dim)).astype(np.float32)
    with torch.no_grad():
        theirs = twin(torch.from_numpy(x), task_vector=torch.from_numpy(t)).last_hidden_state.double().numpy()
    ours = np.asarray(model(x, t).last_hidden_state, np.float64)
    return float(np.max(np.abs(ours - theirs)))
