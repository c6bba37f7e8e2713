"""jaxmodels_training.hyformer end to end on tiny data: loss falls, exact resume, run-directory safety, bad input."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxmodels_training import hyformer as cli

ROOT = Path(__file__).resolve().parents[1]
TEXT = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(300))
COMMON = ["--preset", "tiny", "--batch-size", "4", "--seq-len", "16", "--eval-every", "10", "--eval-batches", "2",
          "--log-every", "1", "--lr", "3e-3", "--warmup-steps", "3"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


def run(corpus, out, *extra):
    return cli.train(cli.parse_args(["--data", corpus, "--out", str(out), *COMMON, *extra]))


def read_metrics(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_loss_falls_and_outputs_are_written(corpus, tmp_path):
    history = run(corpus, tmp_path / "run", "--steps", "40", "--save-every", "20")
    losses = [loss for _, loss in history["train"]]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    evals = [loss for _, loss in history["eval"]]
    assert evals == sorted(evals, reverse=True)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(1, 41))
    assert {"step", "split", "loss", "lr", "tokens_per_s"} <= set(train_rows[0])
    assert [r["step"] for r in rows if r["split"] == "eval"] == [10, 20, 30, 40]
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["20", "40"]
    assert (tmp_path / "run" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # tests/test_plots.py
    from jaxmodels import from_pretrained

    model = from_pretrained(tmp_path / "run" / "model")
    assert model.config.vocab_size == 260


def test_resume_continues_bit_identically(corpus, tmp_path):
    straight, broken = tmp_path / "a", tmp_path / "b"
    args = ("--steps", "12", "--save-every", "4")
    run(corpus, straight, *args)
    run(corpus, broken, *args)
    # Simulate a crash after step 4: later checkpoints, metrics and the final model never happened.
    for step in ("8", "12"):
        subprocess.run(["rm", "-rf", str(broken / "checkpoints" / step)], check=True)
    subprocess.run(["rm", "-rf", str(broken / "model")], check=True)
    run(corpus, broken, *args, "--resume")
    a = load_file(str(straight / "model" / "model.safetensors"))
    b = load_file(str(broken / "model" / "model.safetensors"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    la = [(r["step"], r["split"], r["loss"]) for r in read_metrics(straight / "metrics.jsonl")]
    lb = [(r["step"], r["split"], r["loss"]) for r in read_metrics(broken / "metrics.jsonl")]
    assert la == lb


def test_mlm_and_bf16_train(corpus, tmp_path):
    history = run(corpus, tmp_path / "mlm", "--steps", "6", "--task", "mlm", "--dtype", "bfloat16")
    assert all(np.isfinite(loss) for _, loss in history["train"])


def test_output_directory_is_protected(corpus, tmp_path):
    out = tmp_path / "run"
    run(corpus, out, "--steps", "2", "--eval-every", "0")
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(cli.RunDirError, match="holds another run .*pass --resume to continue it, --force"):
        run(corpus, out, "--steps", "2")
    with pytest.raises(cli.RunDirError, match="holds a run with another configuration .*lr: run has 0.003, now 0.01"):
        run(corpus, out, "--steps", "2", "--eval-every", "0", "--resume", "--lr", "0.01")
    assert (out / "metrics.jsonl").read_text() == before
    with pytest.raises(cli.RunDirError, match="holds no run to resume"):
        run(corpus, tmp_path / "fresh", "--steps", "2", "--resume")
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    with pytest.raises(cli.RunDirError, match="is not empty and is not a run directory"):
        run(corpus, stranger, "--steps", "2")
    assert (stranger / "notes.txt").read_text() == "keep me"


def test_non_finite_loss_stops_and_keeps_last_checkpoint(corpus, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(cli.TrainingError, match=r"loss became (nan|inf) at step \d+; stopped. Last good checkpoint"):
        run(corpus, out, "--steps", "30", "--save-every", "1", "--lr", "1e30", "--warmup-steps", "0",
            "--grad-clip", "0", "--eval-every", "0")
    steps = sorted(int(s) for s in os.listdir(out / "checkpoints"))
    assert steps, "the good checkpoints before the failure are kept"


@pytest.mark.parametrize("extra, message", [
    (["--data", "/nonexistent/file.txt"], "--data /nonexistent/file.txt: no such file"),
    (["--data", "EMPTY"], "the file is empty"),
    (["--task", "prediction"], "error: argument|training supports 'lm' and 'mlm'"),
    (["--mesh", "model=2"], "expected comma-separated axis=size with axes"),
    (["--mesh", "data=3"], "needs 3 devices, found 1"),
    (["--seq-len", "4000", "--batch-size", "64"], "fewer than one batch"),
])
def test_cli_errors_exit_cleanly(corpus, tmp_path, extra, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    extra = [str(empty) if e == "EMPTY" else e for e in extra]
    argv = ["--data", corpus, *COMMON, "--steps", "2", "--out", str(tmp_path / "o"), *extra]
    proc = subprocess.run([sys.executable, "-m", "jaxmodels_training.hyformer", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert any(part in proc.stderr for part in message.split("|")) or __import__("re").search(message, proc.stderr), \
        proc.stderr


def test_mesh_matches_one_device(corpus, tmp_path):
    """data=2,fsdp=2 and fsdp=2,tensor=2 on 4 host CPU devices give the losses of a single-device run."""
    script = textwrap.dedent(f"""
        import json, sys
        from jaxmodels_training import hyformer as cli
        common = {COMMON!r} + ["--data", {corpus!r}, "--steps", "5", "--eval-every", "0"]
        runs = [cli.train(cli.parse_args(common + ["--out", {str(tmp_path)!r} + f"/run{{i}}"] + mesh))["train"]
                for i, mesh in enumerate([[], ["--mesh", "data=2,fsdp=2"], ["--mesh", "fsdp=2,tensor=2"]])]
        print(json.dumps(runs))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, *meshes = json.loads(proc.stdout.strip().splitlines()[-1])
    for losses in meshes:
        np.testing.assert_allclose([l for _, l in losses], [l for _, l in one], rtol=2e-5)


def test_ctrl_c_saves_and_resume_finishes(corpus, tmp_path):
    import signal
    import time

    out = tmp_path / "int"
    argv = ["--data", corpus, *COMMON, "--steps", "100000", "--eval-every", "0", "--save-every", "0", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "jaxmodels_training.hyformer", *argv], cwd=ROOT, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: saved step" in err and "Traceback" not in err
    saved = int(os.listdir(out / "checkpoints")[0])
    assert saved >= 3
    assert max(r["step"] for r in read_metrics(metrics)) == saved


def test_hf_tokenizer_directory(corpus, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train([corpus], trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|endoftext|>", "<mask>"]))
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    history = run(corpus, tmp_path / "run", "--steps", "3", "--eval-every", "0", "--tokenizer", str(tmp_path / "tok"))
    assert len(history["train"]) == 3
    from jaxmodels import from_pretrained

    assert from_pretrained(tmp_path / "run" / "model").config.vocab_size == tok.get_vocab_size()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json in that directory"):
        run(corpus, tmp_path / "run2", "--steps", "1", "--tokenizer", str(tmp_path))
