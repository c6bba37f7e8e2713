"""Checks the runner against independent paths on the same weights, never against itself.

1. transformers called directly (its own model instance and processor, its own chat-template call,
   its own `generate`): same prompt ids, logits within `atol`, identical greedy tokens; text-only and with an image.
2. Text-only, our Flax Qwen2 decoder (`jaxmodels.from_pretrained`) on a Qwen2 checkpoint written from the language
   model's weights: logits within `atol` on the prompt and on a ~300-token prompt, identical greedy tokens via
   `jaxmodels.generate`. Qwen2.5-VL's text uses mrope; for text-only input its three position streams are equal,
   so it must reduce to ordinary RoPE, which is what this comparison confirms.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jaxmodels_interop.qwen_vl.loading import HFQwen2_5_VL
from jaxmodels_interop.qwen_vl.runner import OnlineLLM

DEFAULT_PROMPT = "Describe the image in one sentence."


def qwen2_checkpoint(hf: HFQwen2_5_VL, path: str | os.PathLike) -> Path:
    """Writes the base language model as a Qwen2ForCausalLM checkpoint: config from text_config, keys
    model.language_model.* -> model.*, lm_head.weight kept unless the embeddings are tied; LoRA adapters left out."""
    from safetensors.torch import save_file

    text = hf.model.config.text_config
    rope = dict(getattr(text, "rope_parameters", None) or {})
    tied = bool(getattr(hf.model.config, "tie_word_embeddings", False))
    config = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": text.vocab_size,
        "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads, "max_position_embeddings": text.max_position_embeddings,
        "rms_norm_eps": text.rms_norm_eps, "rope_theta": float(rope.get("rope_theta", 10000.0)),
        "hidden_act": text.hidden_act, "tie_word_embeddings": tied, "use_sliding_window": False,
    }
    weights, unused = {}, []
    for name, tensor in hf.model.state_dict().items():
        if ".lora_" in name:  # the base model only: LoRA adapters stay out of the checkpoint
            continue
        name = name.replace(".base_layer.", ".")  # peft's wrapping of an adapted Linear
        if name.startswith("model.language_model."):
            weights["model." + name.removeprefix("model.language_model.")] = tensor
        elif name == "lm_head.weight":
            if not tied:
                weights[name] = tensor
        elif not name.startswith("model.visual."):
            unused.append(name)
    if unused:
        raise ValueError(f"{hf.source}: parameters neither in the vision tower nor in the language model: {unused[:4]}; "
                         "cannot write them to a Qwen2 checkpoint")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(torch.float32).contiguous().cpu() for k, v in weights.items()},
              str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path


def _trim(row: list[int], eos: set[int]) -> list[int]:
    return row[:next((i + 1 for i, t in enumerate(row) if t in eos), len(row))]


def _direct_inputs(processor, prompt: str, image) -> dict[str, torch.Tensor]:
    content = ([{"type": "image", "image": image}] if image is not None else []) + [{"type": "text", "text": prompt}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    return dict(processor(text=[text], images=[image] if image is not None else None, return_tensors="pt"))


def check_transformers(llm: OnlineLLM, image, prompt: str, max_tokens: int, atol: float) -> list[dict[str, Any]]:
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    source = llm.hf_model.source
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        source, dtype=llm.hf_model.dtype, attn_implementation=llm.attn_implementation).eval()
    processor = AutoProcessor.from_pretrained(source)
    eos = set(llm._eos_ids())
    rows = []
    for label, img in (("text", None), ("image", image)):
        if label == "image" and img is None:
            continue
        inputs = _direct_inputs(processor, prompt, img)
        mine = llm.encode(prompt, img)
        with torch.no_grad():
            theirs = model(**inputs).logits.float()
            out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False, eos_token_id=sorted(eos),
                                 pad_token_id=processor.tokenizer.pad_token_id)
        ours = llm.logits(prompt, images=img)
        greedy_theirs = _trim(out[0, inputs["input_ids"].shape[1]:].tolist(), eos)
        greedy_ours = llm.generate_ids(prompt, images=img, max_tokens=max_tokens, temperature=0.0)[0]
        same_ids = torch.equal(mine["input_ids"].cpu(), inputs["input_ids"])
        diff = float((ours.cpu() - theirs).abs().max()) if same_ids else float("inf")
        rows.append({"check": f"runner vs transformers ({label})", "prompt tokens": int(inputs["input_ids"].shape[1]),
                     "same prompt ids": same_ids, "max abs dlogits": diff, "greedy equal": greedy_ours == greedy_theirs,
                     "new tokens": len(greedy_ours),
                     "ok": same_ids and diff <= atol and greedy_ours == greedy_theirs})
    return rows


def check_flax(llm: OnlineLLM, prompt: str, max_tokens: int, atol: float, long_tokens: int = 300) -> list[dict]:
    import jax
    import jax.numpy as jnp

    import jaxmodels

    eos = llm._eos_ids()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, jax.default_matmul_precision("highest"):
        ours = jaxmodels.from_pretrained(qwen2_checkpoint(llm.hf_model, tmp))
        ids = llm.encode(prompt)["input_ids"]
        repeat = -(-long_tokens // ids.shape[1])
        long_ids = ids.repeat(1, repeat)[:, :max(long_tokens, ids.shape[1])]
        for label, x in (("prompt", ids), (f"{long_ids.shape[1]}-token prompt", long_ids)):
            with torch.no_grad(), llm.adapters.active(None):
                expected = llm.hf_model.model(input_ids=x.to(llm.device)).logits.float().cpu().numpy()
            got = np.asarray(ours(jnp.asarray(x.numpy())).logits)
            diff = float(np.abs(got - expected).max())
            rows.append({"check": f"runner vs Flax Qwen2 (logits, {label})", "prompt tokens": int(x.shape[1]),
                         "max abs dlogits": diff, "ok": diff <= atol})
        generated = np.asarray(jaxmodels.generate(ours, ids.numpy(), max_tokens, eos_token_id=eos))
    greedy_jax = _trim(generated[0, ids.shape[1]:].tolist(), set(eos))
    greedy_ours = llm.generate_ids(prompt, max_tokens=max_tokens, temperature=0.0)[0]
    rows.append({"check": "runner vs Flax Qwen2 (greedy)", "prompt tokens": int(ids.shape[1]),
                 "greedy equal": greedy_ours == greedy_jax, "new tokens": len(greedy_ours),
                 "ok": greedy_ours == greedy_jax})
    return rows


def validate(model: str | os.PathLike | OnlineLLM, *, prompt: str = DEFAULT_PROMPT, image=None,
             max_tokens: int = 8, atol: float = 1e-4, flax: bool = True,
             attn_implementation: str | None = "eager") -> list[dict[str, Any]]:
    """Runs every check; returns one row per check with an "ok" flag. `image`: PIL image, path, or "synthetic"
    (a fixed 56x56 gradient). Parity is meaningful in float32, so a path is loaded in float32."""
    from jaxmodels_interop.qwen_vl.images import to_pil

    llm = model if isinstance(model, OnlineLLM) else OnlineLLM(
        model, temperature=0.0, max_tokens=max_tokens, attn_implementation=attn_implementation, dtype="float32")
    if isinstance(image, str) and image == "synthetic":
        grid = np.linspace(0, 255, 56, dtype=np.float32)
        image = np.stack([np.add.outer(grid, grid) / 2, np.add.outer(grid, 255 - grid) / 2,
                          np.tile(grid, (56, 1))], -1).astype(np.uint8)
    image = to_pil(image, where="image") if image is not None else None
    rows = check_transformers(llm, image, prompt, max_tokens, atol)
    if flax:
        rows += check_flax(llm, prompt, max_tokens, atol)
    return rows
