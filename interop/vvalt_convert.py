"""V.V.A.L.T weights between our Flax models and the PyTorch twin / Hugging Face layout, as a key table.

Each rule pairs a Flax parameter path with a Hugging Face state-dict key and a named, invertible transform;
the same table drives both directions. Pure NumPy + safetensors: converting needs no torch.

    Flax                          Hugging Face                   transform
    [vvalt.]encoder.W_semantic    [vvalt.]encoder_W_semantic     identity  (both [in, out])
    [vvalt.]attention.b_output    [vvalt.]attention_b_output     identity
    classifier.kernel             classifier.weight              transpose ([F, L] <-> [L, F])
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from jaxmodels import checkpoint
from jaxmodels.io import atomic_directory
from jaxmodels.vvalt import VVALTConfig
from jaxmodels.vvalt.model import MODEL_CLASSES, to_numpy_weights, x64_scope

TWIN_SOURCE = Path(__file__).with_name("vvalt_torch.py")
ARCHITECTURES = {"base": "VVALTModel", "classification": "VVALTForSequenceClassification",
                 "regression": "VVALTForRegression"}


@dataclasses.dataclass(frozen=True)
class Transform:
    """A named, invertible array transform: `to_hf` for export, `to_jax` for import."""

    name: str

    def to_hf(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.T) if self.name == "transpose" else a

    def to_jax(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.T) if self.name == "transpose" else a


IDENTITY = Transform("identity")
TRANSPOSE = Transform("transpose")

# (Flax path template, HF key template, transform); {p} is the optional "vvalt." prefix of the heads,
# {n} a parameter name inside the component.
KEY_TABLE: tuple[tuple[str, str, Transform], ...] = (
    ("{p}encoder.{n}", "{p}encoder_{n}", IDENTITY),
    ("{p}selector.{n}", "{p}selector_{n}", IDENTITY),
    ("{p}projector.{n}", "{p}projector_{n}", IDENTITY),
    ("{p}attention.{n}", "{p}attention_{n}", IDENTITY),
    ("{p}refiner.{n}", "{p}refiner_{n}", IDENTITY),
    ("classifier.kernel", "classifier.weight", TRANSPOSE),
    ("classifier.bias", "classifier.bias", IDENTITY),
    ("regressor.kernel", "regressor.weight", TRANSPOSE),
    ("regressor.bias", "regressor.bias", IDENTITY),
)


def _regex(template: str) -> re.Pattern:
    pattern = re.escape(template).replace(r"\{p\}", r"(?P<p>(?:vvalt\.)?)").replace(r"\{n\}", r"(?P<n>\w+?)")
    return re.compile(f"^{pattern}$")


_RULES = [(_regex(j), _regex(h), j, h, t) for j, h, t in KEY_TABLE]


def _map(tensors: dict[str, np.ndarray], *, to_hf: bool, source: str) -> dict[str, np.ndarray]:
    out, unmapped = {}, []
    for key, value in tensors.items():
        for jax_re, hf_re, jax_t, hf_t, transform in _RULES:
            m = (jax_re if to_hf else hf_re).match(key)
            if m:
                groups = {k: v for k, v in m.groupdict().items()}
                target = (hf_t if to_hf else jax_t).format(**groups)
                out[target] = transform.to_hf(value) if to_hf else transform.to_jax(value)
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise ValueError(f"{source}: no V.V.A.L.T conversion rule for tensor(s) {sorted(unmapped)}")
    return out


def flax_to_hf_tensors(model) -> dict[str, np.ndarray]:
    """{HF key: array} for every parameter of a Flax V.V.A.L.T model."""
    return _map(to_numpy_weights(model), to_hf=True, source=type(model).__name__)


def hf_to_flax_tensors(tensors: dict[str, np.ndarray], source: str = "state dict") -> dict[str, np.ndarray]:
    """{Flax parameter path: array} from a Hugging Face V.V.A.L.T state dict."""
    return _map(tensors, to_hf=False, source=source)


def _kind(model) -> str:
    return next(k for k, cls in MODEL_CLASSES.items() if type(model) is cls)


def hf_config_dict(config: VVALTConfig, kind: str) -> dict:
    """config.json for the twin: our fields, the architecture, and auto_map for trust_remote_code."""
    arch = ARCHITECTURES[kind]
    fields = dataclasses.asdict(config)
    fields["safe_bounds"] = list(config.safe_bounds)
    auto_map = {"AutoConfig": "modeling_vvalt.VVALTConfig", "AutoModel": "modeling_vvalt.VVALTModel"}
    if kind == "classification":
        auto_map["AutoModelForSequenceClassification"] = "modeling_vvalt.VVALTForSequenceClassification"
    return {"model_type": "vvalt", "architectures": [arch], "auto_map": auto_map, **fields}


# Attributes transformers writes into any config.json; they carry nothing V.V.A.L.T needs.
_GENERIC_HF_KEYS = {"architectures", "auto_map", "dtype", "torch_dtype", "transformers_version", "id2label",
                    "label2id", "problem_type", "return_dict", "output_hidden_states", "output_attentions",
                    "use_return_dict", "chunk_size_feed_forward", "is_encoder_decoder", "tie_word_embeddings",
                    "model_type", "name_or_path", "_name_or_path"}


def config_from_hf(cfg: dict, source: str = "config.json") -> VVALTConfig:
    """A VVALTConfig from a twin's config.json; attributes we cannot represent raise, naming them."""
    if cfg.get("model_type") != "vvalt":
        raise ValueError(f"{source}: model_type is {cfg.get('model_type')!r}, expected 'vvalt'")
    ours = {f.name for f in dataclasses.fields(VVALTConfig)}
    unknown = sorted(set(cfg) - ours - _GENERIC_HF_KEYS)
    if unknown:
        raise ValueError(f"{source}: unsupported V.V.A.L.T config attribute(s) {unknown}; "
                         f"supported: {sorted(ours)}")
    fields = {k: cfg[k] for k in ours if k in cfg}
    if "num_labels" not in fields and "id2label" in cfg:
        fields["num_labels"] = len(cfg["id2label"])
    if "safe_bounds" in fields:
        fields["safe_bounds"] = tuple(fields["safe_bounds"])
    return VVALTConfig(**fields)


def export_hf(model, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Writes a directory transformers loads: config.json, model.safetensors (exact twin keys) and
    modeling_vvalt.py (for `trust_remote_code=True` where jaxmodels is not installed). Atomic."""
    kind = _kind(model)
    tensors = flax_to_hf_tensors(model)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config_dict(model.config, kind), indent=2) + "\n")
        shutil.copyfile(TWIN_SOURCE, tmp / "modeling_vvalt.py")
    return Path(path)


def load_hf(path: str | os.PathLike, *, dtype=None):
    """A Flax V.V.A.L.T model from a twin / Hugging Face directory; every tensor checked and used."""
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face V.V.A.L.T directory)")
    raw = json.loads(cfg_path.read_text())
    config = config_from_hf(raw, str(cfg_path))
    tensors = hf_to_flax_tensors(checkpoint.read_safetensors(path / "model.safetensors"), str(path))
    kind = ("classification" if "classifier.kernel" in tensors
            else "regression" if "regressor.kernel" in tensors else "base")
    archs = raw.get("architectures") or [ARCHITECTURES[kind]]
    if archs[0] != ARCHITECTURES[kind]:
        raise ValueError(f"{cfg_path}: architectures says {archs[0]!r} but the weights are those of "
                         f"{ARCHITECTURES[kind]!r}")
    cls = MODEL_CLASSES[kind]
    with x64_scope(dtype or np.float32):
        abstract = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
        return checkpoint.fill_abstract(abstract, tensors, source=str(path), dtype=dtype)
