"""A tiny random Qwen2.5-VL with a real processor, built locally (no hub access) for tests, benchmarks and demos.

`build_tiny(path)` writes a directory that `load_hf_qwen2_5_vl_model(path)` and `AutoProcessor.from_pretrained`
load like a hub checkpoint: config.json + safetensors, a byte-level BPE tokenizer trained here with the Qwen
special tokens and a Qwen-style chat template, a Qwen2-VL image processor and a video processor.
Sizes follow ../shared/NOTES.md: text width 64 (4 heads of 16, 2 KV heads, mrope sections 4+2+2 = 16/2),
a 2-block vision tower whose merger outputs the text width. A 56x56 image becomes 4 image tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxmodels.io import atomic_directory

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")

# The Qwen2.5-VL layout: a default system turn, content given as a string or a list of image/video/text parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "You are a helpful assistant.", "What is in the picture?", "Describe the image in one sentence.",
    "The dog in the picture is a golden retriever.", "Machine learning is a subset of artificial intelligence.",
    "Explain neural networks in simple words.", "The quick brown fox jumps over the lazy dog.",
    "user", "assistant", "system", "What are the benefits of exercise?", "Hello, world! 0123456789",
]

TEXT_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0,
                   rope_scaling={"type": "mrope", "mrope_section": [4, 2, 2]}, tie_word_embeddings=False)
VISION_CONFIG = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                     spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[1], window_size=56,
                     in_channels=3)
MIN_PIXELS = 56 * 56
MAX_PIXELS = 112 * 112


def build_tokenizer(merges: int = 300):
    """A byte-level BPE PreTrainedTokenizerFast with the Qwen special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + merges, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=list(SPECIAL_TOKENS[1:]))
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def build_processor(tokenizer, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
                               tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
                               chat_template=CHAT_TEMPLATE)


def build_model(tokenizer, *, seed: int = 0, num_hidden_layers: int | None = None, hidden_size: int | None = None):
    """A random Qwen2_5_VLForConditionalGeneration in float32 whose special-token ids match `tokenizer`."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(TEXT_CONFIG, vocab_size=len(tokenizer), eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"])
    vision = dict(VISION_CONFIG)
    if num_hidden_layers is not None:
        text["num_hidden_layers"] = num_hidden_layers
    if hidden_size is not None:
        heads = hidden_size // 16
        text.update(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_attention_heads=heads,
                    num_key_value_heads=max(1, heads // 2))
        vision["out_hidden_size"] = hidden_size
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"], eos_token_id=ids["<|im_end|>"],
                              pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    # Random init with std 0.02 gives near-uniform logits; a wider spread makes greedy choices decisive,
    # so that parity checks compare real decisions rather than ties.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if (param.ndim == 2 and "language_model" in name) or name == "lm_head.weight":
                param.normal_(0.0, 0.2)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model


def build_tiny(path: str | os.PathLike, *, seed: int = 0, overwrite: bool = False, **sizes) -> Path:
    """Writes the tiny model, tokenizer and processor to `path` (atomically; an existing `path` needs
    overwrite=True, checked before anything is built); returns the path."""
    path = Path(path)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        tokenizer = build_tokenizer()
        build_model(tokenizer, seed=seed, **sizes).save_pretrained(tmp)
        build_processor(tokenizer).save_pretrained(tmp)
    return path
