"""HTFT checkpoints: one self-contained `.npz` (no pickles) with both stages, the vocabulary and the context
settings.

Ours (the default) keeps every field array at its dtype (float32 state, interpolations, usage statistics, error
queue, rng) so training resumes exactly; keys per stage prefix p: `{p}_field_<state field>`, `{p}_config_json`,
`{p}_<projector key>` (as `ProjectionStack.to_dict`), `{p}_metadata_json`; top level: `mapping`, `shortlist`,
`unk_index`, `tail_config_json` (the ContextBuilderConfig), `metadata_json`, `format`.
`original_layout=True` writes the original's key layout instead (float16 tensors; statistics dropped), which
`load_htft_checkpoint` also reads.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxmodels.htfr import HTFRConfig, HTFRModel, OriginalCheckpoint, StageCheckpoint, load_original_checkpoint
from jaxmodels.htfr import save_original_checkpoint
from jaxmodels.htfr.state import FieldState
from jaxmodels.htft.context import ContextBuilderConfig
from jaxmodels.htft.model import HypertensorFieldTransformer, StageState
from jaxmodels.htft.vocab import VocabMapping
from jaxmodels.io import atomic_open
from jaxmodels_kernels.projection import ProjectionStack

FORMAT = "jaxmodels-htft-1"
STAGES = ("stage1", "stage2")
_FIELDS = tuple(f.name for f in dataclasses.fields(FieldState))


@dataclasses.dataclass
class HTFTCheckpoint:
    model: HypertensorFieldTransformer
    vocab: VocabMapping
    context_config: ContextBuilderConfig
    metadata: dict


def save_htft_checkpoint(path, ckpt: HTFTCheckpoint, *, original_layout: bool = False) -> None:
    """Writes `ckpt` to `path` atomically (the previous file stays intact if anything fails)."""
    stages = {"stage1": ckpt.model.stage1, "stage2": ckpt.model.stage2}
    if original_layout:
        save_original_checkpoint(path, OriginalCheckpoint(
            stages={p: StageCheckpoint(s.model, s.projector, s.metadata) for p, s in stages.items()},
            mapping=ckpt.vocab.mapping, shortlist=ckpt.vocab.shortlist, unk_index=ckpt.vocab.unk_index,
            tail_config=json.loads(ckpt.context_config.to_json()), metadata=ckpt.metadata))
        return
    out: dict[str, np.ndarray] = {"format": np.array(FORMAT)}
    for p, stage in stages.items():
        out.update({f"{p}_field_{k}": np.asarray(getattr(stage.model.state, k)) for k in _FIELDS})
        out[f"{p}_config_json"] = np.array(stage.model.config.to_json())
        out.update({f"{p}_{k}": v for k, v in stage.projector.to_dict().items()})
        out[f"{p}_metadata_json"] = np.array(json.dumps(stage.metadata, sort_keys=True))
    out.update({"mapping": ckpt.vocab.mapping, "shortlist": ckpt.vocab.shortlist,
                "unk_index": np.int64(ckpt.vocab.unk_index),
                "tail_config_json": np.array(ckpt.context_config.to_json()),
                "metadata_json": np.array(json.dumps(ckpt.metadata, sort_keys=True))})
    with atomic_open(Path(path), "wb") as f:
        np.savez_compressed(f, **out)


class HTFTCheckpointError(ValueError):
    """A file that is not a readable .npz archive (truncated, damaged or of another format)."""


def load_htft_checkpoint(path) -> HTFTCheckpoint:
    """Reads a checkpoint written by save_htft_checkpoint (either layout)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HTFT checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, ValueError) as err:  # np.load's and zipfile's for a damaged archive
        raise HTFTCheckpointError(f"{path}: not a readable HTFT checkpoint (.npz archive): {err}") from None
    if "format" not in a:
        return _from_original(path)
    if str(a["format"]) != FORMAT:
        raise ValueError(f"{path}: format {str(a['format'])!r}, expected {FORMAT!r}")
    missing = [k for k in ("mapping", "shortlist", "unk_index", "tail_config_json", "metadata_json") if k not in a]
    missing += [f"{p}_field_{k}" for p in STAGES for k in _FIELDS if f"{p}_field_{k}" not in a]
    if missing:
        raise KeyError(f"{path}: not a complete HTFT checkpoint; missing keys {missing[:8]}")
    stages = []
    for p in STAGES:
        state = FieldState(**{k: jnp.asarray(a[f"{p}_field_{k}"]) for k in _FIELDS})
        model = HTFRModel(state, HTFRConfig.from_json(str(a[f"{p}_config_json"])))
        own = (f"{p}_field_", f"{p}_config_json", f"{p}_metadata_json")
        proj = {k[len(p) + 1:]: v for k, v in a.items() if k.startswith(f"{p}_") and not k.startswith(own)}
        stages.append(StageState(model, ProjectionStack.from_arrays(proj), json.loads(str(a[f"{p}_metadata_json"]))))
    vocab = VocabMapping(a["mapping"].astype(np.int64), a["shortlist"].astype(np.int64), int(a["unk_index"]))
    return HTFTCheckpoint(HypertensorFieldTransformer(*stages), vocab,
                          ContextBuilderConfig.from_json(str(a["tail_config_json"])),
                          json.loads(str(a["metadata_json"])))


def _from_original(path: Path) -> HTFTCheckpoint:
    ck = load_original_checkpoint(path)
    missing = [p for p in STAGES if p not in ck.stages or ck.stages[p].projector is None]
    if missing or ck.mapping is None or ck.shortlist is None or ck.unk_index is None:
        raise KeyError(f"{path}: not an HTFT checkpoint (stages without a projector: {missing}, vocabulary keys "
                       f"present: {ck.mapping is not None and ck.shortlist is not None})")
    stages = [StageState(ck.stages[p].model, ck.stages[p].projector, ck.stages[p].metadata) for p in STAGES]
    raw = ck.stages["stage1"].projector.raw_dim
    cfg = ck.tail_config or {}
    known = {f.name for f in dataclasses.fields(ContextBuilderConfig)}
    if not {"window_size", "hidden_dim"} <= set(cfg):
        raise KeyError(f"{path}: tail_config_json lacks window_size / hidden_dim (stage 1 raw width {raw})")
    return HTFTCheckpoint(HypertensorFieldTransformer(*stages),
                          VocabMapping(ck.mapping.astype(np.int64), ck.shortlist.astype(np.int64), ck.unk_index),
                          ContextBuilderConfig(**{k: v for k, v in cfg.items() if k in known}), ck.metadata or {})
