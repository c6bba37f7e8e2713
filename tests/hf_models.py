"""Tiny random Hugging Face models for the tests: built from a config, in float32 and eval mode, optionally saved.

Nothing comes from a hub. `tiny_hf_model("qwen2", path, num_key_value_heads=2)` is a transformers
Qwen2ForCausalLM with the SMALL sizes (prime, pairwise distinct) and those overrides, saved to `path`.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CLASSES = {"llama": ("LlamaForCausalLM", "LlamaConfig"), "qwen2": ("Qwen2ForCausalLM", "Qwen2Config"),
           "qwen3": ("Qwen3ForCausalLM", "Qwen3Config"), "mistral": ("MistralForCausalLM", "MistralConfig"),
           "gemma3_text": ("Gemma3ForCausalLM", "Gemma3TextConfig")}
SMALL = dict(vocab_size=53, hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=128)


def tiny_hf_model(kind: str, path=None, *, dtype=None, seed: int = 0, **config):
    """A transformers causal LM of family `kind` (a key of CLASSES): SMALL updated by `config`,
    weights drawn with torch seed `seed`, cast to `dtype` (default float32), saved to `path` when given."""
    model_name, config_name = CLASSES[kind]
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(getattr(transformers, config_name)(**{**SMALL, **config}))
    model = model.to(dtype or torch.float32).eval()
    if path is not None:
        model.save_pretrained(path)
    return model


def left_padded_greedy(hf, ours, *, vocab: int, length: int, pad: int, new_tokens: int, seed: int):
    """Greedy continuations of a random [2, length] prompt whose first row has `pad` left-padding tokens:
    (ours, transformers'), each [2, length + new_tokens] (transformers made to produce all new_tokens)."""
    import jaxmodels

    prompt = np.random.RandomState(seed).randint(1, vocab, (2, length))
    mask = np.ones_like(prompt)
    prompt[0, :pad], mask[0, :pad] = 0, 0
    with torch.no_grad():
        expected = hf.generate(torch.tensor(prompt), attention_mask=torch.tensor(mask), max_new_tokens=new_tokens,
                               min_new_tokens=new_tokens, do_sample=False, pad_token_id=0).numpy()
    return np.asarray(jaxmodels.generate(ours, prompt, new_tokens, attention_mask=mask)), expected
