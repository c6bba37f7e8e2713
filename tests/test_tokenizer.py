"""jaxmodels_interop.tokenizer (and the byte tokenizer of jaxmodels.tokenizer): special tokens read from a directory's files, round trips, vocab size, errors, no torch."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxmodels_interop.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXTS = ["the quick brown fox jumps over the lazy dog", "héllo wörld, ünïcode and ascii", "tokens: 12 + 7 = 19"]
CHAT = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def train_bpe(*, bos_template: bool = False):
    """A byte-level BPE trained on TEXTS with SPECIALS at ids 0, 1, 2; optionally a post-processor adding
    <|im_start|> in front (which `encode` must not add)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=311, special_tokens=SPECIALS, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos_template:
        tok.post_processor = processors.TemplateProcessing(single="<|im_start|> $A",
                                                           special_tokens=[("<|im_start|>", 1)])
    return tok


def save_hf(path, tok=None, **special):
    """A full Hugging Face tokenizer directory (tokenizer.json + tokenizer_config.json) declaring `special`."""
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tok or train_bpe(), **special).save_pretrained(path)
    return path


def test_special_ids_come_from_the_files(tmp_path):
    # <|im_end|> as eos (Qwen's chat models): guessing by name would have taken <|endoftext|>
    tok = HFTokenizer(save_hf(tmp_path, eos_token="<|im_end|>", pad_token="<|endoftext|>"))
    assert (tok.eos_id, tok.pad_id, tok.bos_id, tok.mask_id) == (2, 0, None, None)
    assert tok.name == str(tmp_path) and tok.hf.eos_token == "<|im_end|>"
    assert load_tokenizer(tmp_path).eos_id == 2


def test_special_tokens_map_json_is_read(tmp_path):
    train_bpe().save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": {"content": "<|endoftext|>", "special": True},
         "mask_token": "<|im_end|>"}))
    tok = HFTokenizer(tmp_path)
    assert (tok.bos_id, tok.eos_id, tok.mask_id, tok.pad_id) == (1, 0, 2, None)


def test_round_trip_without_special_tokens(tmp_path):
    tok = HFTokenizer(save_hf(tmp_path, train_bpe(bos_template=True), eos_token="<|im_end|>"))
    assert tok.hf.encode(TEXTS[0])[0] == 1  # the post-processor would add <|im_start|> ...
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids.dtype == np.int32 and ids.ndim == 1 and 1 not in ids  # ... encode does not
        assert tok.decode(ids) == text
        assert tok.decode(np.concatenate([[1], ids, [tok.eos_id]])[None, :]) == text  # [1, T]; specials skipped


def test_vocab_size_counts_added_tokens(tmp_path):
    from transformers import PreTrainedTokenizerFast

    base = train_bpe()
    hf = PreTrainedTokenizerFast(tokenizer_object=base, eos_token="<|endoftext|>")
    assert hf.add_tokens(["<|tool|>", "<|think|>"]) == 2
    hf.save_pretrained(tmp_path)
    tok = HFTokenizer(tmp_path)
    assert tok.vocab_size == base.get_vocab_size(with_added_tokens=True) + 2 == len(tok.hf)
    assert max(tok.encode("a <|think|> b")) == tok.vocab_size - 1


def test_a_bare_tokenizer_json_declares_no_special_tokens(tmp_path):
    base = train_bpe()
    base.save(str(tmp_path / "tokenizer.json"))
    tok = HFTokenizer(tmp_path)
    assert (tok.eos_id, tok.bos_id, tok.pad_id, tok.mask_id) == (None, None, None, None)
    assert tok.vocab_size == base.get_vocab_size(with_added_tokens=True)
    assert tok.decode(tok.encode(TEXTS[1])) == TEXTS[1]
    assert tok.decode(np.concatenate([[2], tok.encode(TEXTS[1])])) == TEXTS[1]  # still special in tokenizer.json


def test_missing_and_broken_tokenizer_files(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no tokenizer.json in that directory"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        HFTokenizer(tmp_path / "absent")  # a missing directory is never taken for a hub id
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=f"{tmp_path}: cannot load the tokenizer there"):
        HFTokenizer(tmp_path)


def test_chat_template_passthrough(tmp_path):
    tok = HFTokenizer(save_hf(tmp_path / "chat", eos_token="<|im_end|>", chat_template=CHAT))
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nhi<|im_end|>\n"
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=False)
    assert list(ids) == tok.hf.encode(text, add_special_tokens=False) and ids[0] == 1
    plain = HFTokenizer(save_hf(tmp_path / "plain", eos_token="<|im_end|>"))
    assert plain.chat_template is None
    with pytest.raises(ValueError, match="has no chat template"):
        plain.apply_chat_template(messages)


def test_byte_tokenizer():
    tok = load_tokenizer(None)
    assert isinstance(tok, ByteTokenizer) and tok.vocab_size == 260
    ids = tok.encode(TEXTS[1])
    assert ids.dtype == np.int32 and len(ids) == len(TEXTS[1].encode("utf-8"))
    assert tok.decode(np.concatenate([[tok.bos_id], ids, [tok.eos_id, tok.pad_id, tok.mask_id]])) == TEXTS[1]


def test_training_reexports_the_same_objects():
    import jaxmodels_interop.tokenizer as core
    import jaxmodels_training.tokenizer as training

    for name in ("ByteTokenizer", "HFTokenizer", "load_tokenizer"):
        assert getattr(training, name) is getattr(core, name)


def test_loading_a_tokenizer_does_not_import_torch(tmp_path):
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed, so nothing could import it")
    save_hf(tmp_path, eos_token="<|im_end|>", chat_template=CHAT)
    code = textwrap.dedent(f"""
        import json, sys
        import jaxmodels_interop.tokenizer
        before = "transformers" in sys.modules
        tok = jaxmodels_interop.tokenizer.HFTokenizer({str(tmp_path)!r})
        tok.decode(tok.encode("hello"))
        tok.apply_chat_template([{{"role": "user", "content": "hi"}}], tokenize=True)
        print(json.dumps({{"transformers_before": before, "transformers": "transformers" in sys.modules,
                          "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"transformers_before": False, "transformers": True, "torch": []}, seen
