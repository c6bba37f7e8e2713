"""Teacher capture for the HTFT: windows of a token stream through a frozen causal LM.

For every window start s in 0, stride, 2 stride, ... (while s + seq_len < len(stream)): tokens [W] =
stream[s : s + W], the final-normed hidden states [W, H], the target = stream[s + W] (the next token), and
optionally the teacher's logits at the window's last position [V], and the teacher's RoPE phases [W, 2] when it
uses rotary positions (`rope_frequencies`; see `jaxmodels.htft.rope_phases`). Two sources:
- `FlaxTeacher`: one of our Flax decoders (`jaxmodels.from_pretrained`: our checkpoints, and Hugging Face
  directories of the families we implement, e.g. Llama / SmolLM2, Gemma 3, Qwen, Mistral), through
  `hidden_states`, in JAX (no torch);
- `HFTeacher`: any Hugging Face causal LM directory (by default those of families we do not implement), run
  through transformers (PyTorch, CPU, batched), our Hyformer exports (`jaxmodels-convert to-hf`) included, with
  our registered modeling code (no remote code).
`interop.teacher_load.load_teacher` picks one for a directory (`backend=`). `capture` caches the result on disk
under a key hashing the teacher's files, the token stream and the settings, so a second run with the same teacher
and data reads it back instead of recomputing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from jaxmodels.io import atomic_open

CACHE_VERSION = "htft-teacher-1"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class TeacherError(ValueError):
    """The teacher, its tokenizer or the requested windows cannot be used."""


@dataclasses.dataclass(frozen=True, eq=False)
class TeacherWindows:
    """N windows (satisfies jaxmodels.htft.TeacherWindowLike): tokens [N, W] int32, hidden [N, W, H] float32,
    targets [N] int64, logits [N, V] float32 or None, rope [N, W, 2] float32 (the teacher's RoPE phases) or None
    (the teacher has no rotary positions: the ContextBuilder uses synthetic phases)."""

    tokens: np.ndarray
    hidden: np.ndarray
    targets: np.ndarray
    logits: np.ndarray | None = None
    rope: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def window_starts(num_tokens: int, seq_len: int, stride: int, max_windows: int | None = None) -> np.ndarray:
    """Start offsets of the windows over a stream of num_tokens (each window needs its next token)."""
    if seq_len < 1 or stride < 1:
        raise TeacherError(f"seq_len and stride must be >= 1, got {seq_len}, {stride}")
    starts = np.arange(0, max(num_tokens - seq_len, 0), stride)
    return starts if max_windows is None else starts[:max_windows]


def sha256_files(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def check_vocab(name: str, tokenizer_size: int, vocab_size: int) -> None:
    if tokenizer_size > vocab_size:
        raise TeacherError(f"--model {name}: the tokenizer has {tokenizer_size} tokens but the teacher's embedding has "
                           f"{vocab_size} rows; tokenizer and teacher do not match")


class AutoTokenizerAdapter:
    """A transformers tokenizer behind the interface of jaxmodels.tokenizer (encode, decode, vocab_size, bos_id)."""

    def __init__(self, tokenizer):
        self.hf, self.vocab_size, self.bos_id = tokenizer, len(tokenizer), tokenizer.bos_token_id
        self.name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.hf(text, add_special_tokens=False)["input_ids"], np.int64)

    def decode(self, ids) -> str:
        return self.hf.decode([int(i) for i in np.asarray(ids).reshape(-1)])


class HFTeacher:
    """A Hugging Face causal LM directory (config.json, weights, tokenizer files), loaded with transformers.

    `tokenizer` (an object with encode / decode / vocab_size / bos_id, e.g. jaxmodels.tokenizer's) replaces the
    directory's own tokenizer files, e.g. for a byte-level Hyformer exported by `jaxmodels-convert to-hf`.
    """

    backend = "torch"

    def __init__(self, model_dir, *, tokenizer=None, dtype: str = "float32"):
        import torch
        import transformers

        from jaxmodels_interop.hf_hyformer import HyformerModel  # registers model_type "hyformer" (our exports)

        self.dir = Path(model_dir)
        if not (self.dir / "config.json").is_file():
            raise TeacherError(f"--model {model_dir}: no config.json there; expected a Hugging Face model directory "
                               f"or one of ours (a jaxmodels checkpoint or training run directory)")
        try:
            config = transformers.AutoConfig.from_pretrained(self.dir)
        except (ValueError, KeyError, OSError) as err:
            raise TeacherError(f"--model {model_dir}: transformers cannot read its config.json ({err})") from err
        if type(config) not in transformers.MODEL_FOR_CAUSAL_LM_MAPPING:
            raise TeacherError(f"--model {model_dir}: model_type {config.model_type!r} ({type(config).__name__}) is "
                               f"not a causal language model in transformers; the teacher must predict next tokens")
        hint = "pass --tokenizer DIR (a directory with tokenizer.json) or --tokenizer bytes"
        if tokenizer is None and not any((self.dir / f).is_file() for f in TOKENIZER_FILES):
            raise TeacherError(f"--model {model_dir}: no tokenizer files there ({', '.join(TOKENIZER_FILES)}); {hint}")
        if tokenizer is None:
            try:
                tokenizer = AutoTokenizerAdapter(transformers.AutoTokenizer.from_pretrained(self.dir))
            except (ValueError, OSError, KeyError, TypeError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise TeacherError(f"--model {model_dir}: transformers cannot load the tokenizer there ({first}); "
                                   f"{hint}") from err
        self.model = transformers.AutoModelForCausalLM.from_pretrained(self.dir, dtype=getattr(torch, dtype)).eval()
        self.tokenizer = tokenizer
        self.vocab_size = int(self.model.get_input_embeddings().num_embeddings)
        check_vocab(str(model_dir), tokenizer.vocab_size, self.vocab_size)
        text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.hidden_size = int(text_cfg.hidden_size)
        self.max_positions = getattr(text_cfg, "max_position_embeddings", None)
        self.name = str(self.dir)
        self.bos_id = tokenizer.bos_id
        self._hyformer = isinstance(self.model, HyformerModel)  # hidden states in output.extras
        self._torch = torch

    def fingerprint(self) -> str:
        files = [p for p in self.dir.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin",
                                                                                  ".model", ".txt")]
        return sha256_files(files)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text), np.int64)

    def rope_frequencies(self) -> np.ndarray | None:
        """The rotary frequencies [F] (radians per position) the teacher's own RoPE code uses, or None.

        Our Hyformer twin: read back from its `rope_angles` at position 1; transformers models: the `inv_freq`
        buffer of their rotary embedding (scaling applied; for per-layer-type RoPE such as Gemma 3's, the global
        layers' `full_attention_inv_freq`); None for models without one (e.g. learned absolute positions).
        """
        if self._hyformer:
            from jaxmodels_interop.hf_hyformer.modeling_hyformer import rope_angles

            cos, sin = rope_angles(self._torch.arange(2)[None], self.model.config.head_dim)  # [1, 2, 1, H/2]
            return np.arctan2(sin[0, 1, 0].numpy(), cos[0, 1, 0].numpy()).astype(np.float64)
        for module in self.model.modules():
            if type(module).__name__.endswith("RotaryEmbedding"):
                buffers = {k: v for k, v in module.named_buffers() if k.endswith("inv_freq") and "original" not in k}
                for name in ("inv_freq", "full_attention_inv_freq", *sorted(buffers)):
                    if name in buffers:
                        return buffers[name].float().numpy().astype(np.float64)
        return None

    def run(self, ids: np.ndarray, with_logits: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """ids [B, W] -> (hidden [B, W, H], logits at the last position [B, V] or None)."""
        with self._torch.no_grad():
            if self._hyformer:
                out = self.model(input_ids=self._torch.as_tensor(ids))
                hidden = out.extras["hidden_states"]
            else:
                out = self.model(input_ids=self._torch.as_tensor(ids), output_hidden_states=True)
                hidden = out.hidden_states[-1]
        logits = out.logits[:, -1].float().numpy() if with_logits else None
        return hidden.float().numpy(), logits

    def head(self, hidden: np.ndarray) -> np.ndarray:
        """The LM head alone: final hidden states [B, H] -> logits [B, V]."""
        with self._torch.no_grad():
            return self.model.get_output_embeddings()(self._torch.as_tensor(hidden)).float().numpy()


class FlaxTeacher:
    """One of our Flax decoders (`jaxmodels.from_pretrained` of our checkpoint or of a Hugging Face directory of a
    family we implement); `tokenizer` is any object with `encode(text) -> ids` (e.g. jaxmodels.tokenizer's)."""

    backend = "jax"

    def __init__(self, model, tokenizer, *, name: str, fingerprint: str):
        spec = model.spec
        self.model, self.tokenizer, self.name, self._fingerprint = model, tokenizer, name, fingerprint
        self._fns = None
        self.vocab_size, self.hidden_size, self.max_positions = spec.vocab_size, spec.d_model, spec.max_seq_len
        self.bos_id = getattr(tokenizer, "bos_id", None)
        if hasattr(tokenizer, "vocab_size"):
            check_vocab(name, int(tokenizer.vocab_size), self.vocab_size)

    def fingerprint(self) -> str:
        return self._fingerprint

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text), np.int64)

    def rope_frequencies(self) -> np.ndarray:
        """The rotary frequencies [F] our decoder uses (`scaled_inverse_frequencies` of its spec): the full
        attention layers', or the sliding layers' when every layer slides (as HFTeacher reads transformers')."""
        from jaxmodels.layers.rope import scaled_inverse_frequencies

        spec = self.model.spec
        theta, scaling = spec.rope_theta, spec.rope_scaling
        types = {spec.layer_type(i) for i in range(spec.n_layers)}
        if spec.local_rope_theta is not None and "full_attention" not in types:
            theta, scaling = spec.local_rope_theta, spec.local_rope_scaling
        return np.asarray(scaled_inverse_frequencies(spec.head_dim, theta, dict(scaling)), np.float64)

    def _compiled(self):
        """(parameters, jitted forward, jitted head): the model split once, so a call passes arrays only (nnx.jit
        re-flattens the whole module on every call: ~0.2 s for SmolLM2's head alone)."""
        if self._fns is None:
            import jax
            from flax import nnx

            graphdef, state = nnx.split(self.model)
            forward = jax.jit(lambda st, ids: _forward(nnx.merge(graphdef, st), ids))
            head = jax.jit(lambda st, hidden: _decode(nnx.merge(graphdef, st), hidden))
            self._fns = (state, forward, head)
        return self._fns

    def run(self, ids: np.ndarray, with_logits: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """ids [B, W] -> (final hidden states [B, W, H], logits at the last position [B, V] or None)."""
        import jax.numpy as jnp

        state, forward, _ = self._compiled()
        hidden, logits = forward(state, jnp.asarray(ids, jnp.int32))
        return np.asarray(hidden, np.float32), (np.asarray(logits, np.float32) if with_logits else None)

    def head(self, hidden: np.ndarray) -> np.ndarray:
        """The LM head alone: final hidden states [B, H] -> logits [B, V] (as `run` computes them)."""
        import jax.numpy as jnp

        state, _, head = self._compiled()
        return np.asarray(head(state, jnp.asarray(hidden, jnp.float32)), np.float32)


def _forward(model, ids):
    """Our decoders: ids [B, W] -> (final hidden states [B, W, H], last-position logits [B, V]). The LM head runs
    on the last position only (the models' own call computes all W; at SmolLM2's 49152 tokens that is 18% of the
    forward at W = 32)."""
    hidden, _ = model.hidden_states(ids, causal=True)  # [B, W, H]
    return hidden, _decode(model, hidden[:, -1])


def _decode(model, hidden):
    """Our decoders' LM head on final hidden states [B, H] -> logits [B, V] (tied: the embedding decodes)."""
    import jax.numpy as jnp

    head = getattr(model, "lm_head", None)
    head = model.embed if head is None else head
    logits = head.decode(hidden[:, None], layers="plain")[:, 0]  # [B, V]; XLA's dot (the tuned path is for decode)
    cap = model.spec.logit_softcap
    return logits if cap is None else jnp.tanh(logits / cap) * cap


def teacher_phases(teacher, seq_len: int) -> np.ndarray | None:
    """The teacher's RoPE phases [W, 2] for windows of seq_len, or None (no RoPE, or a teacher-like object
    without `rope_frequencies`)."""
    from jaxmodels.htft import rope_phases

    freqs = teacher.rope_frequencies() if hasattr(teacher, "rope_frequencies") else None
    return None if freqs is None else rope_phases(freqs, seq_len)


def token_stream(teacher, texts: list[str]) -> np.ndarray:
    """The documents joined by blank lines, tokenized, with the teacher's BOS (if any) at the start."""
    ids = teacher.encode("\n\n".join(texts))
    if teacher.bos_id is not None:
        ids = np.concatenate([[teacher.bos_id], ids])
    return ids.astype(np.int64)


def capture(teacher, stream: np.ndarray, *, seq_len: int, stride: int, max_windows: int | None = None,
            with_logits: bool = False, batch_size: int = 8, cache_dir=None) -> tuple[TeacherWindows, bool]:
    """Runs the teacher over the windows of `stream` [T]; returns (windows, whether the disk cache was hit)."""
    stream = np.asarray(stream, np.int64)
    if teacher.max_positions is not None and seq_len > teacher.max_positions:
        raise TeacherError(f"--seq-len {seq_len} exceeds the teacher's maximum of {teacher.max_positions} positions")
    if stream.size and (stream.min() < 0 or stream.max() >= teacher.vocab_size):
        raise TeacherError(f"token ids {int(stream.min())}..{int(stream.max())} fall outside the teacher's "
                           f"vocabulary of {teacher.vocab_size}")
    starts = window_starts(stream.size, seq_len, stride, max_windows)
    if starts.size == 0:
        raise TeacherError(f"a stream of {stream.size} tokens holds no window of seq_len {seq_len} plus its next "
                           f"token")
    phases = teacher_phases(teacher, seq_len)
    rope = None if phases is None else np.broadcast_to(phases, (len(starts), seq_len, 2))
    path = None
    if cache_dir is not None:
        settings = {"v": CACHE_VERSION, "teacher": teacher.fingerprint(), "seq_len": seq_len, "stride": stride,
                    "max_windows": max_windows, "logits": with_logits,
                    "stream": hashlib.sha256(stream.tobytes()).hexdigest()}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
        path = Path(cache_dir) / f"teacher-{key}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    return TeacherWindows(z["tokens"], z["hidden"], z["targets"],
                                          z["logits"] if "logits" in z.files else None, rope), True
            except (zipfile.BadZipFile, EOFError, ValueError, KeyError) as err:  # damaged: computed again below
                print(f"warning: teacher cache {path} is unreadable ({err}); capturing again", file=sys.stderr)
    tokens = np.stack([stream[s:s + seq_len] for s in starts])  # [N, W]
    targets = stream[starts + seq_len]  # [N]
    hidden = np.zeros((len(starts), seq_len, teacher.hidden_size), np.float32)
    logits = None
    for lo in range(0, len(starts), batch_size):
        h, lg = teacher.run(tokens[lo:lo + batch_size], with_logits)
        hidden[lo:lo + len(h)] = h
        if lg is not None:
            logits = np.zeros((len(starts), lg.shape[1]), np.float32) if logits is None else logits
            logits[lo:lo + len(lg)] = lg
    windows = TeacherWindows(tokens.astype(np.int32), hidden, targets, logits, rope)
    if path is not None:
        arrays = {"tokens": windows.tokens, "hidden": hidden, "targets": targets}
        if logits is not None:
            arrays["logits"] = logits
        with atomic_open(path, "wb") as f:  # creates cache_dir when missing
            np.savez(f, **arrays)
    return windows, False


def generate_greedy(teacher, student, prompt: str, max_new_tokens: int) -> tuple[np.ndarray, str]:
    """Greedy text from `prompt` with a trained HTFT (`jaxmodels.htft.HTFTCheckpoint`): the teacher only supplies
    the hidden states of the last W tokens (and its RoPE phases, as in training); the student picks the next token
    among the shortlist ("other" is never chosen). A context shorter than W is left-padded with the teacher's BOS
    (or token 0).
    Returns (the new token ids [max_new_tokens], their decoded text)."""
    from jaxmodels.htft import ContextBuilder

    cfg = student.context_config
    if cfg.hidden_dim != teacher.hidden_size:
        raise TeacherError(f"the student was trained on hidden states of width {cfg.hidden_dim}, the teacher has "
                           f"{teacher.hidden_size}")
    builder = ContextBuilder(cfg)
    w = cfg.window_size
    phases = teacher_phases(teacher, w)
    rope = None if phases is None else phases[None]
    ids = token_stream(teacher, [prompt]).tolist()
    pad = teacher.bos_id if teacher.bos_id is not None else 0
    new = []
    for _ in range(max_new_tokens):
        window = np.array(([pad] * max(0, w - len(ids)) + ids)[-w:], np.int64)[None]  # [1, W]
        hidden, _ = teacher.run(window, False)
        batch = builder.build(window, hidden, rope)
        logits = student.model.predict(batch.context, batch.tail)[0]  # [S + 1]
        logits[student.vocab.unk_index] = -np.inf
        token = int(student.vocab.to_full(int(np.argmax(logits))))
        ids.append(token)
        new.append(token)
    new = np.array(new, np.int64)
    return new, teacher.tokenizer.decode(new.tolist()) if hasattr(teacher.tokenizer, "decode") else ""
