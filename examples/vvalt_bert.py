"""The seed's "Using BERT embeddings" example, offline: a tiny random BERT feeds its [CLS] vector to V.V.A.L.T.

    python examples/vvalt_bert.py [--hidden 48] [--frame 16] [--task-dim 8]

Nothing is downloaded: the BERT model is built from a `BertConfig` with random weights, and its tokenizer
from a vocabulary of the example's own words. The [CLS] embeddings [B, hidden] go to our Flax
`VVALTModel` and to its PyTorch twin with the same weights; the script prints both outputs' agreement and
the reasoning trace of the first sentence.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel, BertTokenizer

from jaxmodels_interop import vvalt_torch
from jaxmodels_interop.vvalt_convert import export_hf
from jaxmodels.vvalt import VVALTConfig, VVALTModel

SENTENCES = ["V.V.A.L.T is a deterministic logic transformer",
             "every frame is a different perspective on the input",
             "the task vector decides which perspective matters"]


def tiny_bert(hidden: int, vocab_dir: Path, seed: int = 0) -> tuple[BertTokenizer, BertModel]:
    """A random 2-layer BERT of width `hidden` and a word-level tokenizer for SENTENCES."""
    words = sorted({w for s in SENTENCES for w in s.lower().split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (vocab_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab_file=str(vocab_dir / "vocab.txt"))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    return tokenizer, BertModel(config).eval()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=48, help="BERT width = V.V.A.L.T input_dim")
    p.add_argument("--frame", type=int, default=16, help="V.V.A.L.T frame_dim")
    p.add_argument("--task-dim", type=int, default=8)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, bert = tiny_bert(args.hidden, Path(tmp))
        inputs = tokenizer(SENTENCES, return_tensors="pt", padding=True)
        with torch.no_grad():
            cls = bert(**inputs).last_hidden_state[:, 0, :]  # [B, hidden], the [CLS] embedding

        config = VVALTConfig(input_dim=args.hidden, frame_dim=args.frame, task_dim=args.task_dim)
        vvalt = VVALTModel(config)
        task = np.random.default_rng(0).standard_normal((len(SENTENCES), args.task_dim)).astype(np.float32)
        out = vvalt(cls.numpy(), task, return_trace=True)  # last_hidden_state [B, frame]

        export_hf(vvalt, Path(tmp) / "vvalt")  # the same weights as a transformers checkpoint
        twin = vvalt_torch.VVALTModel.from_pretrained(Path(tmp) / "vvalt")
        with torch.no_grad():
            twin_out = twin(cls, task_vector=torch.from_numpy(task)).last_hidden_state

    diff = float(np.max(np.abs(np.asarray(out.last_hidden_state) - twin_out.numpy())))
    print(f"[CLS] embeddings {tuple(cls.shape)} -> V.V.A.L.T output {tuple(out.last_hidden_state.shape)}; "
          f"Flax vs PyTorch twin max |diff| = {diff:.2e}")
    print(out.trace.explain(0))
    return {"cls": cls.numpy(), "output": np.asarray(out.last_hidden_state), "twin_output": twin_out.numpy(),
            "max_abs_diff": diff, "trace": out.trace}


if __name__ == "__main__":
    main()
