"""The family record: a new family is one registered record; one HF config policy; imports point one way."""

import dataclasses
import graphlib
import json
from pathlib import Path

import grimp
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmodels
from jaxmodels import family as families
from jaxmodels.hf.config_policy import HFConfigReader, UnsupportedConfig
from jaxmodels.hf.tables import LLAMA
from jaxmodels.llama import lm_head_tie
from jaxmodels.pretrained import resolve

PACKAGES = ("jaxmodels", "jaxmodels_interop", "jaxmodels_training", "jaxmodels_kernels", "jaxmodels_benchmarks")
# Each may import those after it, never those before it.
LAYERS = ("jaxmodels_benchmarks", "jaxmodels_training", "jaxmodels_interop", "jaxmodels", "jaxmodels_kernels")


def test_the_import_graph_of_jaxmodels_has_no_cycle():
    """grimp reads every import statement, those inside functions too, so a lazy import cannot hide a cycle."""
    graph = grimp.build_graph("jaxmodels", include_external_packages=False, cache_dir=None)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert "jaxmodels.pretrained" in edges["jaxmodels.hyformer"]  # the graph sees what it should
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_imports_point_one_way_between_packages():
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)
    illegal = [f"{d.importer} -> {d.imported} ({sorted(r.heads)[0]} imports {sorted(r.tails)[0]})"
               for d in graph.find_illegal_dependencies_for_layers(layers=LAYERS) for r in d.routes]
    assert not illegal


def test_builtin_families_are_registered_once_each():
    assert families.model_types() == ["gemma3_text", "hyformer", "llama", "mistral", "qwen2", "qwen3", "vvalt"]
    assert families.get("qwen2").config_class is jaxmodels.Qwen2Config
    assert families.family_of(jaxmodels.HyformerConfig.tiny()).table.name == "hyformer"
    with pytest.raises(ValueError, match="model_type 'llama' is already registered"):
        families.register(dataclasses.replace(families.get("llama"), name="other"))
    with pytest.raises(ValueError, match=r"unsupported model_type 'gpt2'; supported: gemma3_text, hyformer, llama, "
                                         r"mistral, qwen2, qwen3, vvalt"):
        families.get("gpt2")
    assert families.get("hyformer").preset("tiny") == jaxmodels.HyformerConfig.tiny()


# -- a throwaway family: Llama under another model_type, added by one record --------------------------------

@dataclasses.dataclass(frozen=True)
class RenamedLlamaConfig(jaxmodels.LlamaConfig):
    model_type = "renamed_llama"

    def to_hf_config(self):
        return {**super().to_hf_config(), "model_type": self.model_type}


RENAMED = families.Family(name="renamed_llama", config_class=RenamedLlamaConfig,
                          model_classes=(jaxmodels.LlamaForCausalLM,), table=LLAMA,
                          from_hf=RenamedLlamaConfig.read_hf_config, to_hf=lambda config, cls: config.to_hf_config(),
                          tied=lm_head_tie)


@pytest.fixture
def renamed(tmp_path):
    from tests.hf_models import tiny_hf_model

    hf = tiny_hf_model("llama", tmp_path / "src", num_key_value_heads=2, tie_word_embeddings=True)
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps({**cfg, "model_type": "renamed_llama"}))
    families.register(RENAMED)
    yield hf, tmp_path
    families.unregister(RENAMED)
    assert "renamed_llama" not in families.model_types()


def _tensors(path):
    from safetensors.numpy import load_file

    return {k: v for f in sorted(Path(path).glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_a_registered_family_round_trips_everywhere(renamed, capsys):
    import torch

    from jaxmodels_interop import convert_cli

    hf, tmp = renamed
    model = jaxmodels.from_pretrained(tmp / "src")
    assert type(model.config) is RenamedLlamaConfig and type(model) is jaxmodels.LlamaForCausalLM
    ids = np.random.default_rng(0).integers(0, 53, (2, 37))
    with torch.no_grad():
        expected = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids)).logits), expected, atol=1e-4, rtol=0)

    src = _tensors(tmp / "src")
    jaxmodels.export_hf(model, tmp / "exported")
    exported = _tensors(tmp / "exported")
    assert sorted(exported) == sorted(src) and all(np.array_equal(exported[k], src[k]) for k in src)
    assert json.loads((tmp / "exported" / "config.json").read_text())["model_type"] == "renamed_llama"

    convert_cli.main(["from-hf", str(tmp / "src"), str(tmp / "ours"), "--verify"])
    convert_cli.main(["to-hf", str(tmp / "ours"), str(tmp / "back"), "--verify"])
    out = capsys.readouterr().out
    assert out.count("verify: max |logits difference| =") == 2 and "wrote" in out
    back = _tensors(tmp / "back")
    assert sorted(back) == sorted(src) and all(np.array_equal(back[k], src[k]) for k in src)
    again = jaxmodels.LlamaForCausalLM.from_pretrained(tmp / "ours")
    assert type(again.config) is RenamedLlamaConfig and again.config == model.config
    model.save_pretrained(tmp / "saved")
    saved, ours = _tensors(tmp / "saved"), _tensors(tmp / "ours")
    assert sorted(saved) == sorted(ours) and all(np.array_equal(saved[k], ours[k]) for k in ours)


# -- the HF config policy -----------------------------------------------------------------------------------

# Metadata a real hub checkpoint carries (SmolLM2-135M-Instruct saved by transformers, plus keys seen on the hub).
HUB_METADATA = {"_model_name_or_path": "Smollm2 135M 8k Lc100K Mix1 Ep2", "_name_or_path": "HuggingFaceTB/x",
                "unk_token_id": 0, "is_llama_config": True, "rope_interleaved": False, "pretraining_tp": 1,
                "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16"}}, "torch_dtype": "bfloat16",
                "transformers_version": "4.42.3", "use_cache": True, "initializer_range": 0.02,
                "architectures": ["LlamaForCausalLM"]}


def test_hub_metadata_is_accepted_and_reported_as_ignored(tmp_path):
    from jaxmodels_interop.convert_cli import inspect
    from tests.hf_models import tiny_hf_model

    tiny_hf_model("llama", tmp_path, num_key_value_heads=2)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **HUB_METADATA}))
    resolved = resolve(tmp_path)
    assert resolved.config.num_key_value_heads == 2
    for key in ("_model_name_or_path", "unk_token_id", "is_llama_config", "rope_interleaved", "transformers.js_config"):
        assert resolved.ignored[key] == HUB_METADATA[key]
    assert "hidden_size" not in resolved.ignored and "vocab_size" not in resolved.ignored
    jaxmodels.from_pretrained(tmp_path)
    assert inspect(tmp_path)["ignored_hf_attributes"]["unk_token_id"] == 0


@pytest.mark.parametrize("module, family", [("llama", "llama"), ("qwen2", "qwen2")])
def test_every_attribute_the_transformers_model_reads_is_handled(module, family):
    """Parses transformers' modeling file for config attributes: each must be mapped, checked or known to be
    harmless, so an attribute that changes the computation can never be ignored silently."""
    import re

    import transformers

    source = (Path(transformers.__file__).parent / "models" / module / f"modeling_{module}.py").read_text()
    read = set(re.findall(r"\bconfig\.([a-z_][a-z0-9_]*)", source))
    read |= set(re.findall(r"getattr\(config, \"([a-z_]+)\"", source))
    config_class = families.get(family).config_class
    handled = {*config_class._hf_fields, "hidden_act", "attention_dropout", "rope_parameters", "layer_types",
               "sliding_window", "use_sliding_window"}
    harmless = {"_attn_implementation"}  # which attention kernel transformers runs, not what it computes
    assert read - handled - harmless == set()


def test_the_policy_refuses_read_attributes_with_values_not_implemented():
    reader = HFConfigReader("toy", {"width": "d"}, {"act": ("silu",), "flag": (False,)})
    values, ignored = reader.read({"width": 8, "act": "silu", "flag": False, "note": "x"}, source="c.json")
    assert values == {"d": 8} and ignored == {"note": "x"}
    with pytest.raises(UnsupportedConfig, match=r"c.json: unsupported toy config attributes: act='gelu' "
                                                 r"\(implemented: 'silu'\); flag=0 \(implemented: False\)"):
        reader.read({"act": "gelu", "flag": 0}, source="c.json")
    with pytest.raises(UnsupportedConfig, match=r"rope type 'yarn'.*hidden_act='relu'"):
        jaxmodels.LlamaConfig.from_hf_config({**jaxmodels.LlamaConfig.tiny().to_hf_config(), "hidden_act": "relu",
                                              "rope_parameters": {"rope_type": "yarn", "factor": 2.0}})
