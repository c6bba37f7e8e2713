"""jaxmodels.lora.load of a damaged adapter: a LoraError naming the file, not safetensors' own exception."""

from __future__ import annotations

import jax
import pytest
from flax import nnx

from jaxmodels import LlamaConfig, LlamaForCausalLM, lora


def test_truncated_adapter_weights_are_a_lora_error_naming_the_file(tmp_path):
    model = LlamaForCausalLM(LlamaConfig.tiny(), rngs=nnx.Rngs(0))
    config = lora.LoraConfig(2, 4.0, ("q_proj",))
    lora.save(tmp_path / "adapter", lora.init(model, config, key=jax.random.key(0)), config)
    weights = tmp_path / "adapter" / lora.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(lora.LoraError, match=f"{weights}: not a readable safetensors file"):
        lora.load(tmp_path / "adapter", model)
