"""SIGKILL at a seeded random moment of a real process, then `--resume`: never a half state, exactly the losses.

training.hyformer, training.htft and training.svf: an uninterrupted tiny run (the reference) and the same run in a
second process start together; the second is killed with SIGKILL at one of its trainer's MOMENTS, drawn by a
seeded RNG (the moment is in the test id), and then run again with --resume. Right after the kill the output holds
the previous complete state or the new one: every checkpoint under a final name complete, the only other entries
orbax's `<step>.orbax-checkpoint-tmp-*` directories and our `.<name>.<hex>.tmp` siblings (jaxmodels.io), the
metrics file whole lines but for at most a torn last one, the final model absent or complete. After --resume: no
temporary checkpoint directory left, every (step, split) in the metrics once, every loss equal to the reference's
bit for bit, the same checkpoints kept and the same final model, expert or HTFT checkpoint.

jaxmodels-convert: killed while it writes DST, either a new one or one replacing a complete DST with --force. DST
is then absent, the previous directory or the new one, byte for byte; a kill leaves at most a `.<DST>.<hex>.tmp`
directory beside it, never a partial DST.

training.svf is also killed once it has stopped early (--patience) and saved its last checkpoint: resumed, it must
end where it stopped, with the same expert.

JAXMODELS_KILL_SEED=N draws other moments (default 0); JAXMODELS_KILL_SWEEP=1 runs every moment of every command
(about 9 minutes on 2 busy cores instead of 1.5; the first session also fills the compilation cache).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("JAXMODELS_KILL_SEED", "0"))
SWEEP = os.environ.get("JAXMODELS_KILL_SWEEP") == "1"
ORBAX_TMP = ".orbax-checkpoint-tmp"
TIMEOUT = 300  # seconds for one process: a hang fails the test instead of the suite


@dataclasses.dataclass(frozen=True)
class Moment:
    """When to kill: `ready(out, rng)` is polled while the process runs; `rng` draws the moment's own choices."""

    name: str
    ready: Callable[[Path, random.Random], bool]
    interrupt: Callable[[Path, random.Random], bool] | None = None  # SIGINT (Ctrl-C) first, when this holds


def listing(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def whole_lines(path: Path) -> list[str]:
    """The complete lines of `path` (a torn last line, without its newline, is not one)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return text.split("\n")[:-1]


def checkpoint_appears(step: str) -> Callable:
    return lambda out, rng: step in listing(out / "checkpoints")


def orbax_write(out, rng) -> bool:
    """A checkpoint being written while an earlier one is complete."""
    names = listing(out / "checkpoints")
    return any(ORBAX_TMP in n for n in names) and any(n.isdigit() for n in names)


def sibling_write(name: str, *, after: str | None = None) -> Callable:
    """jaxmodels.io writing `out/name` (its `.name.<hex>.tmp` sibling exists), once `out/after` exists."""
    def ready(out, rng):
        names = listing(out)
        return any(n.startswith(f".{name}.") and n.endswith(".tmp") for n in names) and (after is None or
                                                                                        after in names)
    return ready


def metrics_lines(file: str, low: int, high: int) -> Callable:
    """The metrics file holding k whole lines, k drawn once from [low, high]."""
    def ready(out, rng):
        if not hasattr(rng, "k"):
            rng.k = rng.randint(low, high)
        return len(whole_lines(out / file)) >= rng.k
    return ready


# Hyformer: 16 steps, a train line per step, an eval line and a checkpoint every 4 (4 is deleted when 16 is saved).
HYFORMER = (Moment("checkpoint", checkpoint_appears("4")), Moment("checkpoint-write", orbax_write),
            Moment("steps", metrics_lines("metrics.jsonl", 6, 19)),  # line 6 (train step 5) follows checkpoint 4
            Moment("model-write", sibling_write("model")),
            # Ctrl-C after step 5, then SIGKILL while the interrupt's checkpoint (step 5 or 6) is written: a step
            # no later save rewrites, so only a clean-up at the next start removes its temporary directory.
            Moment("interrupt-write", orbax_write, interrupt=metrics_lines("metrics.jsonl", 6, 6)))
# HTFT: 48 windows, a metrics line and a checkpoint every 16 (the line is written first).
HTFT = (Moment("checkpoint", lambda out, rng: "htft.npz" in listing(out)),
        Moment("checkpoint-write", sibling_write("htft.npz", after="htft.npz")),
        Moment("metrics", metrics_lines("htft.jsonl", 2, 3)))
# SVF: 6 steps, a valid line at 0 and a valid line and a checkpoint every 2 (lines: v0 t1 t2 v2 t3 t4 v4 t5 t6 v6).
SVF = (Moment("checkpoint", checkpoint_appears("2")), Moment("checkpoint-write", orbax_write),
       Moment("steps", metrics_lines("metrics.jsonl", 5, 9)))  # line 5 (train step 3) follows checkpoint 2
# Before any checkpoint (lines v0, t1): --resume finds run.json only and starts again from step 0.
BEFORE_FIRST_CHECKPOINT = Moment("before-first-checkpoint", metrics_lines("metrics.jsonl", 1, 2))
CONVERT = ("fresh", "replace")


def draw(command: str, moments):
    """Every moment with JAXMODELS_KILL_SWEEP=1, else one drawn by the seeded RNG of this command."""
    return list(moments) if SWEEP else [random.Random(f"{SEED}/{command}").choice(list(moments))]


def moment_ids(moments):
    return [m if isinstance(m, str) else m.name for m in moments]


@pytest.fixture(scope="module")
def env(request, tmp_path_factory):
    """The CLIs' environment as a user has it: the compilation cache on, in pytest's cache directory (kept between
    sessions: the processes start in seconds instead of compiling) or, without one, a temporary directory."""
    cache = getattr(request.config, "cache", None)
    xla = cache.mkdir("kill-resume-xla") if cache is not None else tmp_path_factory.mktemp("xla")
    return dict(os.environ, JAXMODELS_COMPILATION_CACHE=str(xla), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                PYTHONUNBUFFERED="1")


class Process:
    """A CLI in a subprocess, its output in `log`."""

    def __init__(self, argv: list[str], log: Path, env: dict, *, nice: int = 0):
        self.argv, self.log = argv, log
        self._out = log.open("w")
        # A victim runs at a lower priority than this poller, so that the poller sees short-lived moments (`nice`
        # execs in the same process; a preexec_fn would fork this multithreaded JAX process instead).
        self.proc = subprocess.Popen(["nice", "-n", str(nice), sys.executable, *argv], cwd=ROOT, env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT)

    def tail(self) -> str:
        return f"$ {' '.join(self.argv)}\n{self.log.read_text()[-4000:]}"

    def wait(self) -> int:
        try:
            code = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"no end after {TIMEOUT}s\n{self.tail()}")
        self._out.close()
        return code

    def finish(self) -> None:
        code = self.wait()
        assert code == 0, f"exit status {code}\n{self.tail()}"

    def kill_at(self, moment: Moment, out: Path, rng: random.Random) -> None:
        """SIGKILL as soon as `moment` holds in `out`; fails when the process ends before it."""
        deadline = time.monotonic() + TIMEOUT
        interrupted = moment.interrupt is None
        while self.proc.poll() is None and time.monotonic() < deadline:
            if not interrupted and moment.interrupt(out, rng):
                os.kill(self.proc.pid, signal.SIGINT)
                interrupted = True
            elif interrupted and moment.ready(out, rng):
                os.kill(self.proc.pid, signal.SIGKILL)
                break
            time.sleep(0.0005)
        code = self.wait()
        assert code == -signal.SIGKILL, f"moment {moment.name!r} never came (exit status {code})\n{self.tail()}"


def run(argv: list[str], log: Path, env: dict) -> None:
    Process(argv, log, env).finish()


def records(path: Path) -> list[dict]:
    """The metrics, without the timings (they differ between runs)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in rows]


def check_metrics(path: Path, *, torn_ok: bool) -> None:
    """Whole JSON lines (a torn last one allowed right after a kill), each (step, split) once."""
    if not path.exists():
        return
    text = path.read_text()
    lines = text.split("\n")
    if lines[-1]:
        assert torn_ok, f"{path} ends in a torn line after the resume: {lines[-1]!r}"
    keys = [(r["step"], r.get("split")) for r in map(json.loads, lines[:-1])]
    assert len(keys) == len(set(keys)), f"{path}: a (step, split) repeated: {keys}"


def check_checkpoints(out: Path, *, tmp_ok: bool) -> list[str]:
    """Every orbax checkpoint under a final name complete (orbax marks each item and the whole); the step names."""
    steps = []
    for name in listing(out / "checkpoints"):
        if ORBAX_TMP in name:
            assert tmp_ok, f"{out / 'checkpoints' / name} is left after the resume"
            continue
        assert name.isdigit(), f"unexpected entry {name!r} among the checkpoints"
        for item in ("", "state", "meta"):
            marker = out / "checkpoints" / name / item / "commit_success.txt"
            assert marker.is_file(), f"checkpoint {name} is incomplete: no {marker}"
        steps.append(name)
    return sorted(steps, key=int)


def check_siblings(out: Path, finals: set[str]) -> None:
    """Besides the final names, only jaxmodels.io's temporary siblings `.<name>.<hex>.tmp` / `.old`."""
    for name in listing(out):
        if name not in finals:
            assert name.startswith(".") and name.endswith((".tmp", ".old")), f"unexpected entry {out / name}"
            assert name[1:].split(".")[0] in {f.split(".")[0] for f in finals}, f"unexpected entry {out / name}"


def check_model_dir(path: Path) -> None:
    if path.exists():
        assert {"config.json", "model.safetensors"} <= set(listing(path)), f"{path} is incomplete"


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def assert_same_metrics(resumed: Path, reference: Path) -> None:
    a, b = records(resumed), records(reference)
    assert [(r["step"], r.get("split")) for r in a] == [(r["step"], r.get("split")) for r in b]
    for x, y in zip(a, b):
        assert x == y, f"step {x['step']} {x.get('split')}: resumed {x}, uninterrupted {y}"


def kill_and_resume(command: str, moment: Moment, argv: Callable[[Path], list[str]], tmp_path: Path, env: dict,
                    check: Callable[[Path, bool], None]) -> tuple[Path, Path]:
    """The reference and the victim started together, the victim killed at `moment` and resumed; returns both
    output directories after `check(out, just_killed)` held right after the kill and after the resume."""
    ref, out = tmp_path / "reference", tmp_path / "killed"
    reference = Process(argv(ref), tmp_path / "reference.log", env)
    victim = Process(argv(out), tmp_path / "killed.log", env, nice=5)
    victim.kill_at(moment, out, random.Random(f"{SEED}/{command}/{moment.name}"))
    check(out, True)
    run([*argv(out), "--resume"], tmp_path / "resumed.log", env)
    check(out, False)
    reference.finish()
    return ref, out


def check_orbax_run(out: Path, just_killed: bool) -> None:
    check_checkpoints(out, tmp_ok=just_killed)
    check_metrics(out / "metrics.jsonl", torn_ok=just_killed)
    check_model_dir(out / "model")
    check_siblings(out, {"run.json", "checkpoints", "metrics.jsonl", "metrics.png", "model", "expert.safetensors"})


@pytest.fixture(scope="module")
def hyformer_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("hyformer_data") / "corpus.txt"
    path.write_text("".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(300)))
    return path


@pytest.mark.parametrize("moment", draw("hyformer", HYFORMER), ids=moment_ids(draw("hyformer", HYFORMER)))
def test_hyformer_killed_then_resumed(moment, hyformer_corpus, tmp_path, env):
    def argv(out):
        return ["-m", "training.hyformer", "--data", str(hyformer_corpus), "--out", str(out), "--preset", "tiny",
                "--batch-size", "4", "--seq-len", "16", "--steps", "16", "--save-every", "4", "--eval-every", "4",
                "--eval-batches", "2", "--log-every", "1", "--lr", "3e-3", "--warmup-steps", "3"]

    def check(out, just_killed):
        check_orbax_run(out, just_killed)
        if just_killed:  # a crash can cut the last line short (a SIGKILL cannot: each line is one write())
            with (out / "metrics.jsonl").open("a") as f:
                f.write('{"step": 99, "split": "tr')

    ref, out = kill_and_resume("hyformer", moment, argv, tmp_path, env, check)
    assert_same_metrics(out / "metrics.jsonl", ref / "metrics.jsonl")
    assert check_checkpoints(out, tmp_ok=False) == check_checkpoints(ref, tmp_ok=False) == ["8", "12", "16"]
    assert tree_digest(out / "model") == tree_digest(ref / "model")


@pytest.mark.parametrize("moment", draw("htft", HTFT), ids=moment_ids(draw("htft", HTFT)))
def test_htft_killed_then_resumed(moment, tmp_path, env):
    pytest.importorskip("numba", reason="training.htft needs the host kernels (the htfr extra)")
    import numpy as np

    from tests.htft.conftest import CORPUS, make_hyformer_run

    teacher = make_hyformer_run(tmp_path / "teacher")  # ours, captured in JAX: no torch start-up
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)

    def argv(out):
        return ["-m", "training.htft", "--model", str(teacher), "--data", str(corpus), "--output",
                str(out / "htft.npz"), "--cache-dir", str(out / "cache"), "--train-tokens", "300", "--eval-tokens",
                "120", "--seq-len", "12", "--stride", "6", "--stage1-tensors", "24", "--stage2-tensors", "32",
                "--stage1-countsketch-dim", "256", "--stage2-countsketch-dim", "64", "--stage1-srht-dim", "128",
                "--stage2-srht-dim", "32", "--stage1-target-dim", "8", "--tail-tokens", "3", "--hashed-dim", "64",
                "--vocab-limit", "20", "--top-k", "4", "--train-top-k", "8", "--eval-every", "16", "--chunk", "8"]

    def check(out, just_killed):
        check_metrics(out / "htft.jsonl", torn_ok=just_killed)
        check_siblings(out, {"htft.npz", "htft.jsonl", "htft.png", "cache"})

    ref, out = kill_and_resume("htft", moment, argv, tmp_path, env, check)
    assert_same_metrics(out / "htft.jsonl", ref / "htft.jsonl")
    with np.load(out / "htft.npz") as a, np.load(ref / "htft.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("moment", draw("svf", SVF), ids=moment_ids(draw("svf", SVF)))
def test_svf_killed_then_resumed(moment, tmp_path, env):
    from jaxmodels import Hyformer, HyformerConfig

    model = tmp_path / "model"
    Hyformer.from_config(HyformerConfig.tiny(vocab_size=260, max_seq_len=24), seed=1).save_pretrained(model)

    def argv(out):
        return ["-m", "training.svf", "train", "--model", str(model), "--task", "sort", "--steps", "6",
                "--batch-size", "4", "--n-train", "8", "--n-valid", "4", "--eval-every", "2", "--max-new-tokens",
                "4", "--out", str(out), "--svd-cache", str(tmp_path / "svd")]

    ref, out = kill_and_resume("svf", moment, argv, tmp_path, env, check_orbax_run)
    assert_same_metrics(out / "metrics.jsonl", ref / "metrics.jsonl")
    assert check_checkpoints(out, tmp_ok=False) == check_checkpoints(ref, tmp_ok=False) == ["2", "4", "6"]
    assert (out / "expert.safetensors").read_bytes() == (ref / "expert.safetensors").read_bytes()


def test_svf_killed_before_its_first_checkpoint_starts_again(tmp_path, env):
    test_svf_killed_then_resumed(BEFORE_FIRST_CHECKPOINT, tmp_path, env)


def test_svf_killed_after_early_stop_ends_where_it_stopped(tmp_path, env):
    from jaxmodels import Hyformer, HyformerConfig

    model = tmp_path / "model"
    Hyformer.from_config(HyformerConfig.tiny(vocab_size=260, max_seq_len=24), seed=1).save_pretrained(model)

    def argv(out):  # the accuracy stays 0: step 1 brings no improvement, and --patience 1 stops there
        return ["-m", "training.svf", "train", "--model", str(model), "--task", "sort", "--steps", "4",
                "--batch-size", "4", "--n-train", "8", "--n-valid", "4", "--eval-every", "1", "--patience", "1",
                "--max-new-tokens", "4", "--out", str(out), "--svd-cache", str(tmp_path / "svd")]

    # Killed after the last checkpoint, while the curves are drawn and before the expert is written.
    ref, out = kill_and_resume("svf", Moment("stopped", checkpoint_appears("1")), argv, tmp_path, env,
                               check_orbax_run)
    assert_same_metrics(out / "metrics.jsonl", ref / "metrics.jsonl")
    assert (out / "expert.safetensors").read_bytes() == (ref / "expert.safetensors").read_bytes()


@pytest.mark.parametrize("case", draw("convert", CONVERT))
def test_convert_killed_while_writing(case, tmp_path, env):
    import dataclasses as dc

    from jaxmodels import Hyformer, HyformerConfig
    from jaxmodels_interop.convert_cli import DTYPES, to_hf

    src, dst = tmp_path / "ours", tmp_path / "out" / "hf"
    # ~9 MB of float32 weights: the write lasts long enough to be caught in the middle.
    config = dc.replace(HyformerConfig.tiny(), vocab_size=8191, d_model=256, n_heads=4)
    Hyformer.from_config(config, seed=0).save_pretrained(src)
    new, old = tmp_path / "new", tmp_path / "old"
    to_hf(src, new)
    to_hf(src, old, dtype=DTYPES["bfloat16"])
    argv = ["-m", "jaxmodels_interop.convert_cli", "to-hf", str(src), str(dst)]
    if case == "replace":
        run([*argv, "--dtype", "bfloat16"], tmp_path / "first.log", env)
        assert tree_digest(dst) == tree_digest(old)
        argv.append("--force")
    victim = Process(argv, tmp_path / "killed.log", env, nice=5)
    victim.kill_at(Moment("write", sibling_write("hf")), dst.parent, random.Random(SEED))
    states = [tree_digest(new)] + ([tree_digest(old)] if case == "replace" else [])
    if dst.exists():
        assert tree_digest(dst) in states, f"{dst} after the kill is neither the previous nor the new checkpoint"
    else:
        assert case == "fresh", f"the kill removed the previous {dst}"
    check_siblings(dst.parent, {"hf"})
    run([*argv, "--force"] if case == "fresh" else argv, tmp_path / "again.log", env)
    assert tree_digest(dst) == tree_digest(new)
