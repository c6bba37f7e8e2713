"""OnlineLLM: generation and online LoRA learning on transformers' Qwen2.5-VL, synchronous and asyncio.

Every use of the model goes through one lock, so concurrent `generate_async` / `learn_async` calls (and threads)
are serialised; the async methods run the work in a worker thread, so the event loop stays responsive.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import torch

from jaxmodels_interop.qwen_vl import images as imgs
from jaxmodels_interop.qwen_vl.adapters import DEFAULT_TARGETS, AdapterBank
from jaxmodels_interop.qwen_vl.coalesce import Coalescer
from jaxmodels_interop.qwen_vl.experts import ExpertBank
from jaxmodels_interop.qwen_vl.loading import HFQwen2_5_VL, load_hf_qwen2_5_vl_model
from jaxmodels_interop.qwen_vl.prompts import encode_example, encode_prompts


class OnlineLLM:
    """A Qwen2.5-VL model served for generation, with named LoRA adapters learned online and named SVF experts.

    >>> llm = OnlineLLM("Qwen/Qwen2.5-VL-3B-Instruct", temperature=0.0, max_tokens=32)
    >>> await llm.learn_async("2+2?", "4", lora_adapter="math")
    >>> await llm.generate_async("2+3?", lora_adapter="math")
    >>> llm.load_expert("experts/math.safetensors", "math")       # written by jaxmodels.svf
    >>> await llm.generate_async("2+3?", svf_expert="math")      # composes with a LoRA adapter too
    """

    def __init__(self, model: str | os.PathLike | HFQwen2_5_VL, temperature: float = 0.2, max_tokens: int = 16,
                 lora_rank: int = 8, lora_alpha: float = 32, attn_implementation: str | None = "flash_attention_2",
                 *, dtype: str | torch.dtype | None = "auto", device_map: str | None = None,
                 min_pixels: int | None = None, max_pixels: int | None = None, top_p: float | None = None,
                 lora_targets: tuple[str, ...] = DEFAULT_TARGETS, chat_template: bool = True,
                 coalesce: bool = True):
        if temperature < 0:
            raise ValueError(f"temperature={temperature}; expected >= 0 (0 means greedy)")
        if max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens}; expected >= 1")
        self.hf_model = model if isinstance(model, HFQwen2_5_VL) else load_hf_qwen2_5_vl_model(
            model, attn_implementation, dtype=dtype, device_map=device_map, min_pixels=min_pixels,
            max_pixels=max_pixels)
        self.temperature, self.max_tokens, self.top_p = float(temperature), int(max_tokens), top_p
        self.lora_rank, self.lora_alpha = int(lora_rank), float(lora_alpha)
        self.chat_template = chat_template
        self.adapters = AdapterBank(self.hf_model.model, rank=lora_rank, alpha=lora_alpha, targets=lora_targets)
        self.experts = ExpertBank(self.hf_model.model)
        self._lock = threading.RLock()
        self.coalesce = coalesce
        self._coalescer = Coalescer(self._run_greedy_batch, self._lock)

    # -- reporting -------------------------------------------------------------------------------
    @property
    def attn_implementation(self) -> str:
        return self.hf_model.attn_implementation

    @property
    def lora_adapters(self) -> list[str]:
        return self.adapters.names

    @property
    def device(self) -> torch.device:
        return self.hf_model.device

    # -- inputs ----------------------------------------------------------------------------------
    def _prompts(self, prompt: str | list[str]) -> tuple[list[str], bool]:
        single = isinstance(prompt, str)
        prompts = [prompt] if single else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompt must be a str or a non-empty list of str, got {prompt!r:.80}")
        return prompts, single

    def encode(self, prompt: str | list[str], images: Any = None) -> dict[str, torch.Tensor]:
        """The exact model inputs `generate` uses (left-padded, chat template applied)."""
        prompts, _ = self._prompts(prompt)
        groups = imgs.normalize(images, len(prompts), self.hf_model.max_pixels)
        return encode_prompts(self.hf_model.processor, prompts, groups, chat=self.chat_template, device=self.device)

    def _sampling(self, max_tokens, temperature, top_p) -> dict[str, Any]:
        temperature = self.temperature if temperature is None else float(temperature)
        top_p = self.top_p if top_p is None else top_p
        tok = self.hf_model.tokenizer
        kw = dict(max_new_tokens=self.max_tokens if max_tokens is None else int(max_tokens),
                  pad_token_id=tok.pad_token_id, eos_token_id=self._eos_ids())
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=top_p if top_p is not None else 1.0, top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw

    def _eos_ids(self) -> list[int]:
        eos = self.hf_model.model.generation_config.eos_token_id
        ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        end = self.hf_model.tokenizer.convert_tokens_to_ids("<|im_end|>")
        return sorted(set(ids + ([end] if isinstance(end, int) and end >= 0 else [])))

    def _check(self, lora_adapter: str | None, svf_expert: str | None) -> None:
        """Unknown names fail in the caller's own request, before it is queued."""
        if lora_adapter is not None:
            self.adapters.check(lora_adapter)
        if svf_expert is not None:
            self.experts.check(svf_expert)

    @contextlib.contextmanager
    def _active(self, lora_adapter: str | None, svf_expert: str | None):
        """The model with `svf_expert`'s matrices patched in (base weights put back after) under `lora_adapter`."""
        with self.experts.active(svf_expert), self.adapters.active(lora_adapter):
            yield

    # -- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(self, prompt: str | list[str], lora_adapter: str | None = None, images: Any = None,
                     max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                     seed: int | None = None, svf_expert: str | None = None) -> list[list[int]]:
        """New token ids per prompt, up to and including the first end-of-turn token."""
        inputs = self.encode(prompt, images)
        kw = self._sampling(max_tokens, temperature, top_p)
        with self._lock, self._active(lora_adapter, svf_expert):
            if seed is not None:
                torch.manual_seed(seed)
            out = self.hf_model.model.generate(**inputs, **kw)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        eos = set(kw["eos_token_id"])
        return [row[:next((i + 1 for i, t in enumerate(row) if t in eos), len(row))] for row in new]

    def generate(self, prompt: str | list[str], lora_adapter: str | None = None, images: Any = None,
                 max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                 seed: int | None = None, svf_expert: str | None = None) -> str | list[str]:
        """Text of the new tokens only; a str for a str prompt, a list for a list of prompts (batched, left-padded).

        images: for one prompt, an image or a list of images; for a list of prompts, one list per prompt.
        lora_adapter: None runs the base model with every adapter disabled.
        svf_expert: the name of a loaded SVF expert (`load_expert`) to patch the language model with; None: base."""
        _, single = self._prompts(prompt)
        ids = self.generate_ids(prompt, lora_adapter, images, max_tokens, temperature, top_p, seed, svf_expert)
        texts = self.hf_model.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return texts[0] if single else texts

    async def generate_async(self, prompt: str | list[str], lora_adapter: str | None = None, images: Any = None,
                             max_tokens: int | None = None, temperature: float | None = None,
                             top_p: float | None = None, seed: int | None = None,
                             svf_expert: str | None = None) -> str | list[str]:
        """`generate` off the event loop. Greedy requests that arrive while the model is busy are batched
        together (same adapter, expert and max_tokens) when `coalesce` is on; each caller gets its own answer."""
        greedy = (self.temperature if temperature is None else temperature) == 0 and seed is None
        if not (self.coalesce and greedy):
            return await asyncio.to_thread(self.generate, prompt, lora_adapter, images, max_tokens, temperature,
                                           top_p, seed, svf_expert)
        prompts, single = self._prompts(prompt)
        groups = imgs.normalize(images, len(prompts), self.hf_model.max_pixels)  # bad input fails its own caller
        self._check(lora_adapter, svf_expert)
        key = (lora_adapter, svf_expert, self.max_tokens if max_tokens is None else int(max_tokens))
        texts = await self._coalescer.submit(key, prompts, groups)
        return texts[0] if single else texts

    def _run_greedy_batch(self, key: tuple[str | None, str | None, int], prompts: list[str], images) -> list[str]:
        lora_adapter, svf_expert, max_tokens = key
        ids = self.generate_ids(prompts, lora_adapter, images, max_tokens=max_tokens, temperature=0.0,
                                svf_expert=svf_expert)
        return self.hf_model.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def stream(self, prompt: str, lora_adapter: str | None = None, images: Any = None,
               max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
               seed: int | None = None, svf_expert: str | None = None) -> Iterator[str]:
        """Yields decoded text pieces as they are generated (one prompt), via transformers' TextIteratorStreamer."""
        from transformers import TextIteratorStreamer

        if not isinstance(prompt, str):
            raise TypeError(f"stream takes one prompt (a str), got {type(prompt).__name__}")
        inputs = self.encode(prompt, images)
        kw = self._sampling(max_tokens, temperature, top_p)
        streamer = TextIteratorStreamer(self.hf_model.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def work():
            try:
                with torch.no_grad(), self._lock, self._active(lora_adapter, svf_expert):
                    if seed is not None:
                        torch.manual_seed(seed)
                    self.hf_model.model.generate(**inputs, **kw, streamer=streamer)
            except BaseException as err:  # noqa: BLE001 - re-raised in the consumer below
                errors.append(err)
                streamer.end()

        self._check(lora_adapter, svf_expert)
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        for piece in streamer:
            if piece:
                yield piece
        thread.join()
        if errors:
            raise errors[0]

    async def stream_async(self, prompt: str, lora_adapter: str | None = None, images: Any = None,
                           **kwargs) -> AsyncIterator[str]:
        pieces = self.stream(prompt, lora_adapter, images, **kwargs)
        done = object()
        while (piece := await asyncio.to_thread(next, pieces, done)) is not done:
            yield piece

    @torch.no_grad()
    def logits(self, prompt: str | list[str], lora_adapter: str | None = None, images: Any = None,
               svf_expert: str | None = None) -> torch.Tensor:
        """Next-token logits over the prompt, float32 [B, T, V] (left padding included, as `generate` sees it)."""
        inputs = self.encode(prompt, images)
        with self._lock, self._active(lora_adapter, svf_expert):
            return self.hf_model.model(**inputs).logits.float()

    # -- learning --------------------------------------------------------------------------------
    def learn(self, prompt: str, response: str, lora_adapter: str = "default", steps: int = 3, lr: float = 1e-4,
              images: Any = None) -> list[float]:
        """Trains only `lora_adapter` (created on first use) for `steps` AdamW steps on one example, the loss on
        the response tokens only. Returns the loss before each step. On any failure the adapter's weights and
        optimizer state are put back as they were (a new adapter is removed)."""
        if self.lora_rank <= 0:
            raise ValueError(f"lora_rank={self.lora_rank}: LoRA is disabled, so there is nothing to learn; construct "
                             "the runner with lora_rank > 0 (the base weights are never trained)")
        if int(steps) < 1 or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"steps={steps}, lr={lr}; expected steps >= 1 and a finite lr > 0")
        groups = imgs.normalize(images, 1, self.hf_model.max_pixels)
        batch = encode_example(self.hf_model.processor, prompt, response, groups[0] if groups else None,
                               chat=self.chat_template, device=self.device)
        with self._lock:
            created = lora_adapter not in self.adapters.names
            if created:
                self.adapters.create(lora_adapter)
            snap = None if created else self.adapters.snapshot(lora_adapter)
            try:
                return self._train(lora_adapter, batch, int(steps), float(lr))
            except BaseException:
                if created:
                    self.adapters.delete(lora_adapter)
                else:
                    self.adapters.restore(lora_adapter, snap)
                raise

    def _train(self, name: str, batch: dict[str, torch.Tensor], steps: int, lr: float) -> list[float]:
        model = self.hf_model.model
        self.adapters.peft.set_adapter(name)
        opt = self.adapters.optimizer(name, lr)
        losses = []
        try:
            for step in range(steps):
                opt.zero_grad(set_to_none=True)
                loss = model(**batch).loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"adapter {name!r}, step {step}: loss is {loss.item()}; the adapter "
                                             "was restored to its state before this learn call (try a lower lr)")
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        finally:
            opt.zero_grad(set_to_none=True)
            for p in model.parameters():
                p.requires_grad_(False)
        return losses

    async def learn_async(self, prompt: str, response: str, lora_adapter: str = "default", steps: int = 3,
                          lr: float = 1e-4, images: Any = None) -> list[float]:
        return await asyncio.to_thread(self.learn, prompt, response, lora_adapter, steps, lr, images)

    # -- adapters on disk ------------------------------------------------------------------------
    def save_adapter(self, lora_adapter: str, path: str | os.PathLike, *, overwrite: bool = False):
        with self._lock:
            return self.adapters.save(lora_adapter, path, overwrite=overwrite)

    def load_adapter(self, path: str | os.PathLike, lora_adapter: str) -> None:
        with self._lock:
            self.adapters.load(path, lora_adapter)

    def delete_adapter(self, lora_adapter: str) -> None:
        with self._lock:
            self.adapters.delete(lora_adapter)

    # -- SVF experts -----------------------------------------------------------------------------
    @property
    def svf_experts(self) -> list[str]:
        return self.experts.names

    def load_expert(self, path: str | os.PathLike, svf_expert: str) -> dict[str, int]:
        """Loads an SVF expert written by `jaxmodels.svf` (safetensors keyed by Hugging Face names) under a name;
        its patched matrices are computed now. Refuses an expert made for another model, listing the differences."""
        with self._lock:
            return self.experts.load(path, svf_expert)

    def delete_expert(self, svf_expert: str) -> None:
        with self._lock:
            self.experts.delete(svf_expert)
