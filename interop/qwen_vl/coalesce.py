"""Coalescing concurrent greedy requests into one batched `generate` call.

While the model is busy, new greedy `generate_async` requests wait in a pending list; the next worker to get the
model takes every pending request with the same settings (adapter, max_tokens) and runs them as one left-padded
batch. Greedy decoding of a batch gives each prompt the tokens it gets alone (tested), so callers see the same
answers, sooner. Sampled requests are never coalesced: a batch would change what each one draws.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any


@dataclass
class Request:
    key: Hashable  # requests with equal keys may share a batch
    prompts: list[str]
    images: list[list] | None  # one list per prompt, already checked
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Coalescer:
    """run_batch(key, prompts, images) -> one result per prompt, called with the model's lock held."""

    def __init__(self, run_batch: Callable[[Hashable, list[str], list[list] | None], list[Any]],
                 lock: threading.RLock):
        self.run_batch, self.lock = run_batch, lock
        self.pending: list[Request] = []
        self.pending_lock = threading.Lock()
        self.batches = 0  # model calls made, for tests and monitoring

    async def submit(self, key: Hashable, prompts: list[str], images: list[list] | None) -> list[Any]:
        loop = asyncio.get_running_loop()
        request = Request(key, prompts, images, loop.create_future(), loop)
        with self.pending_lock:
            self.pending.append(request)
        await asyncio.to_thread(self._drain)
        return await request.future

    def _take(self) -> list[Request]:
        with self.pending_lock:
            if not self.pending:
                return []
            key = self.pending[0].key
            group = [r for r in self.pending if r.key == key]
            self.pending = [r for r in self.pending if r.key != key]
        return group

    def _drain(self) -> None:
        with self.lock:
            while group := self._take():
                prompts = [p for r in group for p in r.prompts]
                images = None
                if any(r.images for r in group):
                    images = [g for r in group for g in (r.images or [[] for _ in r.prompts])]
                self.batches += 1
                try:
                    results = self.run_batch(group[0].key, prompts, images)
                except BaseException as err:  # noqa: BLE001 - handed to every waiting caller
                    for r in group:
                        r.loop.call_soon_threadsafe(_settle, r.future, None, err)
                    continue
                start = 0
                for r in group:
                    part = results[start:start + len(r.prompts)]
                    start += len(r.prompts)
                    r.loop.call_soon_threadsafe(_settle, r.future, part, None)


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
