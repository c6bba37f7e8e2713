"""HTFR checkpoints: our own complete format, and the original's HTFT `.npz` (originals.md section 5.8).

Ours (`save_field` / `load_field`): one `.npz` (no pickles) holding the config as JSON and every state array,
each tensor's interpolation name, the usage statistics, the error queue and the rng included, so a round trip
predicts and trains identically. Controls are stored in the original's [M, O, 3] layout.

The original's (`load_original_checkpoint` / `save_original_checkpoint`): keys `{stage}_tensor_*` (float16),
`{stage}_model_*`, `{stage}_srht_*`, `{stage}_cs_*`, `{stage}_metadata_json` and the top-level vocabulary keys.
The original stores every scalar (numbers, flags, strings, JSON) as a 1-element array and reads it back with
`[0]`; we write it so, and read 1-element and 0-d arrays alike. Loading keeps the saved per-tensor
interpolations (the original re-randomised them on load).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxmodels.htfr.config import HTFRConfig
from jaxmodels.htfr.hypertensor import INTERPOLATIONS, interpolation_id
from jaxmodels.htfr.model import HTFRModel
from jaxmodels.htfr.state import FieldState
from jaxmodels.io import atomic_open
from jaxmodels_kernels.projection import ProjectionStack

FORMAT = "jaxmodels-htfr-1"
_STATE_KEYS = ("normals", "deltas", "dneg", "dpos", "taus", "ref_radius", "usage", "avg_dist", "loss_trace",
               "queue_x", "queue_loss", "queue_stamp", "pushes", "relocations", "key")


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray], compressed: bool) -> None:
    with atomic_open(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def _load(path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HTFR checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as err:
        raise ValueError(f"{path}: an array needs pickle to load; HTFR checkpoints must hold plain arrays "
                         f"only ({err})") from err


def _require(arrays: dict, keys, path, what: str) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise KeyError(f"{path}: not {what}; missing keys {missing[:8]}")


def save_field(path, model: HTFRModel) -> None:
    """Writes the whole field (config, tensors, statistics, queue, rng) to `path` (.npz), atomically."""
    s = model.state
    arrays = {k: np.asarray(getattr(s, k)) for k in _STATE_KEYS}
    arrays["controls"] = np.transpose(np.asarray(s.controls), (0, 2, 1))
    arrays["interpolations"] = np.array([INTERPOLATIONS[int(i)] for i in np.asarray(s.interp)], dtype="U16")
    arrays["config_json"] = np.array(model.config.to_json())
    arrays["format"] = np.array(FORMAT)
    _atomic_savez(Path(path), arrays, compressed=False)


def load_field(path) -> HTFRModel:
    """Reads a field written by save_field; every array is restored with its saved dtype."""
    a = _load(path)
    _require(a, (*_STATE_KEYS, "controls", "interpolations", "config_json", "format"), path,
             "an HTFR field checkpoint (save_field)")
    if str(a["format"]) != FORMAT:
        raise ValueError(f"{path}: format {str(a['format'])!r}, expected {FORMAT!r}")
    config = HTFRConfig.from_json(str(a["config_json"]))
    fields = {k: jnp.asarray(a[k]) for k in _STATE_KEYS}
    fields["controls"] = jnp.asarray(np.transpose(a["controls"], (0, 2, 1)))
    fields["interp"] = jnp.asarray([interpolation_id(str(n)) for n in a["interpolations"]], jnp.int32)
    return HTFRModel(FieldState(**fields), config)


# ---- the original's HTFT checkpoint -------------------------------------------------------------------------

_MODEL_FLOATS = ("eta", "eta_g", "epsilon", "max_knn_radius", "locality_radius", "interpolation_reference")
# Keys of the original's archive that hold one scalar, after the stage prefix "{p}_" (or at the top level).
_SCALAR_KEY = re.compile(r"(?:\w+_)?(?:model_\w+|metadata_json|srht_count|raw_dim|srht_\d+_srht_(?:input_dim|"
                         r"padded_dim|target_dim|block_size|block_eps|scale|tile_count)|cs_(?:input_dim|output_dim)|"
                         r"unk_index|tail_config_json)")


@dataclasses.dataclass
class StageCheckpoint:
    model: HTFRModel
    projector: ProjectionStack | None
    metadata: dict


@dataclasses.dataclass
class OriginalCheckpoint:
    """The original HTFT archive: stages by prefix ("stage1", "stage2") plus the vocabulary keys."""

    stages: dict[str, StageCheckpoint]
    mapping: np.ndarray | None = None
    shortlist: np.ndarray | None = None
    unk_index: int | None = None
    tail_config: dict | None = None
    metadata: dict | None = None


def _stage_prefixes(a: dict) -> list[str]:
    return sorted({k[:-len("_tensor_normals")] for k in a if k.endswith("_tensor_normals")})


def _scalars_0d(a: dict, path) -> dict[str, np.ndarray]:
    """The archive with every scalar key as a 0-d array: the original wrote 1-element arrays ([6], ["softmax"]),
    our earlier writer 0-d ones; anything else under a scalar key is refused."""
    out = dict(a)
    for k, v in a.items():
        if _SCALAR_KEY.fullmatch(k):
            if v.size != 1 or v.ndim > 1:
                raise ValueError(f"{path}: {k} must hold one value (a 1-element or 0-d array), got shape {v.shape}")
            out[k] = v.reshape(())
    return out


def load_original_checkpoint(path, *, dtype=jnp.float32, keep_reference_radius: bool = False) -> OriginalCheckpoint:
    """Reads the original's `save_htft_checkpoint` archive. State is converted to `dtype` (float32 default);
    the saved interpolation of every tensor is kept. Each tensor's reference radius is the stage's
    interpolation reference, as the original's model sets it on load; keep_reference_radius keeps the saved
    (float16) per-tensor `reference_radius` instead."""
    a = _scalars_0d(_load(path), path)
    prefixes = _stage_prefixes(a)
    if not prefixes:
        raise KeyError(f"{path}: no '<stage>_tensor_normals' key; not an original HTFT checkpoint")
    stages = {}
    for p in prefixes:
        t = f"{p}_tensor_"
        _require(a, [t + k for k in ("normals", "deltas", "dneg", "dpos", "taus", "reference_radius", "controls",
                                     "interpolations")], path, f"a complete original stage {p!r}")
        cfg = {}
        for k in ("top_k", "train_top_k"):
            if f"{p}_model_{k}" in a:
                cfg[k] = int(a[f"{p}_model_{k}"])
        for k in _MODEL_FLOATS:
            if f"{p}_model_{k}" in a and np.isfinite(float(a[f"{p}_model_{k}"])):
                cfg[k] = float(a[f"{p}_model_{k}"])
        if f"{p}_model_weight_mode" in a:
            cfg["weight_mode"] = str(a[f"{p}_model_weight_mode"])
        if f"{p}_model_randomize_interpolations" in a:
            cfg["randomize_interpolations"] = bool(a[f"{p}_model_randomize_interpolations"])
        if f"{p}_model_interpolation_weights" in a:
            weights = json.loads(str(a[f"{p}_model_interpolation_weights"]) or "{}")
            cfg["interpolation_weights"] = tuple(sorted((k, float(v)) for k, v in weights.items()))
        config = HTFRConfig(**cfg)
        m = a[t + "deltas"].shape[0]
        ref = a[t + "reference_radius"] if keep_reference_radius else np.full(m, config.reference, np.float32)
        arrays = {"normals": a[t + "normals"].astype(np.float32), "deltas": a[t + "deltas"],
                  "dneg": a[t + "dneg"], "dpos": a[t + "dpos"], "taus": a[t + "taus"],
                  "controls": a[t + "controls"].astype(np.float32), "ref_radius": ref,
                  "interp": np.array([interpolation_id(str(n)) for n in a[t + "interpolations"]], np.int32)}
        model = HTFRModel.from_arrays(arrays, config, dtype=dtype)
        own = (f"{p}_tensor_", f"{p}_model_", f"{p}_metadata_json")
        proj = {k[len(p) + 1:]: v for k, v in a.items() if k.startswith(f"{p}_") and not k.startswith(own)}
        projector = ProjectionStack.from_arrays(proj) if f"{p}_srht_count" in a and int(a[f"{p}_srht_count"]) else None
        meta = json.loads(str(a[f"{p}_metadata_json"])) if f"{p}_metadata_json" in a else {}
        stages[p] = StageCheckpoint(model, projector, meta)
    get = lambda k: a[k] if k in a else None  # noqa: E731
    return OriginalCheckpoint(
        stages=stages, mapping=get("mapping"), shortlist=get("shortlist"),
        unk_index=int(a["unk_index"]) if "unk_index" in a else None,
        tail_config=json.loads(str(a["tail_config_json"])) if "tail_config_json" in a else None,
        metadata=json.loads(str(a["metadata_json"])) if "metadata_json" in a else None)


def _one(value, dtype=None) -> np.ndarray:
    """A scalar as the original stores it: a 1-element array (its reader takes `[0]`)."""
    return np.array([value], dtype=dtype)


def save_original_checkpoint(path, ckpt: OriginalCheckpoint) -> None:
    """Writes `ckpt` in the original's key layout and dtypes (tensor state as float16, every scalar as a
    1-element array, compressed)."""
    out: dict[str, np.ndarray] = {}
    for p, stage in ckpt.stages.items():
        s, c = stage.model.state, stage.model.config
        f16 = lambda v: np.asarray(v).astype(np.float16)  # noqa: E731
        out.update({f"{p}_tensor_normals": f16(s.normals), f"{p}_tensor_deltas": f16(s.deltas),
                    f"{p}_tensor_dneg": f16(s.dneg), f"{p}_tensor_dpos": f16(s.dpos),
                    f"{p}_tensor_taus": f16(s.taus), f"{p}_tensor_reference_radius": f16(s.ref_radius),
                    f"{p}_tensor_controls": f16(np.transpose(np.asarray(s.controls), (0, 2, 1))),
                    f"{p}_tensor_interpolations": np.array(stage.model.interpolations, dtype="U16")})
        out.update({f"{p}_model_top_k": _one(c.top_k, np.int32),
                    f"{p}_model_train_top_k": _one(c.train_top_k, np.int32),
                    f"{p}_model_eta": _one(c.eta), f"{p}_model_eta_g": _one(c.eta_g),
                    f"{p}_model_epsilon": _one(c.epsilon), f"{p}_model_weight_mode": _one(c.weight_mode),
                    f"{p}_model_max_knn_radius": _one(c.max_knn_radius),
                    f"{p}_model_locality_radius": _one(c.radius),
                    f"{p}_model_interpolation_reference": _one(c.reference),
                    f"{p}_model_randomize_interpolations": _one(c.randomize_interpolations),
                    f"{p}_model_interpolation_weights": _one(json.dumps(dict(c.interpolation_weights)))})
        if stage.projector is not None:
            out.update({f"{p}_{k}": v.reshape(1) if v.ndim == 0 else v for k, v in stage.projector.to_dict().items()})
        else:
            out[f"{p}_srht_count"] = _one(0)
        out[f"{p}_metadata_json"] = _one(json.dumps(stage.metadata))
    if ckpt.mapping is not None:
        out["mapping"] = np.asarray(ckpt.mapping)
    if ckpt.shortlist is not None:
        out["shortlist"] = np.asarray(ckpt.shortlist)
    if ckpt.unk_index is not None:
        out["unk_index"] = _one(ckpt.unk_index)
    out["tail_config_json"] = _one(json.dumps(ckpt.tail_config or {}))
    out["metadata_json"] = _one(json.dumps(ckpt.metadata or {}))
    _atomic_savez(Path(path), out, compressed=True)
