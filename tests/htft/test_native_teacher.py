"""Our own checkpoint and training run directories as the teacher (`--model`), their tokenizers, and bad input."""

import json
import shutil

import pytest

pytest.importorskip("numba", reason="needs the host kernels (the htfr extra)")
pytest.importorskip("torch", reason="needs the PyTorch side (the torch extra)")

from jaxmodels_interop.teacher import FlaxTeacher, HFTeacher, TeacherError, generate_greedy
from jaxmodels_interop.teacher_load import load_teacher
from jaxmodels.htft import load_htft_checkpoint
from tests.htft.conftest import make_hyformer_run, make_tokenizer
from tests.htft.test_cli import TINY, lines
from jaxmodels_training import htft
from jaxmodels_training.tokenizer import ByteTokenizer, HFTokenizer


def test_load_teacher_picks_the_kind_and_the_tokenizer(hyformer_run, teacher_dir, tmp_path):
    for path in (hyformer_run, hyformer_run / "model"):  # a run directory, or its model/ (run.json one level up)
        teacher = load_teacher(str(path))
        assert isinstance(teacher, FlaxTeacher) and isinstance(teacher.tokenizer, ByteTokenizer)
        assert teacher.hidden_size == 24 and teacher.vocab_size == 260 and teacher.bos_id == 257
    assert isinstance(load_teacher(str(teacher_dir)), FlaxTeacher)  # a Gemma 3 directory: our family, in JAX
    assert isinstance(load_teacher(str(teacher_dir), backend="torch"), HFTeacher)
    bare = tmp_path / "bare"
    shutil.copytree(hyformer_run / "model", bare)
    with pytest.raises(TeacherError, match="a jaxmodels checkpoint with no tokenizer .*--tokenizer bytes"):
        load_teacher(str(bare))
    teacher = load_teacher(str(bare), "bytes")
    assert isinstance(teacher.tokenizer, ByteTokenizer)
    make_tokenizer(290).save_pretrained(tmp_path / "tok")  # tokenizer.json with 290 tokens
    shutil.copy(tmp_path / "tok" / "tokenizer.json", bare / "tokenizer.json")
    with pytest.raises(TeacherError, match="the tokenizer has 290 tokens but the teacher's embedding has 260 rows"):
        load_teacher(str(bare))  # a tokenizer.json next to the weights is used, and checked
    assert isinstance(load_teacher(str(bare), "bytes").tokenizer, ByteTokenizer)  # --tokenizer overrides it
    assert isinstance(load_teacher(str(teacher_dir), str(tmp_path / "tok")).tokenizer, HFTokenizer)


def test_bad_native_teachers(tmp_path):
    mlm = make_hyformer_run(tmp_path / "mlm", task="mlm")
    with pytest.raises(TeacherError, match="trained for task 'mlm' .*must be a causal language model"):
        load_teacher(str(mlm))
    with pytest.raises(TeacherError, match="--model .*nowhere: no such directory"):
        load_teacher(str(tmp_path / "nowhere"))
    with pytest.raises(TeacherError, match="--tokenizer .*notok: .*expected 'bytes' or a directory with tokenizer"):
        load_teacher(str(mlm), str(tmp_path / "notok"))
    broken = tmp_path / "broken"
    shutil.copytree(mlm / "model", broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TeacherError, match="cannot load this jaxmodels checkpoint"):
        load_teacher(str(broken), "bytes")


def test_cli_trains_from_our_run_directory(hyformer_run, corpus_file, tmp_path):
    out = tmp_path / "run"
    htft.main(["--model", str(hyformer_run), "--data", str(corpus_file), "--output", str(out / "htft.npz"), *TINY])
    records = lines(out / "htft.jsonl")
    assert [r["step"] for r in records] == [16, 32, 48]
    assert 1.0 < records[-1]["teacher_ppl"] and 1.0 < records[-1]["eval_ppl"]
    ck = load_htft_checkpoint(out / "htft.npz")
    assert ck.metadata["phases"] == "teacher RoPE" and ck.context_config.hidden_dim == 24
    assert json.loads(json.dumps(ck.metadata["identity"]))["tokenizer"] is None
    ids, _ = generate_greedy(load_teacher(str(hyformer_run)), ck, "the quick", 2)
    assert set(ids.tolist()) <= set(ck.vocab.shortlist.tolist())
