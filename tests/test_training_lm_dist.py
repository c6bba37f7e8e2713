"""training.lm on several devices and processes (subprocesses with host CPU devices): meshes give one device's
losses, checkpoints resume across meshes and process counts, and process-group failures are one error line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.lm_fixtures import COMMON_ARGS as COMMON, read_metrics

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


MESH_SCRIPT = """
import json, shutil, sys
from pathlib import Path
from jaxmodels import compilation_cache
from tests import lm_fixtures as F
from jaxmodels_training import lm
root = Path(sys.argv[1])
compilation_cache.enable(root / "xla")  # the resumed run repeats run a's program
model = F.tiny_model_dir(root / "m", vocab_size=96)  # heads 4, kv heads 2, MLP 40, D 24, V 96: all even
chat = F.write_jsonl(root / "chat.jsonl", F.conversations(32))
common = json.loads(sys.argv[2]) + ["--model", str(model), "--chat", str(chat)]
def run(name, *extra):
    return [l for _, l in lm.train(lm.parse_args(common + ["--out", str(root / name), *extra])).history["train"]]
out = {"one": run("one"), "dp-fsdp": run("a", "--mesh", "data=2,fsdp=2"),
       "fsdp-tp": run("b", "--mesh", "fsdp=2,tensor=2", "--save-every", "2")}
shutil.rmtree(root / "b" / "checkpoints" / "4"); shutil.rmtree(root / "b" / "model")
run("b", "--mesh", "data=2,fsdp=2", "--save-every", "2", "--resume")
out["resumed"] = [r["loss"] for r in map(json.loads, (root / "b" / "metrics.jsonl").read_text().splitlines())]
try:
    lm.main(common + ["--out", str(root / "c"), "--mesh", "tensor=4"])
except SystemExit as e:
    out["exit"] = e.code
print(json.dumps(out))
"""
MESH_ARGS = [*COMMON, "--steps", "4", "--lr", "1e-2"]


def env_with_devices(n: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "PYTHONPATH": str(ROOT),
            "JAXMODELS_COMPILATION_CACHE": "off"}


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    """One process with 4 host devices: one device, data=2,fsdp=2 and fsdp=2,tensor=2 runs of 4 steps, the
    last checkpointed at step 2 and resumed from there on data=2,fsdp=2, and a mesh that divides nothing."""
    root = tmp_path_factory.mktemp("meshes")
    proc = subprocess.run([sys.executable, "-c", MESH_SCRIPT, str(root), json.dumps(MESH_ARGS)], cwd=ROOT,
                          env=env_with_devices(4), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_meshes_match_one_device_and_resume_across_meshes(meshes):
    _, out, stderr = meshes
    for name in ("dp-fsdp", "fsdp-tp", "resumed"):
        np.testing.assert_allclose(out[name], out["one"], rtol=2e-5, err_msg=name)
    assert out["exit"] == 2
    assert ("error: blocks.0.attn.k_proj.kernel: dimension 1 (kv_heads, size 2) is not divisible by mesh axis "
            "tensor=4") in stderr


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def processes(argvs: list[list[str]], devices: int) -> list[subprocess.CompletedProcess]:
    """Runs `python -m jaxmodels_training.lm` once per argv, concurrently, each with `devices` host devices."""
    procs = [subprocess.Popen([sys.executable, "-m", "jaxmodels_training.lm", *argv], cwd=ROOT,
                              env=env_with_devices(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for argv in argvs]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in procs]


def test_two_processes_match_one_and_restore_on_fewer_devices(meshes):
    """2 processes x 2 host devices (data=2,fsdp=2 over all 4) give the losses of one process with 4 devices;
    their checkpoint (4 devices) resumes in one process on 2 devices; a missing process and a refused --resume
    are one error line on every process."""
    root, out, _ = meshes
    base = [*MESH_ARGS, "--model", str(root / "m"), "--chat", str(root / "chat.jsonl"), "--save-every", "2"]
    run = root / "two"
    port = free_port()
    two = processes([[*base, "--out", str(run), "--mesh", "data=2,fsdp=2", "--coordinator", f"localhost:{port}",
                      "--num-processes", "2", "--process-id", str(i)] for i in range(2)], devices=2)
    assert [p.returncode for p in two] == [0, 0], two[0].stderr[-2000:] + two[1].stderr[-2000:]
    np.testing.assert_allclose([r["loss"] for r in read_metrics(run / "metrics.jsonl")], out["dp-fsdp"], rtol=2e-5)
    assert sorted(os.listdir(run / "checkpoints")) == ["2", "4"] and (run / "model" / "model.safetensors").is_file()

    # Three things at once (they touch nothing the others read): the 4-device checkpoint of step 2 resumed in one
    # process on 2 devices; a process whose partner never comes; a --resume that process 0 refuses.
    subprocess.run(["rm", "-rf", str(run / "checkpoints" / "4"), str(run / "model")], check=True)
    ports = free_port(), free_port()
    resumed, alone, *refused = processes([
        [*base, "--out", str(run), "--mesh", "fsdp=2", "--resume"],
        [*base, "--out", str(root / "alone"), "--coordinator", f"localhost:{ports[0]}", "--num-processes", "2",
         "--process-id", "0", "--distributed-timeout", "3"],
        *([*base, "--out", str(run), "--resume", "--lr", "0.5", "--coordinator", f"localhost:{ports[1]}",
           "--num-processes", "2", "--process-id", str(i)] for i in range(2))], devices=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    np.testing.assert_allclose([r["loss"] for r in read_metrics(run / "metrics.jsonl")], out["dp-fsdp"], rtol=2e-5)
    assert alone.returncode == 2 and alone.stderr.strip().splitlines()[-1].startswith(
        "error: process 0 of 2: not all 2 processes joined the coordinator"), alone.stderr[-2000:]
    for p in refused:
        lines = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
        assert len(lines) == 1 and "holds a run with another configuration (lr: run has 0.01, now 0.5)" in lines[0]
