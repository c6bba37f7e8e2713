"""`jaxmodels-chat`: chat with, or continue text from, any checkpoint `jaxmodels.from_pretrained` loads.

  jaxmodels-chat MODEL "What is the capital of France?"   one reply, streamed as it is generated
  echo "Tell me a joke" | jaxmodels-chat MODEL            the prompt from stdin (or pass "-")
  jaxmodels-chat MODEL -i --system "Be brief."            a conversation: one line per turn, /exit or Ctrl-D leaves

MODEL is one of our checkpoint directories, a Hugging Face directory or a GGUF file (or a directory holding
one). The prompt goes through the tokenizer's chat template (the whole conversation, re-templated each turn);
with --raw, or when the tokenizer has none, the text is continued as it is. Decoding is greedy unless
--temperature > 0. Generation stops at --max-new-tokens, at the end of the context or at an EOS token:
generation_config.json's eos_token_id (one id or a list), else the tokenizer's eos token.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jinja2

import jaxmodels
from jaxmodels import compilation_cache
from jaxmodels.generate import Sampling, eos_ids
from jaxmodels.io import read_json_object
from jaxmodels.pretrained import gguf_in, model_dir
from jaxmodels.streaming import Detokenizer, Streamer
from jaxmodels.tokenizer import TOKENIZER_FILE, ByteTokenizer
from jaxmodels_interop.tokenizer import HFTokenizer

DEFAULT_CONTEXT = 2048  # a step reads every slot: SmolLM2-135M decodes 19.5 tokens/s at 512, 14 at 2048, 10 at 4096
GENERATION_CONFIG = "generation_config.json"
EXIT_COMMANDS = ("/exit",)


class UsageError(ValueError):
    """Bad input the user can fix: reported as one `error:` line, exit status 2."""


def gguf_tokenizer(path: Path) -> tuple[HFTokenizer, dict]:
    """The tokenizer and generation config a GGUF file describes: the files `jaxmodels_interop.gguf_tokenizer.files`
    derives from its metadata, loaded from a temporary directory."""
    from jaxmodels.gguf import GGUFFile
    from jaxmodels_interop.gguf_tokenizer import files

    found = files(GGUFFile(path))
    if not found:
        raise UsageError(f"{path}: the GGUF file holds no tokenizer; pass --tokenizer DIR")
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in found.items():
            (Path(tmp) / name).write_text(text)
        tokenizer = HFTokenizer(tmp)  # read whole: the directory may go
        tokenizer.name = str(path)
        return tokenizer, read_generation_config(Path(tmp))


def read_generation_config(directory: Path) -> dict:
    path = directory / GENERATION_CONFIG
    if not path.is_file():
        return {}
    return read_json_object(path)


def load_tokenizer(model: Path, tokenizer: str | None) -> tuple[HFTokenizer | ByteTokenizer, dict]:
    """-> (tokenizer, the generation config beside the model: {} when there is none).

    `tokenizer`: a directory, "bytes" (the byte-level tokenizer) or None (the model's own: its directory's
    tokenizer.json, or the GGUF file's vocabulary).
    """
    found = gguf_in(model)
    if found is not None and tokenizer is None:
        return gguf_tokenizer(found)
    directory = model_dir(model)
    generation = read_generation_config(directory) if directory.is_dir() else {}
    if tokenizer == "bytes":
        return ByteTokenizer(), generation
    if tokenizer is not None:
        return HFTokenizer(tokenizer), generation
    if not directory.exists():
        raise FileNotFoundError(f"{model}: no such file or directory")
    if not (directory / TOKENIZER_FILE).is_file():
        raise UsageError(f"{directory}: no tokenizer ({TOKENIZER_FILE}) there; pass --tokenizer DIR, or "
                         f"--tokenizer bytes for a byte-level model")
    return HFTokenizer(directory), generation


def eos_of(generation: dict, tokenizer) -> tuple[int, ...] | None:
    """generation_config.json's eos_token_id (an id or a list of ids), else the tokenizer's eos."""
    found = generation.get("eos_token_id")
    return eos_ids(found if found is not None else tokenizer.eos_id)


class Chat:
    """A session: the model streamed through a fixed-length cache, the tokenizer and the conversation so far."""

    def __init__(self, streamer: Streamer, tokenizer, args, eos: tuple[int, ...] | None, raw: bool):
        self.streamer, self.tokenizer, self.args, self.eos, self.raw = streamer, tokenizer, args, eos, raw
        self.messages = [{"role": "system", "content": args.system}] if args.system else []
        self.transcript = ""  # raw mode: the text so far
        self.turns = 0

    def prompt_ids(self, text: str) -> tuple[str | list[dict], list[int]]:
        """-> (the context this turn extends: transcript text or messages, its token ids)."""
        if self.raw:
            context = self.transcript + ("\n" if self.transcript else "") + text
            if isinstance(self.tokenizer, HFTokenizer):  # its own special tokens (a BOS), as transformers adds
                return context, self.tokenizer.hf.encode(context)
            return context, [int(i) for i in self.tokenizer.encode(context)]
        messages = [*self.messages, {"role": "user", "content": text}]
        try:
            rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except jinja2.TemplateError as e:
            raise UsageError(f"the chat template of {self.tokenizer.name} refuses this conversation: {e}") from None
        return messages, [int(i) for i in self.tokenizer.encode(rendered)]

    def reply(self, text: str, out=None) -> str:
        """Streams the reply to `text` to `out` (default stdout) and records both in the conversation; Ctrl-C
        ends the reply early (what was printed is kept) and is raised again afterwards."""
        out = sys.stdout if out is None else out
        context, ids = self.prompt_ids(text)
        room = self.streamer.max_len - len(ids)
        if room < 1:
            raise UsageError(f"the prompt is {len(ids)} tokens, more than the context of {self.streamer.max_len} "
                             f"tokens leaves room for (raise --max-context)")
        args = self.args
        max_new = min(args.max_new_tokens, room)
        tokens = self.streamer.stream(ids, max_new, temperature=args.temperature, top_k=args.top_k,
                                      top_p=args.top_p, seed=args.seed + self.turns, eos_token_id=self.eos)
        detok = Detokenizer(self.tokenizer.decode)
        pieces, times, interrupted, token = [], [time.perf_counter()], None, None
        try:
            for token in tokens:
                times.append(time.perf_counter())
                piece = detok.push(token)
                if piece:
                    out.write(piece)
                    out.flush()
                    pieces.append(piece)
        except KeyboardInterrupt as e:
            interrupted = e
            tokens.close()
        pieces.append(detok.flush())
        out.write(pieces[-1] + "\n")
        out.flush()
        reply = "".join(pieces)
        self.turns += 1
        if self.raw:
            self.transcript = context + reply
        else:
            self.messages = [*context, {"role": "assistant", "content": reply}]
        n = len(times) - 1
        if n == max_new < args.max_new_tokens and (not self.eos or token not in self.eos):
            print(f"[stopped: the context of {self.streamer.max_len} tokens is full]", file=sys.stderr)
        if args.stats:
            print(stats_line(len(ids), self.streamer.padded_length(len(ids), max_new), times), file=sys.stderr)
        if interrupted is not None:
            raise interrupted
        return reply


def stats_line(prompt_len: int, padded: int, times: list[float]) -> str:
    """times: the start, then the moment each token arrived. The decode rate leaves out the prefill and the
    first step (both may include compilation)."""
    n = len(times) - 1
    line = f"[prompt {prompt_len} tokens (padded to {padded}), {n} new"
    if n >= 1:
        line += f", first token after {times[1] - times[0]:.2f} s"
    if n >= 3:
        line += f", decode {(n - 2) / (times[-1] - times[2]):.1f} tokens/s"
    return line + "]"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxmodels-chat", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="checkpoint directory (ours or Hugging Face) or GGUF file")
    p.add_argument("prompt", nargs="?", help='the prompt; "-" or absent with piped stdin: read stdin')
    p.add_argument("-i", "--interactive", action="store_true",
                   help="a conversation: every stdin line is a turn (after PROMPT, if given)")
    p.add_argument("--system", help="a system message in front of the conversation (needs a chat template)")
    p.add_argument("--raw", action="store_true", help="continue the text as it is, without the chat template")
    p.add_argument("--tokenizer", help='a tokenizer directory, or "bytes" (default: the model\'s own)')
    p.add_argument("--max-new-tokens", type=int, default=512, help="per reply (default 512)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-k", type=int, help="sample among the k most likely tokens (with --temperature)")
    p.add_argument("--top-p", type=float, help="sample within the top-p probability mass (with --temperature)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of the first reply; turn n uses seed + n")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="parameters (default float32)")
    p.add_argument("--max-context", type=int,
                   help=f"tokens of prompt and reply together (default: {DEFAULT_CONTEXT} or the model's limit)")
    p.add_argument("--stats", action="store_true", help="after each reply: token counts and decode speed on stderr")
    return p


def check_args(args) -> None:
    """Everything that needs no model, checked before the (slow) load."""
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.max_context is not None and args.max_context < 2:
        raise UsageError(f"--max-context must be >= 2, got {args.max_context}")
    Sampling.make(sys.maxsize, args.temperature, args.top_k, args.top_p)  # top_k's upper bound: after loading
    if args.interactive and args.prompt == "-":
        raise UsageError('-i reads the turns from stdin; the prompt cannot be "-" as well')


def first_prompt(args) -> str | None:
    """The prompt from the argument or stdin; None in interactive mode without one."""
    if args.prompt == "-" or (args.prompt is None and not args.interactive and not sys.stdin.isatty()):
        text = sys.stdin.read().rstrip("\n")
    elif args.prompt is None:
        if args.interactive:
            return None
        raise UsageError('no prompt: pass one as an argument, "-" or on stdin, or use -i')
    else:
        text = args.prompt
    if not text.strip():
        raise UsageError("the prompt is empty")
    return text


def turns(first: str | None):
    """The interactive turns: `first`, then stdin lines until EOF or /exit (blank lines skipped)."""
    if first is not None:
        yield first
    tty = sys.stdin.isatty()
    while True:
        try:
            line = input(">>> ") if tty else sys.stdin.readline()
        except EOFError:
            line = ""
        except KeyboardInterrupt:  # at the prompt: a fresh line, not the end
            print()
            continue
        if not line:  # EOF (a blank line read from a pipe is "\n")
            if tty:
                print()
            return
        line = line.rstrip("\n")
        if line.strip() in EXIT_COMMANDS:
            return
        if line.strip():
            yield line


def session(args) -> Chat:
    t0 = time.perf_counter()
    tokenizer, generation = load_tokenizer(args.model, args.tokenizer)
    t1 = time.perf_counter()
    raw = args.raw or getattr(tokenizer, "chat_template", None) is None
    if args.system and raw:
        why = "--raw was given" if args.raw else f"the tokenizer {tokenizer.name} has no chat template"
        raise UsageError(f"--system needs the chat template ({why})")
    if raw and not args.raw:
        print(f"note: the tokenizer {tokenizer.name} has no chat template; the prompt is continued as raw text",
              file=sys.stderr)
    model = jaxmodels.from_pretrained(args.model, dtype=args.dtype)
    if args.stats:  # where a start's time goes, beside the first token's (docs/compilation.md)
        print(f"[loaded: tokenizer {t1 - t0:.2f} s, model {time.perf_counter() - t1:.2f} s]", file=sys.stderr)
    limit = model.spec.max_seq_len
    if args.max_context is not None and args.max_context > limit:
        raise UsageError(f"--max-context {args.max_context} exceeds the model's limit of {limit} tokens")
    streamer = Streamer(model, args.max_context or min(DEFAULT_CONTEXT, limit))
    Sampling.make(model.spec.vocab_size, args.temperature, args.top_k, args.top_p)
    return Chat(streamer, tokenizer, args, eos_of(generation, tokenizer), raw)


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    compilation_cache.enable()
    try:
        check_args(args)
        first = first_prompt(args)
        chat = session(args)
        if not args.interactive:
            chat.reply(first)
            return
        for text in turns(first):
            try:
                chat.reply(text)
            except KeyboardInterrupt:
                continue
            except UsageError as e:  # a turn too long for the context: say so and go on
                print(f"error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        sys.exit(130)
    except (ValueError, FileNotFoundError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
