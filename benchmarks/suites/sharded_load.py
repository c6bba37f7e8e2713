"""`python -m benchmarks sharded-load --model DIR`: host memory while loading a checkpoint onto a mesh.

Each way of loading runs in its own process with 4 host CPU devices (XLA_FLAGS
--xla_force_host_platform_device_count=4), so its peak resident memory is its own:

* sharded: `from_pretrained(DIR, mesh=...)`, each tensor read, cast and placed on its shards before the next;
* one device: `from_pretrained(DIR)`, every tensor on the default device;
* load, then shard: `from_pretrained(DIR)` followed by `jaxmodels.sharding.shard_model` (the whole model
  exists twice until the unsharded copy is freed).

On host CPU devices every shard lives in this process, so the loaded model itself takes its full size in RAM
either way; what sharded loading saves is the transient on top of it. Reported: RSS after the imports, peak RSS
(VmHWM) and RSS at the end, both above the imports' baseline, and the transient (peak - end) against the model's
bytes and its largest tensor. Writes benchmarks/results/sharded-load.{json,md,png}. Needs a model: `all` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from jaxmodels_benchmarks.charts import figure, grouped_bars
from jaxmodels_benchmarks.harness import write_results

IN_ALL = False  # needs --model
MODES = ("sharded", "one device", "load, then shard")

_CHILD = """
import json, sys
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
import numpy as np, jax, jax.numpy as jnp
from flax import nnx
import jaxmodels
from jaxmodels import sharding
path, mode, mesh_spec, dtype = sys.argv[1:5]
mesh = sharding.make_mesh(sharding.parse_mesh(mesh_spec))
base = status("VmRSS")
dtype = None if dtype == "stored" else jnp.dtype(dtype)
if mode == "sharded":
    model = jaxmodels.from_pretrained(path, mesh=mesh, dtype=dtype)
else:
    model = jaxmodels.from_pretrained(path, dtype=dtype)
    if mode == "load, then shard":
        sharding.shard_model(model, mesh)
arrays = [v[...] for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))]
jax.block_until_ready(arrays)
print(json.dumps(dict(base=base, peak=status("VmHWM"), end=status("VmRSS"),
                      model_bytes=sum(a.nbytes for a in arrays), largest=max(a.nbytes for a in arrays),
                      devices=len({d for a in arrays for d in a.devices()}))))
"""


def _measure(model: str, mode: str, mesh: str, dtype: str) -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, model, mode, mesh, dtype], env=env, capture_output=True,
                          text=True, timeout=1200)
    if proc.returncode:
        raise RuntimeError(f"{mode}: the loading process failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks sharded-load", description=__doc__)
    p.add_argument("--model", required=True, help="a checkpoint directory or .gguf file")
    p.add_argument("--mesh", default="fsdp=4", help="a 4-device mesh (jaxmodels.sharding axes), default fsdp=4")
    p.add_argument("--dtype", default="stored", help="stored (as in the checkpoint), float32 or bfloat16")
    args = p.parse_args(argv)
    mib = 2 ** 20
    rows, results = [], {}
    for mode in MODES:
        r = _measure(args.model, mode, args.mesh, args.dtype)
        results[mode] = r
        rows.append({"load": mode, "devices": r["devices"], "model MiB": r["model_bytes"] / mib,
                     "largest tensor MiB": r["largest"] / mib, "peak MiB": (r["peak"] - r["base"]) / mib,
                     "end MiB": (r["end"] - r["base"]) / mib, "transient MiB": (r["peak"] - r["end"]) / mib,
                     "transient / largest tensor": (r["peak"] - r["end"]) / r["largest"]})
    notes = (f"Model {args.model}, mesh {args.mesh} on 4 host CPU devices, dtype {args.dtype}. Peak (VmHWM) and end "
             "RSS above the RSS after the imports; transient = peak - end: memory the load needed beyond the "
             "loaded model itself. Host CPU devices keep every shard in this process, so 'end' is the whole model "
             "in each row; on accelerators or several hosts the shards leave the host.")
    write_results("sharded-load", results, rows, notes=notes, chart=chart)


def chart(rows: list[dict], results: dict):
    fig, (ax,) = figure(width=7)
    grouped_bars(ax, [r["load"] for r in rows], {"loaded model (end RSS)": [r["end MiB"] for r in rows],
                                                 "transient (peak - end)": [r["transient MiB"] for r in rows]})
    ax.axhline(rows[0]["largest tensor MiB"], color="k", linestyle="--", linewidth=1, label="largest tensor")
    ax.set_ylabel("MiB above the imports")
    ax.set_title("Host memory while loading")
    ax.legend()
    return fig


if __name__ == "__main__":
    main(sys.argv[1:])
