"""`load_teacher`: the HTFT teacher behind `--model DIR` (and its tokenizer behind `--tokenizer`).

DIR is one of:
- a Hugging Face hub id (`google/gemma-3-270m`, the seed's default) that is not a local path: resolved to a local
  snapshot by `huggingface_hub.snapshot_download` (the local cache first, then the hub, with `--hf-token`);
- one of our checkpoint directories (config.json with `jaxmodels_version`, e.g. `runs/h1/model`) or a training run
  directory holding one in `model/` -> `FlaxTeacher` (`jaxmodels.from_pretrained`);
- a Hugging Face causal LM directory (config.json, weights, tokenizer files): of a family we implement
  (`jaxmodels.family.model_types()`: llama, gemma3_text, qwen2, ...) -> `FlaxTeacher` in JAX, no torch; of any
  other -> `HFTeacher` (transformers, PyTorch). `backend="torch"` (`--teacher-backend torch`) takes transformers
  for our families too, `backend="jax"` refuses a family we do not implement.
The tokenizer: `--tokenizer bytes` (jaxmodels.tokenizer.ByteTokenizer) or `--tokenizer TOKDIR` (its tokenizer.json)
when given; otherwise an HF directory's own tokenizer files (tokenizer.json for the JAX teacher), and for our
checkpoints a tokenizer.json next to the weights, else the one the training run recorded in run.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from jaxmodels_interop.teacher import FlaxTeacher, HFTeacher, TeacherError, sha256_files

BYTES = "bytes"
BACKENDS = ("auto", "jax", "torch")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]  # config, weights, tokenizer files


def resolve_model_dir(model: str, token: str | None = None, *, cache_dir: str | Path | None = None) -> Path:
    """--model -> a local directory: the path itself, or the hub snapshot of a hub id (cached copy first)."""
    path = Path(model)
    if path.is_dir():
        return path
    if path.exists() or not _HUB_ID.match(model):
        raise TeacherError(f"--model {model}: no such directory; expected a Hugging Face model directory or hub id, "
                           f"or one of ours (a jaxmodels checkpoint or training run directory)")
    from huggingface_hub import snapshot_download

    kw = dict(repo_id=model, token=token, cache_dir=cache_dir, allow_patterns=_HUB_FILES)
    try:
        return Path(snapshot_download(local_files_only=True, **kw))
    except Exception:  # noqa: BLE001 - not in the local cache: try the hub below
        pass
    try:
        return Path(snapshot_download(**kw))
    except Exception as err:  # noqa: BLE001 - offline, gated, unknown repo: one clear line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TeacherError(f"--model {model}: not a local directory, and the Hugging Face hub snapshot could not be "
                           f"fetched ({type(err).__name__}: {first}); pass --hf-token for gated models, or a local "
                           f"directory") from None


def load_tokenizer_arg(value: str | None):
    """--tokenizer: None, "bytes" or a directory holding tokenizer.json -> None or a jaxmodels.tokenizer object."""
    if value is None:
        return None
    from jaxmodels_interop.tokenizer import load_tokenizer

    try:
        return load_tokenizer(None if value == BYTES else value)  # None there: the byte-level tokenizer
    except (FileNotFoundError, ValueError, OSError) as err:
        raise TeacherError(f"--tokenizer {value}: {err}; expected 'bytes' or a directory with tokenizer.json") from err


def native_model_dir(path: Path) -> Path | None:
    """Our checkpoint directory for `path` (itself, or a training run's model/), or None for other directories."""
    from jaxmodels.checkpoint import FORMAT_KEY

    candidates = [path / "model", path] if (path / "run.json").is_file() else [path]
    for d in candidates:
        cfg = d / "config.json"
        if cfg.is_file():
            try:
                data = json.loads(cfg.read_text())
            except json.JSONDecodeError as err:
                raise TeacherError(f"--model {path}: {cfg} is not valid JSON ({err})") from err
            if isinstance(data, dict) and FORMAT_KEY in data:
                return d
    return None


def _run_identity(model_dir: Path) -> dict:
    """What the training run that wrote model_dir recorded (run.json next to it), or {}."""
    run_json = model_dir.parent / "run.json"
    if model_dir.name == "model" and run_json.is_file():
        try:
            return json.loads(run_json.read_text()).get("identity", {})
        except json.JSONDecodeError as err:
            raise TeacherError(f"{run_json} is not valid JSON ({err})") from err
    return {}


def load_flax_teacher(model_dir: Path, tokenizer=None, *, name: str | None = None) -> FlaxTeacher:
    """One of our checkpoint directories as a teacher (the weights and config.json identify it)."""
    import jaxmodels

    run = _run_identity(model_dir)
    if run.get("task", "lm") != "lm":
        raise TeacherError(f"--model {name or model_dir}: trained for task {run['task']!r} (run.json); the teacher "
                           f"must be a causal language model (task 'lm')")
    if tokenizer is None and (model_dir / "tokenizer.json").is_file():
        tokenizer = load_tokenizer_arg(str(model_dir))
    if tokenizer is None and run.get("tokenizer") is not None:
        tokenizer = load_tokenizer_arg(run["tokenizer"])
    if tokenizer is None:
        kind = "a jaxmodels checkpoint" if native_model_dir(model_dir) is not None else "a Hugging Face directory"
        raise TeacherError(f"--model {name or model_dir}: {kind} with no tokenizer (no tokenizer.json there, no "
                           f"run.json naming one); pass --tokenizer DIR (a directory with tokenizer.json) or "
                           f"--tokenizer bytes")
    try:
        model = jaxmodels.from_pretrained(model_dir)
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise TeacherError(f"--model {name or model_dir}: cannot load this jaxmodels checkpoint ({err})") from err
    if not hasattr(model, "spec") or not hasattr(model, "hidden_states"):
        raise TeacherError(f"--model {name or model_dir}: {type(model).__name__} is not a decoder language model; "
                           f"the teacher must predict next tokens")
    files = [p for p in model_dir.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors")]
    fingerprint = sha256_files(files) + ":" + getattr(tokenizer, "name", type(tokenizer).__name__)
    return FlaxTeacher(model, tokenizer, name=name or str(model_dir), fingerprint=fingerprint)


def jax_model_type(path: Path) -> str | None:
    """The model_type of a Hugging Face directory's config.json when it is a family we implement, else None."""
    import jaxmodels  # noqa: F401 - registers the built-in families
    from jaxmodels import family

    cfg = path / "config.json"
    try:
        model_type = json.loads(cfg.read_text()).get("model_type") if cfg.is_file() else None
    except (json.JSONDecodeError, AttributeError):
        return None  # HFTeacher reports what is wrong with it
    return model_type if model_type in family.model_types() else None


def load_teacher(model: str, tokenizer: str | None = None, *, hf_token: str | None = None, backend: str = "auto"):
    """--model (a directory or hub id), --tokenizer (None, "bytes" or a directory), --teacher-backend (auto, jax or
    torch) -> FlaxTeacher or HFTeacher."""
    if backend not in BACKENDS:
        raise TeacherError(f"--teacher-backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    path = resolve_model_dir(model, hf_token)
    tok = load_tokenizer_arg(tokenizer)
    native = native_model_dir(path)
    if native is not None:
        if backend == "torch":
            raise TeacherError(f"--model {model}: one of our checkpoints runs in JAX only; --teacher-backend torch "
                               f"needs a Hugging Face directory (e.g. `jaxmodels-convert to-hf` of it)")
        return load_flax_teacher(native, tok, name=str(path))
    model_type = jax_model_type(path)
    if backend == "jax" and model_type is None:
        raise TeacherError(f"--model {model}: --teacher-backend jax needs a family we implement "
                           f"({', '.join(_families())}); this config.json is not one; use --teacher-backend torch")
    if backend != "torch" and model_type is not None:
        return load_flax_teacher(path, tok, name=str(path))
    return HFTeacher(path, tokenizer=tok)


def _families() -> list[str]:
    from jaxmodels import family

    return family.model_types()
