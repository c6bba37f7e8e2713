"""`python -m benchmarks decode --model DIR`: decode and prefill of a real checkpoint against transformers and
against the memory-bandwidth limit, all measured in one run.

* Bandwidth: a float32 matrix-vector product over a 512 MiB matrix, in torch, in XLA and in our decode kernel
  (the operation a batch-1 decode step is made of), median of several runs; the fastest is the machine's figure.
* Limit: bandwidth / bytes read per decode step (every weight once: the parameters' bytes, a tied LM head
  counted once), in tokens/s at batch 1.
* Decode: greedy `generate` of N and of 1 new tokens after the same prompt, ours (`jaxmodels.generate`) and
  transformers' (`generate`, EOS off), alternating; a step's time is (t_N - t_1) / (N - 1), so prefill and the
  first token are left out. The tokens must be identical (each row up to its first EOS: `_same_until_eos`).
* Prefill: the full forward of a `--prefill`-token prompt, ours (jitted) and transformers'.
* int8 (`--dtypes ...,int8,q8_0`): our int8 weight-only models (docs/quantization.md): `int8` with a scale per
  output channel (`from_pretrained(dtype="int8")`), `q8_0` in Q8_0 blocks (`quantize_int8(block_size=32)`, what a
  Q8_0 GGUF of the weights holds), against transformers' bfloat16 (it has no int8 on this CPU), their limit from
  our int8 model's bytes, and their speed over our bfloat16 model timed alternately with them ("vs bf16", target
  >= 1.6).
* Drift (every dtype but float32): against our float32 model on the same prompts, the largest |logit
  difference| of the prompt's prefill (and that over the largest |logit|), and greedy agreement: the fraction of
  the N new tokens identical to the float32 model's, the first position where a row differs (after it, each model
  continues its own text), and teacher-forced agreement (the float32 model's next token predicted given its text
  so far, which counts each near-tie once).

Writes benchmarks/results/decode-model.{json,md} and a chart decode-model.png (tok/s per configuration, the
limit drawn for batch 1).
"""

from __future__ import annotations

import time

import numpy as np

from jaxmodels_benchmarks.charts import figure, grouped_bars
from jaxmodels_benchmarks.harness import time_alternating, write_results

_MATRIX = (8192, 16384)  # 512 MiB of float32


def bandwidth(runs: int = 7) -> dict[str, float]:
    """GB/s read by a float32 matrix-vector product in torch, in XLA and in our decode kernel."""
    import jax
    import jax.numpy as jnp
    import torch

    from jaxmodels_kernels import matvec as kernels

    a = np.random.default_rng(0).standard_normal(_MATRIX, dtype=np.float32)
    x = np.ones(_MATRIX[1], np.float32)
    ta, tx = torch.from_numpy(a), torch.from_numpy(x)
    ja, jx = jnp.asarray(a), jnp.asarray(x)
    fns = {"torch": lambda: ta @ tx, "xla": lambda: xla(ja, jx)}
    xla = jax.jit(lambda m, v: m @ v)
    if kernels.available():
        ours = jax.jit(lambda m, v: kernels.matvec_nk(v[None], m))
        fns["jaxmodels kernel"] = lambda: ours(ja, jx)
    timings = time_alternating(fns, warmup=2, runs=runs)
    return {name: a.nbytes / t["median"] / 1e9 for name, t in timings.items()}


def _weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())  # tied tensors appear once


def _our_weight_bytes(model) -> int:
    """The bytes of our model's parameters (int8 values, their scales, the float norms): a tied head is one."""
    from jaxmodels.checkpoint import flat_params

    return sum(v.size * v.dtype.itemsize for v in flat_params(model).values())


def _drift(ours, reference, prompt: np.ndarray, mine: np.ndarray, ref_tokens: np.ndarray) -> dict:
    """Our model against our float32 model on one prompt: prefill logits and greedy tokens, free-running (each
    model continues its own text) and teacher-forced (the next token after the float32 model's text so far)."""
    import jax.numpy as jnp
    from flax import nnx

    from jaxmodels.generate import forward_logits

    ids = jnp.asarray(prompt, jnp.int32)
    got = np.asarray(forward_logits(*nnx.split(ours), ids), np.float32)
    want = np.asarray(forward_logits(*nnx.split(reference), ids), np.float32)
    diff = float(np.abs(got - want).max())
    t = prompt.shape[1]
    same = mine[:, t:] == ref_tokens[:, t:]
    first = [int(np.argmin(row)) if not row.all() else len(row) for row in same]
    forced = np.asarray(forward_logits(*nnx.split(ours), jnp.asarray(ref_tokens[:, :-1], jnp.int32)))
    forced = forced[:, t - 1:].argmax(-1) == ref_tokens[:, t:]
    return {"max |dlogit| vs f32": diff, "rel |dlogit|": diff / float(np.abs(want).max()),
            "greedy agree vs f32": float(same.mean()), "first differing token": min(first),
            "teacher-forced agree": float(forced.mean())}


def _decode(ours, hf, prompt: np.ndarray, new: int, runs: int, *, compare: bool = True, baseline=None) -> dict:
    """Decode steps of ours and transformers' (and of `baseline`, another of ours, when given), alternating."""
    import torch

    import jaxmodels

    def theirs(n):
        with torch.no_grad():
            return hf.generate(torch.from_numpy(prompt), attention_mask=torch.ones_like(torch.from_numpy(prompt)),
                               max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    t0 = time.perf_counter()
    mine = np.asarray(jaxmodels.generate(ours, prompt, new))
    compile_s = time.perf_counter() - t0  # the 1-token variant compiles in time_alternating's warm-up
    same = _same_until_eos(mine, hf, prompt, new) if compare else "n/a"
    fns = {"ours N": lambda: jaxmodels.generate(ours, prompt, new),
           "ours 1": lambda: jaxmodels.generate(ours, prompt, 1),
           "theirs N": lambda: theirs(new), "theirs 1": lambda: theirs(1)}
    if baseline is not None:
        fns.update({"baseline N": lambda: jaxmodels.generate(baseline, prompt, new),
                    "baseline 1": lambda: jaxmodels.generate(baseline, prompt, 1)})
    t = time_alternating(fns, warmup=1, runs=runs)
    who = ("ours", "theirs") + (("baseline",) if baseline is not None else ())
    step = {w: (t[f"{w} N"]["median"] - t[f"{w} 1"]["median"]) / (new - 1) for w in who}
    return {"step_s": step, "compile_s": compile_s, "same_tokens": same, "timings": t, "tokens": mine}


def _same_until_eos(mine: np.ndarray, hf, prompt: np.ndarray, new: int) -> bool:
    """Whether our tokens equal transformers' greedy ones, each row's new tokens compared up to and including
    its first EOS.

    The timed runs keep EOS off on both sides so that every step is computed: ours ignores it, transformers'
    `min_new_tokens` masks its logit, which changes the token where a row would end. Here transformers runs with
    its EOS on, and what follows a row's EOS (its padding) is not compared.
    """
    import torch

    from jaxmodels.generate import eos_ids
    from jaxmodels_interop.parity import until_eos

    eos = set(eos_ids(hf.generation_config.eos_token_id) or ())
    with torch.no_grad():
        theirs = hf.generate(torch.from_numpy(prompt), attention_mask=torch.ones_like(torch.from_numpy(prompt)),
                             max_new_tokens=new, do_sample=False, pad_token_id=0).numpy()
    t = prompt.shape[1]
    return all(until_eos(a[t:], eos) == until_eos(b[t:], eos) for a, b in zip(mine, theirs))


def _prefill(ours, hf, length: int, vocab: int, runs: int) -> dict:
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from jaxmodels.generate import forward_logits

    ids = np.random.default_rng(5).integers(0, vocab, (1, length))
    graphdef, state = nnx.split(ours)
    jids, tids = jnp.asarray(ids, jnp.int32), torch.from_numpy(ids)

    def theirs():
        with torch.no_grad():
            return hf(tids).logits

    return time_alternating({"ours": lambda: forward_logits(graphdef, state, jids), "theirs": theirs}, warmup=1, runs=runs)


def chart(rows: list[dict], results: dict):
    fig, (ax,) = figure(width=1.8 * len(rows) + 2)
    theirs = "transformers (bfloat16 beside our int8)" if any(r["dtype"] in _INT8 for r in rows) else "transformers"
    grouped_bars(ax, [f"{r['dtype']}\nbatch {r['batch']}" for r in rows],
                 {"jaxmodels": [r["jaxmodels tok/s"] for r in rows], theirs: [r["transformers tok/s"] for r in rows]})
    for i, r in enumerate(rows):
        if r.get("limit tok/s"):
            ax.hlines(r["limit tok/s"], i - 0.45, i + 0.45, colors="k", linestyles="--",
                      label="bandwidth limit" if i == 0 else None)
    ax.set_ylabel("decode tokens / s")
    ax.set_title("Decode steps (prefill excluded)")
    ax.legend()
    fig.tight_layout()
    return fig


_INT8 = {"int8": None, "q8_0": 32}  # our int8 configurations: block size None (a scale per channel) or Q8_0's 32


def _ours(model_dir: str, dtype: str):
    import jax.numpy as jnp

    import jaxmodels
    from jaxmodels.quantize import quantize_int8

    if dtype == "int8":
        return jaxmodels.from_pretrained(model_dir, dtype="int8")
    if dtype == "q8_0":  # what a Q8_0 GGUF file of these weights holds (jaxmodels.layers.int8: gguf's quantiser)
        return quantize_int8(jaxmodels.from_pretrained(model_dir, dtype=jnp.float32), block_size=_INT8[dtype])
    return jaxmodels.from_pretrained(model_dir, dtype=getattr(jnp, dtype))


def run(model_dir: str, *, new_tokens: int, prompt_tokens: int, prefill: int, runs: int,
        dtypes: list[str], batches: list[int]) -> None:
    import jax.numpy as jnp
    import torch
    import transformers

    import jaxmodels

    torch.set_num_threads(2)
    bw = bandwidth()
    gbps = max(bw.values())
    rows, results = [], {"bandwidth_GBps": bw}
    prompts = {}
    reference = None  # our float32 model, the drift's reference, with its greedy tokens per batch
    if any(d != "float32" for d in dtypes):
        reference = jaxmodels.from_pretrained(model_dir, dtype=jnp.float32)
    # our bfloat16 model, timed alternately with each int8 one: their ratio is the int8 target (>= 1.6)
    baseline = _ours(model_dir, "bfloat16") if any(d in _INT8 for d in dtypes) else None
    ref_tokens = {}
    for dtype in dtypes:
        int8 = dtype in _INT8
        theirs_dtype = "bfloat16" if int8 else dtype  # transformers has no int8 decode on this CPU
        hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, theirs_dtype)).eval()
        ours = _ours(model_dir, dtype)
        per_token = _our_weight_bytes(ours) if int8 else _weight_bytes(hf)
        vocab = hf.config.vocab_size
        for batch in batches:
            prompt = prompts.setdefault(batch, np.random.default_rng(batch).integers(0, vocab, (batch, prompt_tokens)))
            d = _decode(ours, hf, prompt, new_tokens, runs, compare=not int8, baseline=baseline if int8 else None)
            mine, theirs = batch / d["step_s"]["ours"], batch / d["step_s"]["theirs"]
            limit = gbps * 1e9 / per_token if batch == 1 else None
            row = {"dtype": dtype, "batch": batch, "jaxmodels tok/s": mine, "transformers": theirs_dtype,
                   "transformers tok/s": theirs, "speed-up": mine / theirs, "limit tok/s": limit or "",
                   "of limit": f"{mine / limit:.0%}" if limit else "", "compile s": d["compile_s"],
                   "same tokens": d["same_tokens"]}
            if int8:
                row["our bf16 tok/s"] = batch / d["step_s"]["baseline"]
                row["vs bf16"] = mine / row["our bf16 tok/s"]
            if reference is not None and dtype != "float32":
                if batch not in ref_tokens:
                    ref_tokens[batch] = np.asarray(jaxmodels.generate(reference, prompt, new_tokens))
                row.update(_drift(ours, reference, prompt, d["tokens"], ref_tokens[batch]))
            rows.append(row)
            results[f"{dtype}/b{batch}"] = {**row, **{k: v for k, v in d.items() if k != "tokens"}}
        p = _prefill(ours, hf, prefill, vocab, runs)
        results[f"{dtype}/prefill{prefill}"] = p
        results[f"{dtype}/prefill_speedup"] = p["theirs"]["median"] / p["ours"]["median"]
        results[f"{dtype}/weight_bytes"] = per_token
        del hf, ours
    columns = list(dict.fromkeys(k for r in rows for k in r))
    notes = (f"Model {model_dir}; greedy, {new_tokens} new tokens after a {prompt_tokens}-token prompt; decode tok/s = "
             f"batch / step time, step = (t_N - t_1) / (N - 1). Bandwidth (512 MiB float32 matvec): "
             + ", ".join(f"{k} {v:.1f} GB/s" for k, v in bw.items())
             + "; limit = the faster / bytes of the weights (int8: our int8 model's bytes, scales included). "
             "int8: ours with int8 weights and a float32 scale per output channel; q8_0: int8 in Q8_0 blocks (a "
             "float16 scale per 32 inputs, what a Q8_0 GGUF of these weights holds); both beside transformers' "
             "bfloat16, and timed alternately with our bfloat16 model ('our bf16 tok/s'; 'vs bf16' = their ratio, "
             "target >= 1.6). Drift against our float32 model on the same prompts: max |logit difference| of the "
             "prompt's prefill ('rel': over the largest |logit|), the fraction of identical greedy tokens, the first "
             "position where a row differs, and teacher-forced agreement (the fraction of the float32 model's greedy "
             f"tokens that ours predicts given the float32 text before each). Prefill of {prefill} tokens, "
             "transformers / ours: "
             + ", ".join(f"{d} {results[f'{d}/prefill_speedup']:.2f}x" for d in dtypes) + ".")
    write_results("decode-model", results, rows, notes=notes, columns=columns, chart=chart)
