"""GGUF import: tiny GGUF files written here with gguf.GGUFWriter the way llama.cpp writes them (q/k rows permuted
for llama, tied heads left out, tensors quantised with gguf.quants.quantize), converted and checked against the
source model, transformers, and bad input.

Quantised weights are checked for equality with gguf.quants.dequantize(gguf.quants.quantize(w)), and logits
against a reference model holding exactly those values, at 1e-5: both sides then compute with the same float32
weights, so only float32 rounding separates them. An all-F32 file is checked against the unquantised source
at the same tolerance, which is what proves the q/k permutation undone (a wrong one moves logits by O(1)).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jaxmodels
from jaxmodels import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen3Config, Qwen3ForCausalLM
from jaxmodels.checkpoint import flat_params
from jaxmodels.family import family_of
from jaxmodels.gguf import RopePairs
from jaxmodels_interop.tokenizer import HFTokenizer
from jaxmodels_interop import convert_cli

from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
Q = gguf.GGMLQuantizationType
T = gguf.MODEL_TENSOR

# A byte-level BPE vocabulary (GPT-2 spelling: "Ġ" is a space, "Ċ" a newline) over a small alphabet.
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ALPHABET = list("abdehilnorstuwy!?,.") + ["Ġ", "Ċ"]
MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "Ġ t", "Ġt he", "Ġ s"]
TOKENS = SPECIALS + ALPHABET + [m.replace(" ", "") for m in MERGES]
CHAT = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
TEXTS = ["hello world", "hello world!\nthe  sword", "<|im_start|>user\nhi there<|im_end|>", " a,b.?", ""]
BOS, EOS, PAD = 1, 2, 0

# Row lengths are multiples of the 32-element quantisation blocks; the other sizes stay distinct.
SIZES = dict(vocab_size=len(TOKENS), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
             rms_norm_eps=float(np.float32(1e-5)), rope_theta=10000.0, bos_token_id=BOS, eos_token_id=EOS,
             pad_token_id=PAD)

# Every storage a tensor can have here: block types (Q4_0, Q4_1, Q5_1, Q8_0), F16, and F32 for norms/biases.
MIXED = {T.TOKEN_EMBD: Q.Q8_0, T.OUTPUT: Q.Q8_0, T.ATTN_Q: Q.Q4_0, T.ATTN_K: Q.Q4_0, T.ATTN_V: Q.F16,
         T.ATTN_OUT: Q.Q5_1, T.FFN_GATE: Q.Q8_0, T.FFN_UP: Q.F16, T.FFN_DOWN: Q.Q4_1}


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: half-split RoPE rows -> interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def source_model(kind: str, tied: bool, seed: int = 0):
    """A random model and its tensors in Hugging Face layout (norms and biases random too, so a swap shows)."""
    config_class, model_class, sizes = {
        "llama": (LlamaConfig, LlamaForCausalLM, SIZES), "qwen2": (Qwen2Config, LlamaForCausalLM, SIZES),
        # head_dim 24 is not hidden_size / heads: the file's key_length must give it
        "qwen3": (Qwen3Config, Qwen3ForCausalLM, {**SIZES, "head_dim": 24})}[kind]
    config = config_class(**sizes, tie_word_embeddings=tied)
    model = model_class(config, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    table = family_of(config).table
    hf = {}
    for key, value in flat_params(model).items():
        hf_key, transform = table.to_hf(key)
        x = np.asarray(transform.to_hf(np.asarray(value)))
        hf[hf_key] = (x if "norm" not in key else 1 + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
        if "bias" in key:
            hf[hf_key] = (0.1 * rng.standard_normal(x.shape)).astype(np.float32)
    return config, hf


def write_gguf(path: Path, kind: str, config, hf: dict, types: dict | None, *, tokenizer: bool = True,
               arch_name: str | None = None, extra=None) -> dict:
    """Writes `hf` as llama.cpp would; returns the values a reader must get back (dequantised, HF layout)."""
    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "qwen3": gguf.MODEL_ARCH.QWEN3}[kind]
    w = gguf.GGUFWriter(str(path), arch_name or gguf.MODEL_ARCH_NAMES[arch])
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(config.rope_theta)
    w.add_rope_dimension_count(config.dim_per_head)
    if kind == "qwen3":  # llama.cpp's converter writes the head size of models whose config gives head_dim
        w.add_key_length(config.dim_per_head)
        w.add_value_length(config.dim_per_head)
    w.add_vocab_size(config.vocab_size)
    if tokenizer:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(TOKENS)
        w.add_token_types([3 if t in SPECIALS else 1 for t in TOKENS])
        w.add_token_merges(MERGES)
        w.add_bos_token_id(BOS)
        w.add_eos_token_id(EOS)
        w.add_pad_token_id(PAD)
        w.add_add_bos_token(False)
        w.add_chat_template(CHAT)
    if extra:
        extra(w)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    expected = {}
    for key, x in sorted(hf.items()):
        kind_, name = names.get_type_and_name(key, try_suffixes=(".weight", ".bias"))
        qtype = Q.F32 if types is None or x.ndim == 1 else types[kind_]
        stored = gguf.quants.quantize(x, qtype)
        expected[key] = gguf.quants.dequantize(stored, qtype)  # quantisation is per row: permuting rows commutes
        if arch == gguf.MODEL_ARCH.LLAMA and kind_ in (T.ATTN_Q, T.ATTN_K):
            heads = config.num_attention_heads if kind_ == T.ATTN_Q else config.kv_heads
            stored = llama_cpp_permute(stored, heads)
        w.add_tensor(name, stored, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


def reference(tmp: Path, config, hf: dict):
    """Our model holding exactly `hf` (a Hugging Face directory read back by jaxmodels.from_pretrained)."""
    tmp.mkdir()
    save_file(hf, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config.to_hf_config()))
    return jaxmodels.from_pretrained(tmp)


IDS = jnp.asarray(np.random.default_rng(7).integers(0, len(TOKENS), (2, 13)), jnp.int32)


def logits(model) -> np.ndarray:
    return np.asarray(model(IDS).logits)


CASES = {"llama-tied-mixed": ("llama", True, MIXED), "llama-untied-f32": ("llama", False, None),
         "qwen2-untied-mixed": ("qwen2", False, MIXED), "qwen3-tied-mixed": ("qwen3", True, MIXED)}


@pytest.fixture(scope="module", params=sorted(CASES))
def written(request, tmp_path_factory):
    kind, tied, types = CASES[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    config, hf = source_model(kind, tied)
    expected = write_gguf(tmp / "tiny.gguf", kind, config, hf, types)
    return tmp, config, hf, expected, types


def test_from_gguf_gives_config_weights_and_logits(written):
    tmp, config, hf, expected, types = written
    out = tmp / "ours"
    convert_cli.main(["from-gguf", str(tmp / "tiny.gguf"), str(out), "--force"])
    model = jaxmodels.from_pretrained(out)
    assert model.config == config
    assert set(hf) == set(expected) and ("lm_head.weight" in hf) != config.tie_word_embeddings
    table = family_of(config).table
    params = flat_params(model)
    for key, value in params.items():
        hf_key, transform = table.to_hf(key)
        assert np.array_equal(np.asarray(transform.to_hf(np.asarray(value))), expected[hf_key]), key
    ref = reference(tmp / "ref", config, expected)
    np.testing.assert_allclose(logits(model), logits(ref), atol=1e-5, rtol=0)
    if types is None:  # nothing quantised: the source model itself
        np.testing.assert_allclose(logits(model), logits(reference(tmp / "src", config, hf)), atol=1e-5, rtol=0)


def test_from_pretrained_reads_the_file_and_its_directory(written, tmp_path):
    tmp, config, _, expected, _ = written
    direct = jaxmodels.from_pretrained(tmp / "tiny.gguf")
    (tmp_path / "d").mkdir()
    os.symlink(tmp / "tiny.gguf", tmp_path / "d" / "m.gguf")
    in_dir = jaxmodels.from_pretrained(tmp_path / "d")
    assert direct.config == in_dir.config == config
    np.testing.assert_array_equal(logits(direct), logits(in_dir))
    os.symlink(tmp / "tiny.gguf", tmp_path / "d" / "n.gguf")
    with pytest.raises(ValueError, match=r"holds 2 \.gguf files \(m\.gguf, n\.gguf\); pass one"):
        jaxmodels.from_pretrained(tmp_path / "d")


def test_bfloat16_is_the_float32_values_rounded(written):
    tmp, *_ = written
    convert_cli.main(["from-gguf", str(tmp / "tiny.gguf"), str(tmp / "f32"), "--force"])
    convert_cli.main(["from-gguf", str(tmp / "tiny.gguf"), str(tmp / "bf16"), "--dtype", "bfloat16", "--force"])
    a, b = (load_file(str(tmp / d / "model.safetensors")) for d in ("f32", "bf16"))
    assert sorted(a) == sorted(b)
    for k in a:
        assert b[k].dtype == ml_dtypes.bfloat16 and np.array_equal(b[k], a[k].astype(ml_dtypes.bfloat16)), k


def test_rope_pairs_is_llama_cpp_permutation_and_inverts():
    rows = np.arange(8.0)  # one head of 8: half-split pairs (0, 4), (1, 5), ... become adjacent
    assert RopePairs(1).to_gguf(rows).tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    w = np.random.default_rng(0).standard_normal((4 * 6, 5))
    np.testing.assert_array_equal(RopePairs(4).to_gguf(w), llama_cpp_permute(w, 4))
    np.testing.assert_array_equal(RopePairs(4).from_gguf(RopePairs(4).to_gguf(w)), w)


def test_tokenizer_round_trip(written):
    tmp, *_ = written
    out = tmp / "tok"
    convert_cli.main(["from-gguf", str(tmp / "tiny.gguf"), str(out), "--force"])
    tok = HFTokenizer(out)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (BOS, EOS, PAD, len(TOKENS))
    assert json.loads((out / "generation_config.json").read_text()) == {
        "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD}
    assert tok.chat_template == CHAT
    ids = tok.encode("hello world")
    assert [TOKENS[i] for i in ids] == ["hello", "Ġworld"]
    assert tok.decode(ids) == "hello world"
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == \
        "<|im_start|>user\nhi<|im_end|>\n"
    pytest.importorskip("torch", reason="transformers' GGUF tokenizer loader imports torch")
    import transformers

    ref = transformers.AutoTokenizer.from_pretrained(str(tmp), gguf_file="tiny.gguf")
    for text in TEXTS:
        assert tok.encode(text).tolist() == ref.encode(text), text


def test_to_hf_loads_in_transformers_and_matches_transformers_gguf_loader(written):
    torch = pytest.importorskip("torch")
    import transformers

    tmp, config, *_ = written
    convert_cli.main(["from-gguf", str(tmp / "tiny.gguf"), str(tmp / "hf"), "--to", "hf", "--force"])
    ours = logits(jaxmodels.from_pretrained(tmp / "tiny.gguf"))
    ids = torch.from_numpy(np.array(IDS)).long()
    with torch.no_grad():
        exported = transformers.AutoModelForCausalLM.from_pretrained(tmp / "hf").eval()
        models = [exported]
        # transformers' GGUF reader takes Qwen3's head_dim from its config default (128), not from the file's
        # key_length (integrations/ggml.py); our tiny Qwen3 has 24, so only the exported directory compares.
        if config.model_type != "qwen3":
            models.append(transformers.AutoModelForCausalLM.from_pretrained(str(tmp), gguf_file="tiny.gguf",
                                                                            dtype=torch.float32).eval())
        for model in models:
            np.testing.assert_allclose(model(ids).logits.numpy(), ours, atol=1e-5, rtol=0)
    assert transformers.AutoTokenizer.from_pretrained(tmp / "hf").encode("hello world") == [
        TOKENS.index("hello"), TOKENS.index("Ġworld")]


def test_conversion_imports_no_torch(written, tmp_path):
    tmp, *_ = written
    code = ("import sys; from jaxmodels_interop import convert_cli; "
            f"convert_cli.main(['from-gguf', {str(tmp / 'tiny.gguf')!r}, {str(tmp_path / 'o')!r}, '--to', 'hf']); "
            "import jaxmodels; jaxmodels.from_pretrained(sys.argv[1]); assert 'torch' not in sys.modules, 'torch'")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp / "tiny.gguf")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "generation_config.json, tokenizer.json, tokenizer_config.json" in proc.stdout


# -- bad input: one `error:` line, exit status 2, nothing written -----------------------------------------------

def _patch_type(path: Path, tensor: str, type_id: int) -> None:
    reader = gguf.GGUFReader(path, "r+")
    field = next(t.field for t in reader.tensors if t.name == tensor)
    field.parts[4][0] = type_id  # the tensor-info record: name length, name, n_dims, dims, type, offset
    reader.data.flush()


def _bad(tmp: Path, case: str) -> Path:
    config, hf = source_model("llama", True)
    path = tmp / "bad.gguf"
    if case == "unknown-arch":
        write_gguf(path, "llama", config, hf, None, arch_name="gptneox")
    elif case == "q8_1":
        hf = {k: v for k, v in hf.items() if k != "model.layers.1.mlp.up_proj.weight"}
        block, size = gguf.GGML_QUANT_SIZES[Q.Q8_1]
        blocks = np.zeros((96, 64 // block * size), np.uint8)
        write_gguf(path, "llama", config, hf, None,
                   extra=lambda w: w.add_tensor("blk.1.ffn_up.weight", blocks, raw_dtype=Q.Q8_1))
    elif case == "unknown-type":
        write_gguf(path, "llama", config, hf, None)
        _patch_type(path, "blk.0.attn_v.weight", 99)
    elif case == "truncated":
        write_gguf(path, "llama", config, hf, MIXED)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
    elif case == "truncated-header":
        write_gguf(path, "llama", config, hf, MIXED)
        path.write_bytes(path.read_bytes()[:300])
    elif case == "not-gguf":
        path.write_text("{\"model_type\": \"llama\"}\n")
    elif case == "refused-metadata":
        write_gguf(path, "llama", config, hf, None, extra=lambda w: w.add_rope_scaling_type(
            gguf.RopeScalingType.YARN))
    return path


@pytest.mark.parametrize("case, message", [
    ("unknown-arch", "GGUF architecture 'gptneox' is not supported; supported: llama, qwen2, qwen3"),
    ("q8_1", "the gguf library cannot dequantise 1 tensor(s): blk.1.ffn_up.weight (Q8_1)"),
    ("unknown-type", "tensor 'blk.0.attn_v.weight' has ggml type 99, which the gguf library"),
    ("truncated", "truncated or corrupt GGUF file"),
    ("truncated-header", "truncated or corrupt GGUF file"),
    ("not-gguf", "not a GGUF file (it starts with b'{\"mo', not b'GGUF')"),
    ("refused-metadata", "unsupported llama metadata: llama.rope.scaling.type='yarn'"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, case, message):
    src = _bad(tmp_path, case)
    with pytest.raises(SystemExit) as exit_:
        convert_cli.main(["from-gguf", str(src), str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "no temporary leftovers"


def test_output_needs_force_and_never_holds_the_source(written, tmp_path, capsys):
    tmp, *_ = written
    src = tmp_path / "in" / "m.gguf"
    src.parent.mkdir()
    src.write_bytes((tmp / "tiny.gguf").read_bytes())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    for argv, message in (([str(tmp_path / "out")], "already exists; refusing to overwrite it"),
                          ([str(src.parent), "--force"], "holds the source"),
                          ([str(src), "--force"], "is the source")):
        with pytest.raises(SystemExit):
            convert_cli.main(["from-gguf", str(src), *argv])
        assert message in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    assert src.read_bytes() == (tmp / "tiny.gguf").read_bytes()
    convert_cli.main(["from-gguf", str(src), str(tmp_path / "out"), "--force"])
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "model.safetensors").is_file()


# -- the real SmolLM2 file (opt-in) ----------------------------------------------------------------------------

@pytest.mark.real_model
def test_smollm2_gguf_matches_transformers(tmp_path):
    """Weights bit-identical to transformers' GGUF load; logits equal to our model of the directory transformers
    saves from it (JAXMODELS_SMOLLM2_HF, when set) within 1e-5; and to transformers' own float32 forward within
    1e-3: across frameworks float32 rounding alone differs by ~4e-4 over 30 layers and 320 tokens on logits of
    magnitude ~30 (interop/parity.py measures that against a float64 reference)."""
    path = os.environ.get("JAXMODELS_SMOLLM2_GGUF")
    if not path or not Path(path).is_file():
        pytest.skip("set JAXMODELS_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf")
    torch = pytest.importorskip("torch")
    import transformers

    path = Path(path)
    convert_cli.main(["from-gguf", str(path), str(tmp_path / "ours")])
    ours = jaxmodels.from_pretrained(tmp_path / "ours")
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    table = family_of(ours.config).table
    for key, value in flat_params(ours).items():
        hf_key, transform = table.to_hf(key)
        assert np.array_equal(np.asarray(transform.to_hf(np.asarray(value))), state[hf_key]), key
    ids = np.random.default_rng(0).integers(0, ours.config.vocab_size, (1, 320))
    got = np.asarray(ours(jnp.asarray(ids, jnp.int32)).logits)
    hf_dir = os.environ.get("JAXMODELS_SMOLLM2_HF")
    if hf_dir and Path(hf_dir).is_dir():
        theirs = jaxmodels.from_pretrained(hf_dir)(jnp.asarray(ids, jnp.int32)).logits
        same = float(np.abs(got - np.asarray(theirs)).max())
        print(f"SmolLM2 GGUF: max |logits difference| vs {hf_dir} = {same:.3g}")
        assert same < 1e-5
    with torch.no_grad():
        expected = ref(torch.from_numpy(ids)).logits.numpy()
    diff = float(np.abs(got - expected).max())
    print(f"SmolLM2 GGUF: max |logits difference| vs transformers' float32 forward = {diff:.3g}")
    assert diff < 1e-3
    tok = HFTokenizer(tmp_path / "ours")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    texts = ("Hello, how are you?", "  spaces\tand\nnewlines 1234 naïve 東京 😀", "<|im_start|>user\nhi<|im_end|>")
    for text in texts:
        assert tok.encode(text).tolist() == hf_tok.encode(text), text
