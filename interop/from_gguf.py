"""`convert_from_gguf`: a llama.cpp .gguf file -> our checkpoint or a transformers directory, with its tokenizer.

Above both `jaxmodels.gguf` (reading) and `jaxmodels.pretrained` (writing), so neither imports the other back;
in interop because the tokenizer files come from transformers' GGUF tokenizer converter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jaxmodels.checkpoint import CONFIG_NAME, native_config
from jaxmodels.gguf.convert import open_gguf, planned_tensors
from jaxmodels.hf.writer import write_shards
from jaxmodels.io import atomic_directory
from jaxmodels.paths import check_destination
from jaxmodels.pretrained import check_dtype, write_hf
from jaxmodels_interop import gguf_tokenizer


def convert_from_gguf(src: str | os.PathLike, dst: str | os.PathLike, *, dtype=None, to: str = "ours",
                      overwrite: bool = False) -> dict:
    """A .gguf file -> our checkpoint directory (`to="ours"`) or a transformers one (`to="hf"`), with the
    tokenizer files. Atomic; an existing dst needs overwrite=True, and dst may never be, hold or lie inside the source."""
    if to not in ("ours", "hf"):
        raise ValueError(f"to={to!r}: expected 'ours' or 'hf'")
    src, dst = Path(src), Path(dst)
    check_destination(dst, [src], what="OUT")
    source = open_gguf(src)
    dtype = check_dtype(source.family, dtype)
    tensors = planned_tensors(source, dtype)
    files = gguf_tokenizer.files(source.file)  # built before the output exists: a tokenizer problem writes nothing

    def extra(directory: Path) -> None:
        for name, text in files.items():
            (directory / name).write_text(text)

    if to == "hf":
        summary = write_hf(source.family, source.config, source.model_class, tensors, dst, overwrite=overwrite,
                           extra=extra)
    else:
        with atomic_directory(dst, overwrite=overwrite) as tmp:
            write_shards(tensors, tmp, metadata={"format": "jaxmodels"})
            (tmp / CONFIG_NAME).write_text(json.dumps(native_config(source.config), indent=2, sort_keys=True) + "\n")
            extra(tmp)
        summary = {"model_type": source.family.model_types[0], "path": str(dst), "tensors": len(tensors),
                   "total_size": sum(t.nbytes for t in tensors)}
    counts: dict[str, int] = {}
    for name in source.file.tensors:
        counts[source.file.qtype(name).name] = counts.get(source.file.qtype(name).name, 0) + 1
    return {**summary, "architecture": source.arch.name, "gguf_types": counts, "tokenizer": sorted(files),
            "ignored": source.ignored}
