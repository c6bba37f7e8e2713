"""jaxmodels.streaming and jaxmodels-chat: streamed tokens equal generate's, incremental text, the CLI end to end.

One tiny random Llama (vocabulary 311 = the tiny BPE of tests/test_tokenizer.py) serves every test; the CLI
runs in-process (one subprocess checks the installed module's exit status and stderr).
"""

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from jaxmodels import LlamaConfig, LlamaForCausalLM, generate
from jaxmodels.streaming import Detokenizer, Streamer
from jaxmodels.tokenizer import ByteTokenizer
from jaxmodels_interop.tokenizer import HFTokenizer
from jaxmodels_interop import chat
from tests.test_tokenizer import CHAT, save_hf

CFG = LlamaConfig.tiny(vocab_size=311, max_position_embeddings=67)
SAMPLED = dict(temperature=1.3, top_k=40, top_p=0.9, seed=7)


@pytest.fixture(scope="module")
def model():
    model = LlamaForCausalLM(CFG, rngs=nnx.Rngs(3))
    # Larger weights than the N(0, 0.02) initialisation, so the logits are decisive (no near-ties between
    # differently shaped programs) and the greedy text varies.
    for _, param in nnx.iter_graph(model):
        if isinstance(param, nnx.Param) and param[...].ndim >= 2:
            param[...] = param[...] * 8.0
    return model


@pytest.fixture(scope="module")
def streamer(model):
    return Streamer(model, max_len=40, bucket=16)


def _generated(model, prompt, n, **kw):
    return [int(t) for t in np.asarray(generate(model, np.asarray(prompt)[None], n, **kw))[0, len(prompt):]]


@pytest.mark.parametrize("settings", [{}, SAMPLED], ids=["greedy", "sampled"])
def test_stream_equals_generate(model, settings):
    """Two prompt lengths in one bucket (left padding 11 and 5 slots): the same tokens as generate, from one
    compiled prefill and one compiled step."""
    streamer = Streamer(model, max_len=40, bucket=16)
    rng = np.random.RandomState(0)
    for prompt in (rng.randint(0, 311, 5), rng.randint(0, 311, 11)):
        expected = _generated(model, prompt, 12, **settings)
        assert list(streamer.stream(prompt, 12, **settings)) == expected
        assert len(set(expected)) > 2  # not one token repeated
    assert streamer._prefill.jitted()._cache_size() == streamer._step.jitted()._cache_size() == 1
    if settings:
        assert list(streamer.stream(prompt, 12, **{**settings, "seed": 8})) != expected


def test_stream_stops_after_eos(model, streamer):
    prompt = np.arange(20, 27)
    free = _generated(model, prompt, 10)
    eos = free[3]
    stop = free.index(eos)
    assert list(streamer.stream(prompt, 10, eos_token_id=[300, eos])) == free[:stop + 1]
    # the cache length bounds prompt + new tokens; the prefill shrinks its padding to fit them
    assert streamer.padded_length(7, 33) == 8
    assert len(list(streamer.stream(prompt, 33))) == 33


def test_stream_errors(streamer):
    with pytest.raises(ValueError, match="prompt length 30 \\+ max_new_tokens 11 exceeds the context length 40"):
        streamer.stream(np.ones(30, int), 11)
    with pytest.raises(ValueError, match=r"top_p must lie in \(0, 1\]"):
        streamer.stream(np.ones(3, int), 2, temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 311\)"):
        streamer.stream(np.array([1, 311]), 2)
    with pytest.raises(ValueError, match="the context length must lie in \\[2, 67\\]"):
        Streamer(nnx.eval_shape(lambda: LlamaForCausalLM(CFG, rngs=nnx.Rngs(0))), 68)


def _pieces(detok: Detokenizer, ids) -> list[str]:
    return [detok.push(i) for i in ids] + [detok.flush()]


def test_detokenizer_byte_level_multibyte():
    """Every byte its own token: a character is printed whole once its last byte arrives."""
    tok = ByteTokenizer()
    text = "héllo 日本 🎉!"
    pieces = _pieces(Detokenizer(tok.decode), tok.encode(text))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    emoji = len("héllo 日本 ".encode())
    assert pieces[emoji:emoji + 4] == ["", "", "", "🎉"]


def test_detokenizer_bpe(tmp_path):
    """A BPE that splits unseen characters into byte tokens: no partial characters, the same text as one
    decode, and an incomplete tail still comes out (as U+FFFD) at the end."""
    tok = HFTokenizer(save_hf(tmp_path, eos_token="<|im_end|>"))
    text = "héllo wörld, ünïcode: 日本語 and ÿ ☃ 🎉 tokens"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # merges and byte pieces both occur
    pieces = _pieces(Detokenizer(tok.decode), ids)
    assert "".join(pieces) == tok.decode(ids) == text
    assert all("\ufffd" not in p for p in pieces)
    cut = list(tok.encode("ok 🎉"))[:-1]
    assert "".join(_pieces(Detokenizer(tok.decode), cut)).startswith("ok ")


# --- the CLI ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    """Our checkpoint directory with a tokenizer (chat template, eos <|im_end|>) and no generation config."""
    path = tmp_path_factory.mktemp("chat") / "model"
    model.save_pretrained(path)
    save_hf(path, eos_token="<|im_end|>", chat_template=CHAT)
    return path


def run(argv, monkeypatch, capsys, stdin=""):
    """main(argv) with `stdin` piped in -> (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        chat.main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _reply(model, tok, ids, n, eos=None, **settings):
    """What the CLI prints for the prompt ids: generate's tokens up to the first EOS, decoded."""
    new = _generated(model, ids, n, eos_token_id=eos, **settings)
    if eos is not None:
        new = new[:next((i + 1 for i, t in enumerate(new) if t in eos), len(new))]
    return tok.decode(new)


def _templated(tok, messages):
    return tok.encode(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def test_cli_prompt_argument_and_stdin(model, checkpoint, monkeypatch, capsys):
    tok = HFTokenizer(checkpoint)
    expected = _reply(model, tok, _templated(tok, [{"role": "user", "content": "hello wörld"}]), 9, (2,))
    assert expected  # the random model's reply is not empty before its first <|im_end|>
    for argv, stdin in (([checkpoint, "hello wörld"], ""), ([checkpoint, "-"], "hello wörld\n"),
                        ([checkpoint], "hello wörld\n")):
        assert run([*argv, "--max-new-tokens", 9], monkeypatch, capsys, stdin) == (0, expected + "\n", "")
    system = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the fox"}]
    sampled = _reply(model, tok, _templated(tok, system), 9, (2,), temperature=1.3, top_k=40, seed=7)
    argv = [checkpoint, "the fox", "--system", "be brief", "--max-new-tokens", 9, "--temperature", 1.3, "--top-k",
            40, "--seed", 7]
    assert run(argv, monkeypatch, capsys) == (0, sampled + "\n", "")


def test_cli_eos_from_generation_config_and_raw(model, checkpoint, monkeypatch, capsys, tmp_path):
    """generation_config.json's eos_token_id list beats the tokenizer's eos; --raw continues the text."""
    tok = HFTokenizer(checkpoint)
    ids = tok.hf.encode("the quick brown")
    free = _generated(model, ids, 8)
    eos = (free[2], 300)
    (checkpoint / "generation_config.json").write_text(json.dumps({"eos_token_id": list(eos)}))
    try:
        code, out, err = run([checkpoint, "the quick brown", "--raw", "--max-new-tokens", 8], monkeypatch, capsys)
    finally:
        (checkpoint / "generation_config.json").unlink()
    assert (code, err) == (0, "")
    assert out == tok.decode(free[:free.index(eos[0]) + 1]) + "\n" == _reply(model, tok, ids, 8, eos) + "\n"


def test_eos_ids_from_generation_config_else_tokenizer(checkpoint):
    tok = HFTokenizer(checkpoint)
    assert chat.eos_of({}, tok) == (2,) == chat.eos_of({"eos_token_id": None}, tok)  # <|im_end|>
    assert chat.eos_of({"eos_token_id": [5, 7]}, tok) == (5, 7) and chat.eos_of({"eos_token_id": 9}, tok) == (9,)
    assert chat.eos_of({}, ByteTokenizer()) == (258,)


def test_cli_interactive(model, checkpoint, monkeypatch, capsys):
    """Each stdin line is a turn over the re-templated history; blank lines are skipped, /exit leaves."""
    tok = HFTokenizer(checkpoint)
    code, out, err = run([checkpoint, "-i", "--max-new-tokens", 6], monkeypatch, capsys,
                         stdin="hi there\n\nand the dog?\n/exit\nnever read\n")
    assert (code, err) == (0, "")
    messages = [{"role": "user", "content": "hi there"}]
    first = _reply(model, tok, _templated(tok, messages), 6, (2,))
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "and the dog?"}]
    second = _reply(model, tok, _templated(tok, messages), 6, (2,))
    assert out == f"{first}\n{second}\n"


def test_cli_ctrl_c_ends_the_reply_not_the_session(model, checkpoint, monkeypatch, capsys):
    """Ctrl-C while the third token arrives: the reply so far is printed and kept, the next turn follows."""

    class Interrupting(Detokenizer):
        pushes = 0

        def push(self, token_id):
            Interrupting.pushes += 1
            if Interrupting.pushes == 3:
                raise KeyboardInterrupt
            return super().push(token_id)

    monkeypatch.setattr(chat, "Detokenizer", Interrupting)
    tok = HFTokenizer(checkpoint)
    code, out, _ = run([checkpoint, "-i", "--max-new-tokens", 6], monkeypatch, capsys, stdin="hi there\nthe dog\n")
    messages = [{"role": "user", "content": "hi there"}]
    first = tok.decode(_generated(model, _templated(tok, messages), 2))
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "the dog"}]
    assert (code, out) == (0, f"{first}\n{_reply(model, tok, _templated(tok, messages), 6, (2,))}\n")


@pytest.mark.parametrize("extra, message", [
    (["--temperature", "-1"], "temperature must be >= 0"),
    (["--temperature", "1", "--top-p", "1.5"], r"top_p must lie in \(0, 1\]"),
    (["--temperature", "1", "--top-k", "0"], r"top_k must lie in \[1, "),
    (["--temperature", "1", "--top-k", "312"], r"top_k must lie in \[1, 311\]"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--max-context", "68"], "--max-context 68 exceeds the model's limit of 67 tokens"),
    (["--max-context", "20"], r"the prompt is \d+ tokens, more than the context of 20 tokens leaves room for"),
    (["--raw", "--system", "x"], "--system needs the chat template \\(--raw was given\\)"),
])
def test_cli_errors(checkpoint, monkeypatch, capsys, extra, message):
    code, out, err = run([checkpoint, "a long prompt about the lazy dog and the fox", *extra], monkeypatch, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert re.search(message, err), err


def test_cli_missing_inputs(model, checkpoint, monkeypatch, capsys, tmp_path):
    code, _, err = run([tmp_path / "nowhere", "hi"], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: ") and "nowhere" in err
    bare = tmp_path / "bare"
    model.save_pretrained(bare)
    code, _, err = run([bare, "hi"], monkeypatch, capsys)
    assert (code, err) == (2, f"error: {bare}: no tokenizer (tokenizer.json) there; pass --tokenizer DIR, or "
                              f"--tokenizer bytes for a byte-level model\n")
    code, _, err = run([bare, "hi", "--tokenizer", checkpoint, "--max-new-tokens", 2], monkeypatch, capsys)
    assert code == 0 and err == ""
    code, _, err = run([checkpoint], monkeypatch, capsys, stdin="  \n")
    assert (code, err) == (2, "error: the prompt is empty\n")


def test_cli_subprocess_error_has_no_traceback(tmp_path):
    """The installed module as a user runs it: one error line, exit status 2."""
    proc = subprocess.run([sys.executable, "-m", "jaxmodels_interop.chat", str(tmp_path / "missing"), "hi"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_console_script_is_declared():
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["jaxmodels-chat"].partition(":")
    assert (module, func) == ("jaxmodels_interop.chat", "main") and callable(chat.main)
