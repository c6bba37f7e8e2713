"""HTFT: the two-stage Hypertensor Field Transformer distilled from a frozen teacher (originals.md 5.7-5.8).

Letters: N windows, W window length, H teacher hidden width, E stage-1 target width, S shortlist size,
C = S + 1 compact classes (the last is "other").
"""

from jaxmodels.htft.checkpoint import HTFTCheckpoint, load_htft_checkpoint, save_htft_checkpoint
from jaxmodels.htft.context import (ContextBatch, ContextBuilder, ContextBuilderConfig, TeacherWindowLike,
                                     rope_phases)
from jaxmodels.htft.model import HypertensorFieldTransformer, StageSpec, StageState, make_stage
from jaxmodels.htft.trainer import HTFTTrainer, cross_entropy, teacher_truncated_nll
from jaxmodels.htft.vocab import VocabMapping, build_vocab_mapping

__all__ = ["ContextBatch", "ContextBuilder", "ContextBuilderConfig", "HTFTCheckpoint", "HTFTTrainer",
           "HypertensorFieldTransformer", "StageSpec", "StageState", "TeacherWindowLike", "VocabMapping",
           "build_vocab_mapping", "cross_entropy", "load_htft_checkpoint", "make_stage", "rope_phases",
           "save_htft_checkpoint", "teacher_truncated_nll"]
