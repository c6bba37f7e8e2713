"""The two fine-tuning steps that `python -m benchmarks finetune` compares, and their memory in a process of
their own.

Both sides train the same float32 checkpoint on the same batch with the same recipe: the shifted next-token
cross-entropy (mean over the B (T - 1) predicted tokens), gradients clipped to global norm GRAD_CLIP, then AdamW
(constant LR, BETAS, eps 1e-8, WEIGHT_DECAY on matrices only, not on norm weights).

* ours: `jaxmodels.from_pretrained` + `training.step.make_train_step` (split/merge, `jax.jit`, params and
  optimizer state donated) with `training.optim.make_optimizer`; compiled ahead of time, so the compile is timed
  on its own. bfloat16: `compute_dtype`, every float parameter cast to bfloat16 for the forward and backward,
  float32 master weights and optimizer state.
* theirs: transformers' `AutoModelForCausalLM` in `train()` mode, eager PyTorch, loss from `labels`,
  `torch.nn.utils.clip_grad_norm_` and `torch.optim.AdamW` as constructed by default. bfloat16:
  `torch.autocast("cpu", dtype=torch.bfloat16)` over the forward, float32 weights and optimizer state.

Frameworks are imported inside the functions: the memory process of one side never loads the other
(`python -m jaxmodels_benchmarks.suites._finetune_sides --side ours ...` prints one JSON line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

LR, WEIGHT_DECAY, GRAD_CLIP, BETAS = 1e-5, 0.1, 1.0, (0.9, 0.95)
THREADS = 2  # torch's intra-op threads: one per core of this machine, like XLA:CPU's


def batch_ids(vocab: int, batch: int, seq_len: int, seed: int = 0) -> np.ndarray:
    """Random token ids [B, T] (int32), the same on both sides."""
    return np.random.default_rng(seed).integers(0, vocab, (batch, seq_len), dtype=np.int32)


def ours_side(model_dir: str, dtype: str, ids: np.ndarray, *, remat: bool = False) -> dict:
    """Our step and its parts, as functions of no arguments over state kept between calls; with the compile
    time, the compiled step's buffer sizes and the first step (its loss is the loss at the loaded weights)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import jaxmodels
    from jaxmodels_training.optim import make_optimizer
    from jaxmodels_training.step import cast_floats, make_train_step

    model = jaxmodels.from_pretrained(model_dir, dtype=jnp.float32).use_remat(remat)
    graphdef, params = nnx.split(model, nnx.Param)
    del model
    compute_dtype = None if dtype == "float32" else jnp.dtype(dtype)
    tx = make_optimizer(optax.constant_schedule(LR), weight_decay=WEIGHT_DECAY, grad_clip=GRAD_CLIP, b1=BETAS[0],
                        b2=BETAS[1])

    def loss_fn(m, batch, key):
        return m(batch, labels=batch).loss, {}

    batch, key = jnp.asarray(ids), jax.random.key(0)
    t0 = time.perf_counter()
    step = make_train_step(graphdef, tx, loss_fn, compute_dtype=compute_dtype).lower(
        params, jax.eval_shape(tx.init, params), batch, key).compile()
    compile_s = time.perf_counter() - t0
    memory = step.memory_analysis()
    state = {"params": params, "opt_state": jax.jit(tx.init)(params)}

    def train():
        state["params"], state["opt_state"], metrics = step(state["params"], state["opt_state"], batch, key)
        return metrics["loss"]

    def objective(p):  # the step's forward: make_train_step's objective
        p = p if compute_dtype is None else cast_floats(p, compute_dtype)
        return loss_fn(nnx.merge(graphdef, p), batch, key)[0]

    forward, forward_backward = jax.jit(objective), jax.jit(jax.value_and_grad(objective))
    side = {"step": train, "forward": lambda: forward(state["params"]),
            "forward+backward": lambda: forward_backward(state["params"]), "compile_s": compile_s,
            "compiled_temp_bytes": memory.temp_size_in_bytes, "compiled_argument_bytes": memory.argument_size_in_bytes}
    return _first_step(side)


def theirs_side(model_dir: str, dtype: str, ids: np.ndarray, *, remat: bool = False) -> dict:
    """transformers' step and its parts (the forward records autograd's graph, as in the step), like ours_side;
    `remat`: transformers' gradient checkpointing (non-reentrant) of the decoder layers."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(THREADS)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    if remat:
        # transformers 5.25 renamed gradient_checkpointing_enable (deprecated, still there) to activation_...
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False})
    params = list(model.parameters())  # a tied embedding appears once
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=LR, betas=BETAS)
    batch = torch.from_numpy(ids).long()

    def loss():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            return model(input_ids=batch, labels=batch).loss

    def train():
        value = loss()
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return value.detach()

    def forward_backward():
        value = loss()
        value.backward()
        model.zero_grad(set_to_none=True)
        return value.detach()

    side = {"step": train, "forward": lambda: loss().detach(), "forward+backward": forward_backward, "compile_s": 0.0}
    return _first_step(side)


def _first_step(side: dict) -> dict:
    t0 = time.perf_counter()
    side["first_loss"] = float(side["step"]())  # float() waits for the result on either side
    side["first_step_s"] = time.perf_counter() - t0
    return side


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def memory_run(side: str, model_dir: str, dtype: str, ids: np.ndarray, *, remat: bool, steps: int) -> dict:
    """Resident memory of one side's training in this process (Linux /proc): RSS after the framework's imports;
    the peak (VmHWM) over loading, (ours) compiling and the first step; then VmHWM reset (/proc/self/clear_refs)
    and the peak over `steps` more steps; the process's peak is the larger of the two."""
    if side == "ours":
        import jax  # noqa: F401 - the imports' RSS is the baseline
        import jaxmodels  # noqa: F401
        build, other = ours_side, "torch"
    else:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        build, other = theirs_side, "jax"
    imports = _status_bytes("VmRSS")
    run = build(model_dir, dtype, ids, remat=remat)
    setup_peak = _status_bytes("VmHWM")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    for _ in range(steps):
        float(run["step"]())
    training_peak = _status_bytes("VmHWM")
    return {"imports_bytes": imports, "setup_peak_bytes": setup_peak, "training_peak_bytes": training_peak,
            "peak_bytes": max(setup_peak, training_peak), "steps": steps, "first_loss": run["first_loss"],
            "other_framework_loaded": other in sys.modules}


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description="one side's training memory, as one JSON line (finetune's helper)")
    p.add_argument("--side", choices=("ours", "theirs"), required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), required=True)
    p.add_argument("--remat", action="store_true")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--steps", type=int, default=2)
    a = p.parse_args(argv)
    ids = batch_ids(a.vocab, a.batch, a.seq_len)
    print(json.dumps(memory_run(a.side, a.model, a.dtype, ids, remat=a.remat, steps=a.steps)))


if __name__ == "__main__":
    main(sys.argv[1:])
