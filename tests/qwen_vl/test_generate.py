"""Generation: only new tokens, text and images through the chat template, batching, async, streaming."""

import asyncio

import torch

from jaxmodels_interop.qwen_vl import available_attn_implementations, resolve_attn_implementation


def test_text_generation_returns_only_the_new_tokens(llm):
    inputs = llm.encode("What is in the picture?")
    with torch.no_grad():
        full = llm.hf_model.model.generate(**inputs, max_new_tokens=6, do_sample=False,
                                           pad_token_id=llm.hf_model.tokenizer.pad_token_id)
    new = full[0, inputs["input_ids"].shape[1]:].tolist()
    ids = llm.generate_ids("What is in the picture?")[0]
    assert ids == new[:len(ids)] and 1 <= len(ids) <= 6
    text = llm.generate("What is in the picture?")
    assert isinstance(text, str)
    assert text == llm.hf_model.tokenizer.decode(ids, skip_special_tokens=True)


def test_chat_template_places_the_image_tokens(llm, image):
    inputs = llm.encode("Describe it.", image)
    image_id = llm.hf_model.model.config.image_token_id
    # a 56x56 image is 4x4 patches of 14, merged 2x2: 4 image tokens
    assert int((inputs["input_ids"] == image_id).sum()) == 4
    assert inputs["pixel_values"].shape[0] == 16 and inputs["image_grid_thw"].tolist() == [[1, 4, 4]]
    text = llm.hf_model.tokenizer.decode(inputs["input_ids"][0])
    assert text.endswith("<|vision_end|>Describe it.<|im_end|>\n<|im_start|>assistant\n")


def test_image_changes_the_answer_and_matches_transformers(llm, image, make_image):
    with_image = llm.generate_ids("Describe it.", images=image)[0]
    other = llm.generate_ids("Describe it.", images=make_image(5))[0]
    without = llm.generate_ids("Describe it.")[0]
    assert with_image != without or with_image != other
    inputs = llm.encode("Describe it.", image)
    with torch.no_grad():
        full = llm.hf_model.model.generate(**inputs, max_new_tokens=6, do_sample=False,
                                           pad_token_id=llm.hf_model.tokenizer.pad_token_id)
    assert full[0, inputs["input_ids"].shape[1]:].tolist()[:len(with_image)] == with_image


def test_batched_equals_per_sample(llm, image, make_image):
    prompts = ["Hi", "What is in the picture? Tell me in detail.", "Describe it.", "Why?"]
    images = [[], [image], [make_image(3), make_image(4, size=84)], []]
    batched = llm.generate_ids(prompts, images=images)
    single = [llm.generate_ids(p, images=i or None)[0] for p, i in zip(prompts, images)]
    assert batched == single
    logits = llm.logits(prompts[:2], images=images[:2])  # left-padded: the last position is aligned
    for row, (p, i) in enumerate(zip(prompts[:2], images[:2])):
        torch.testing.assert_close(logits[row, -1], llm.logits(p, images=i or None)[0, -1], atol=1e-4, rtol=0)


def test_concurrent_async_calls_match_sequential_ones(llm, image):
    prompts = ["Hi", "Why?", "What is in the picture?", "Describe it."]
    expected = [llm.generate(p, images=image if k % 2 else None) for k, p in enumerate(prompts)]

    async def run():
        return await asyncio.gather(*(llm.generate_async(p, images=image if k % 2 else None)
                                      for k, p in enumerate(prompts)))

    assert asyncio.run(run()) == expected


def test_concurrent_greedy_calls_are_served_in_one_batch(llm, image):
    requests = [("Hi", None), ("What is in the picture?", image), ("Describe it.", None), ("Why?", [image, image])]
    expected = [llm.generate(p, images=i) for p, i in requests]
    expected_other = llm.generate("Hi", max_tokens=2)

    async def run():
        llm._lock.acquire()  # keep the model busy until every request is waiting
        try:
            tasks = [asyncio.ensure_future(llm.generate_async(p, images=i)) for p, i in requests]
            other = asyncio.ensure_future(llm.generate_async("Hi", max_tokens=2))  # other settings: own batch
            sampled = asyncio.ensure_future(llm.generate_async("Hi", temperature=1.0, seed=0))  # never coalesced
            await asyncio.sleep(0.2)
        finally:
            llm._lock.release()
        return await asyncio.gather(*tasks), await other, await sampled

    before = llm._coalescer.batches
    got, other, sampled = asyncio.run(run())
    assert got == expected and other == expected_other
    assert sampled == llm.generate("Hi", temperature=1.0, seed=0)
    assert llm._coalescer.batches - before == 2


def test_a_bad_request_fails_only_its_caller(llm):
    async def run():
        return await asyncio.gather(llm.generate_async("Hi"), llm.generate_async("Hi", images=b"png"),
                                    llm.generate_async("Hi", lora_adapter="missing"), return_exceptions=True)

    good, bad_image, bad_adapter = asyncio.run(run())
    assert good == llm.generate("Hi")
    assert isinstance(bad_image, TypeError) and "unsupported image type" in str(bad_image)
    assert "unknown LoRA adapter 'missing'" in str(bad_adapter)


def test_streaming_yields_the_same_text(llm, image):
    pieces = list(llm.stream("What is in the picture?", images=image))
    assert "".join(pieces) == llm.generate("What is in the picture?", images=image)

    async def run():
        return [p async for p in llm.stream_async("Why?")]

    assert "".join(asyncio.run(run())) == llm.generate("Why?")


def test_sampling_is_seeded(llm):
    a = llm.generate("Hi", temperature=1.0, seed=3, max_tokens=8)
    assert a == llm.generate("Hi", temperature=1.0, seed=3, max_tokens=8)


def test_attention_fallback_is_reported(llm):
    cpu = torch.device("cpu")
    chosen, note = resolve_attn_implementation("flash_attention_2", cpu)
    assert chosen == "sdpa" and "flash_attention_2 needs a CUDA device" in note
    assert resolve_attn_implementation("eager", cpu) == ("eager", "eager as requested")
    assert available_attn_implementations("cpu") == ["sdpa", "eager"]
    assert llm.attn_implementation == "sdpa" and llm.hf_model.model.config._attn_implementation == "sdpa"
