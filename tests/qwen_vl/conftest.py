"""Fixtures for the Qwen2.5-VL runner: a tiny random model with a real processor, built once per worker.

The whole directory is skipped when torchvision does not import (the processor's video part needs it), e.g.
with the CPU torch 2.13 wheel, for which PyPI has no importable torchvision. (The skip is reported for the
suite run, `pytest` / `make test`; naming this directory alone makes pytest report it as an error instead.)"""

import pytest

try:
    import torchvision  # noqa: F401
except Exception as err:  # noqa: BLE001 - a torchvision built for another torch fails with more than ImportError
    pytest.skip(f"torchvision does not import ({type(err).__name__}: {err}); Qwen2.5-VL's processor needs it "
                "(torch 2.14.1 + torchvision 0.29.1)", allow_module_level=True)
pytest.importorskip("peft")
pytest.importorskip("transformers")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # two cores shared by two xdist workers


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from jaxmodels_interop.qwen_vl.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("qwen_vl") / "tiny")


@pytest.fixture(scope="module")
def llm(tiny_dir):
    from jaxmodels_interop.qwen_vl import OnlineLLM

    return OnlineLLM(tiny_dir, temperature=0.0, max_tokens=6, lora_rank=4, lora_alpha=8, attn_implementation="sdpa")


def _image(seed: int, size: int = 56) -> np.ndarray:
    return (np.random.RandomState(seed).rand(size, size, 3) * 255).astype(np.uint8)


@pytest.fixture
def make_image():
    """make_image(seed, size=56) -> a uint8 [size, size, 3] random image."""
    return _image


@pytest.fixture
def image():
    return _image(0)
