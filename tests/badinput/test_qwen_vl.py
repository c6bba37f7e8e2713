"""`python -m interop.qwen_vl` on bad input: damaged or pickled adapters, an unwritable --out, --out onto the
model; one error line each."""

from __future__ import annotations

import pickle
import shutil

import pytest

try:
    import torchvision  # noqa: F401
except Exception as err:  # noqa: BLE001 - a torchvision built for another torch fails with more than ImportError
    pytest.skip(f"torchvision does not import ({type(err).__name__}); Qwen2.5-VL's processor needs it",
                allow_module_level=True)
pytest.importorskip("peft")

from jaxmodels_interop.qwen_vl.cli import main  # noqa: E402
from tests.badinput.checks import refused  # noqa: E402

RUNNER = ["--attn", "sdpa", "--lora-rank", "2", "--lora-alpha", "4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(tiny model directory, an adapter learned on it in one step)."""
    import torch

    from jaxmodels_interop.qwen_vl.tiny import build_tiny

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("qwen_vl_bad")
    tiny = build_tiny(root / "tiny")
    assert main(["learn", str(tiny), "hi", "there", "--out", str(root / "adapter"), "--steps", "1", *RUNNER]) == 0
    return tiny, root / "adapter"


def generate_with(tiny, adapter):
    return lambda: main(["generate", str(tiny), "hi", "--adapter-dir", str(adapter), "--max-tokens", "1", *RUNNER])


def test_truncated_adapter_is_refused(trained, tmp_path, capsys):
    tiny, adapter = trained
    broken = shutil.copytree(adapter, tmp_path / "adapter")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    refused(capsys, generate_with(tiny, broken), str(broken), "cannot be read", "SafetensorError",
            untouched=[tmp_path])


def test_pickle_adapter_refused_by_weights_only_is_one_line(trained, tmp_path, capsys):
    tiny, adapter = trained
    pickled = shutil.copytree(adapter, tmp_path / "adapter")
    (pickled / "adapter_model.safetensors").unlink()
    (pickled / "adapter_model.bin").write_bytes(pickle.dumps(print))  # code, not tensors
    refused(capsys, generate_with(tiny, pickled), str(pickled), "UnpicklingError", untouched=[tmp_path])


def test_learn_into_a_read_only_out_is_one_error_line(trained, read_only, capsys):
    tiny, _ = trained
    locked = read_only()
    argv = ["learn", str(tiny), "hi", "there", "--out", str(locked / "adapter"), "--steps", "1", *RUNNER]
    refused(capsys, lambda: main(argv), str(locked / "adapter"), untouched=[locked, tiny])


def test_learn_onto_the_model_is_refused(trained, capsys):
    tiny, _ = trained
    argv = ["learn", str(tiny), "hi", "there", "--out", str(tiny), "--force", *RUNNER]
    refused(capsys, lambda: main(argv), f"--out {tiny} is the source", untouched=[tiny])
