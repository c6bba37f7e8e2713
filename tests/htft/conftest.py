"""A tiny random Gemma 3 teacher with a locally trained byte-level BPE tokenizer, and a small text corpus."""

import numpy as np
import pytest

CORPUS = ("the quick brown fox jumps over the lazy dog. " * 3 + "a field of hypertensors predicts the next token; "
          "the teacher is frozen and the student learns online. ") * 12


def make_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def make_teacher(path, *, vocab_size=300, tokenizer_vocab=290, max_positions=64):
    from tests.hf_models import tiny_hf_model

    tiny_hf_model("gemma3_text", path, vocab_size=vocab_size, intermediate_size=48, num_key_value_heads=1, head_dim=8,
                  sliding_window=16, max_position_embeddings=max_positions, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2)
    make_tokenizer(tokenizer_vocab).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    return make_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(CORPUS)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def make_hyformer_run(path, *, task="lm", tokenizer="bytes"):
    """A tiny byte-level Hyformer saved as a training run directory would hold it: path/model/ and path/run.json."""
    import dataclasses
    import json

    from flax import nnx

    from jaxmodels import Hyformer, HyformerConfig

    model = Hyformer(dataclasses.replace(HyformerConfig.tiny(), vocab_size=260), rngs=nnx.Rngs(0))
    model.save_pretrained(path / "model")
    (path / "run.json").write_text(json.dumps({"identity": {"task": task, "tokenizer": tokenizer}}))
    return path


@pytest.fixture(scope="session")
def hyformer_run(tmp_path_factory):
    return make_hyformer_run(tmp_path_factory.mktemp("hyformer_run"))


@pytest.fixture(scope="session")
def hyformer_hf(hyformer_run, tmp_path_factory):
    """The same tiny Hyformer exported by `jaxmodels-convert to-hf` (no tokenizer files: byte-level)."""
    from jaxmodels_interop.convert_cli import to_hf

    out = tmp_path_factory.mktemp("hyformer_hf") / "hf"
    to_hf(hyformer_run, out)
    return out
