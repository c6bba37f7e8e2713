"""Bad input: clear errors that say what was wrong, what was expected, and where; no adapter state lost."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from jaxmodels_interop.qwen_vl import ModelDirectoryError, OnlineLLM, UnknownAdapterError, load_hf_qwen2_5_vl_model
from jaxmodels_interop.qwen_vl.cli import main as cli


@pytest.fixture
def copy_of(tiny_dir, tmp_path):
    def make(*remove):
        target = tmp_path / "model"
        shutil.copytree(tiny_dir, target)
        for name in remove:
            (target / name).unlink()
        return target
    return make


def test_missing_processor_files(copy_of):
    path = copy_of("processor_config.json")
    with pytest.raises(ModelDirectoryError, match=r"is missing image processor \(preprocessor_config.json or "
                                                  r"processor_config.json\)"):
        load_hf_qwen2_5_vl_model(path)


def test_missing_tokenizer_files(copy_of):
    path = copy_of("tokenizer.json", "tokenizer_config.json")
    with pytest.raises(ModelDirectoryError, match=r"missing tokenizer \(tokenizer.json, or vocab.json \+ merges.txt\), "
                                                  r"tokenizer_config.json"):
        OnlineLLM(path)


def test_a_directory_that_is_not_qwen2_5_vl(tmp_path):
    from tests.hf_models import tiny_hf_model

    path = tmp_path / "qwen2"
    tiny_hf_model("qwen2", path, vocab_size=17, num_hidden_layers=1, num_key_value_heads=2)
    with pytest.raises(ModelDirectoryError, match=r"model_type is 'qwen2' \(architectures \['Qwen2ForCausalLM'\]\), "
                                                  r"expected 'qwen2_5_vl'"):
        OnlineLLM(path)
    with pytest.raises(ModelDirectoryError, match="has no config.json"):
        OnlineLLM(tmp_path)
    with pytest.raises(ModelDirectoryError, match="does not exist; expected a local Qwen2.5-VL directory or a hub id"):
        OnlineLLM(tmp_path / "nowhere")
    with pytest.raises(ModelDirectoryError, match="someorg/no-such-model is not a local directory and could not be "
                                                  "loaded as a hub id"):
        OnlineLLM("someorg/no-such-model")  # HF_HUB_OFFLINE=1 in tests/conftest.py: nothing leaves the machine


def test_unsupported_image_types(llm, tmp_path):
    with pytest.raises(TypeError, match=r"images\[0\]: unsupported image type builtins.bytes; expected a PIL"):
        llm.generate("Hi", images=b"\x89PNG")
    with pytest.raises(TypeError, match=r"images\[1\]\[0\]: unsupported image type torch.Tensor"):
        llm.generate(["Hi", "Why?"], images=[[], [torch.zeros(3, 56, 56)]])
    with pytest.raises(ValueError, match=r"images\[0\]: numpy image of dtype float64 and shape \(56, 56, 3\); "
                                         r"expected uint8"):
        llm.generate("Hi", images=np.zeros((56, 56, 3)))
    with pytest.raises(FileNotFoundError, match=r"images\[0\]: image file .*missing.png does not exist"):
        llm.generate("Hi", images=str(tmp_path / "missing.png"))
    (tmp_path / "not.png").write_text("text")
    with pytest.raises(ValueError, match=r"images\[0\]: .*not.png is not a readable image"):
        llm.generate("Hi", images=tmp_path / "not.png")
    with pytest.raises(ValueError, match=r"images: for 2 prompts, expected a list of 2 lists of images"):
        llm.generate(["Hi", "Why?"], images=[np.zeros((56, 56, 3), np.uint8)])


def test_image_beyond_max_pixels(llm, tmp_path):
    big = Image.fromarray(np.zeros((120, 150, 3), np.uint8))
    with pytest.raises(ValueError, match=r"images\[0\]: image of 150x120 = 18000 pixels exceeds max_pixels=12544; "
                                         r"resize it first or load the runner with a larger max_pixels"):
        llm.generate("Hi", images=big)
    with pytest.raises(ValueError, match="exceeds max_pixels"):
        llm.learn("Hi", "there", lora_adapter="never", images=big)
    assert "never" not in llm.lora_adapters


def test_max_pixels_option_is_honoured(tiny_dir):
    roomy = OnlineLLM(tiny_dir, max_pixels=200 * 200, min_pixels=28 * 28, attn_implementation="eager")
    assert roomy.hf_model.max_pixels == 40000 and roomy.hf_model.min_pixels == 784
    inputs = roomy.encode("Hi", np.zeros((120, 150, 3), np.uint8))
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 10]]  # 112x140 after rounding to multiples of 28
    with pytest.raises(ValueError, match="min_pixels=50000 exceeds max_pixels=40000"):
        OnlineLLM(tiny_dir, max_pixels=40000, min_pixels=50000)


def test_unknown_adapter_name(llm):
    llm.learn("Hi", "there", lora_adapter="known", steps=1)
    with pytest.raises(UnknownAdapterError, match=r"unknown LoRA adapter 'nope'; known adapters: .*'known'.* \(create "
                                                  r"one with learn"):
        llm.generate("Hi", lora_adapter="nope")
    with pytest.raises(UnknownAdapterError, match="unknown LoRA adapter 'nope'"):
        list(llm.stream("Hi", lora_adapter="nope"))
    with pytest.raises(UnknownAdapterError, match="unknown LoRA adapter 'nope'"):
        llm.save_adapter("nope", "/tmp/never-written")
    with pytest.raises(ValueError, match="adapter name 'a.b': expected letters, digits"):
        llm.learn("Hi", "there", lora_adapter="a.b")
    with pytest.raises(ValueError, match="adapter name 'half' clashes with an attribute of torch.nn.Module"):
        llm.learn("Hi", "there", lora_adapter="half")
    assert "half" not in llm.lora_adapters and "known" in llm.lora_adapters


def test_empty_response_loses_nothing(llm):
    llm.learn("Hi", "there", lora_adapter="keep", steps=2, lr=1e-2)
    before, opt = llm.adapters.snapshot("keep")
    for bad in ("", "   \n"):
        with pytest.raises(ValueError, match=r"response is .*: learning needs a non-empty response"):
            llm.learn("Hi", bad, lora_adapter="keep")
        with pytest.raises(ValueError, match="non-empty response"):
            llm.learn("Hi", bad, lora_adapter="brand_new")
    after, opt_after = llm.adapters.snapshot("keep")
    assert all(torch.equal(after[n], w) for n, w in before.items())
    assert opt_after["state"].keys() == opt["state"].keys()
    assert "brand_new" not in llm.lora_adapters
    with pytest.raises(ValueError, match=r"steps=0, lr=0.001; expected steps >= 1"):
        llm.learn("Hi", "there", steps=0, lr=1e-3)


def test_lora_disabled_refuses_to_learn(tiny_dir):
    plain = OnlineLLM(tiny_dir, lora_rank=0, attn_implementation="eager")
    with pytest.raises(ValueError, match="lora_rank=0: LoRA is disabled, so there is nothing to learn"):
        plain.learn("Hi", "there")


def test_bad_options(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown attn_implementation 'flash'; expected one of flash_attention_2, "
                                         "sdpa, eager"):
        OnlineLLM(tiny_dir, attn_implementation="flash")
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        OnlineLLM(tiny_dir, dtype="float8")
    with pytest.raises(FileNotFoundError, match="has no adapter_config.json"):
        OnlineLLM(tiny_dir, attn_implementation="eager").load_adapter(tmp_path, "x")


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    assert cli(["generate", str(tmp_path), "Hi"]) == 2
    assert "has no config.json" in capsys.readouterr().err
