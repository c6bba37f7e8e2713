"""Prompts -> model inputs through the processor: left-padded generation batches and response-masked examples."""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100  # label value transformers' loss skips


def user_messages(prompt: str, images: list) -> list[dict[str, Any]]:
    """One user turn: the images first (as Qwen2.5-VL's examples place them), then the text."""
    return [{"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]}]


def prompt_texts(processor, prompts: list[str], images: list[list] | None, chat: bool) -> list[str]:
    if not chat:
        if images is not None:
            raise ValueError("images need the chat template (it places the vision tokens); "
                             "construct the runner with chat_template=True")
        return list(prompts)
    groups = images or [[] for _ in prompts]
    return [processor.apply_chat_template(user_messages(p, g), tokenize=False, add_generation_prompt=True)
            for p, g in zip(prompts, groups)]


def encode_prompts(processor, prompts: list[str], images: list[list] | None, *, chat: bool,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """-> input_ids / attention_mask [B, T] left-padded, plus pixel_values, image_grid_thw, mm_token_type_ids."""
    texts = prompt_texts(processor, prompts, images, chat)
    flat = [img for group in images for img in group] if images is not None else None
    processor.tokenizer.padding_side = "left"  # generation appends on the right, so prompts must end aligned
    inputs = processor(text=texts, images=flat, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}


def encode_example(processor, prompt: str, response: str, images: list | None, *, chat: bool,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """One training example: prompt (as generation sees it) + response + end-of-turn; labels only on the response.

    The response is tokenized on its own, after the generation prompt, exactly as `generate` would produce it,
    so the prompt/response boundary is known by construction rather than searched for in the token stream."""
    if not isinstance(response, str) or not response.strip():
        raise ValueError(f"response is {response!r}: learning needs a non-empty response to put the loss on")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt is a {type(prompt).__name__}, expected a str")
    tok = processor.tokenizer
    prompt_inputs = encode_prompts(processor, [prompt], [images] if images else None, chat=chat, device=device)
    end = tok.eos_token_id if not chat else tok.convert_tokens_to_ids("<|im_end|>")
    response_ids = tok(response, add_special_tokens=False)["input_ids"] + [end]
    response_ids = torch.tensor([response_ids], dtype=prompt_inputs["input_ids"].dtype, device=device)
    n_prompt = prompt_inputs["input_ids"].shape[1]
    batch = dict(prompt_inputs)
    batch["input_ids"] = torch.cat([prompt_inputs["input_ids"], response_ids], dim=1)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    if "mm_token_type_ids" in batch:
        batch["mm_token_type_ids"] = torch.cat(
            [batch["mm_token_type_ids"], torch.zeros_like(response_ids, dtype=batch["mm_token_type_ids"].dtype)], 1)
    labels = batch["input_ids"].clone()
    labels[:, :n_prompt] = IGNORE_INDEX
    batch["labels"] = labels
    return batch
