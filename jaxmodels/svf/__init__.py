"""Transformer² singular-value fine-tuning (SVF) for any of our Flax decoders.

decompose -> SVFWrapper (z-vectors, patch_weights) -> experts on disk keyed by Hugging Face names ->
adaptation: classify_prompt / HiddenStateClassifier routing, or few-shot CEM mixing.
"""

from jaxmodels.svf.cem import SCORES, CEMResult, compute_cem_interpolation, own_correct_loglik
from jaxmodels.svf.classifier import HiddenStateClassifier, pooled_features
from jaxmodels.svf.classify import CLASSIFICATION_PROMPT, OTHERS, classify_prompt, parse_boxed, select_expert
from jaxmodels.svf.component import SvdComponent, mask_from_z
from jaxmodels.svf.decompose import DEFAULT_PATTERN, Decomposition, MatrixInfo, decompose, select_matrices
from jaxmodels.svf.expert import ExpertMismatchError, load_expert, read_expert, save_expert
from jaxmodels.svf.patch import (HF_MATRIX_ORDER, MIXES, alphas_from_official, alphas_to_official, masks_from_z,
                                 mix_masks, official_matrix_order, orient_masks, patch_state)
from jaxmodels.svf.wrapper import SVFWrapper, init_z, load_z_checkpoint, save_z_checkpoint

__all__ = ["CEMResult", "CLASSIFICATION_PROMPT", "DEFAULT_PATTERN", "Decomposition", "ExpertMismatchError",
           "HF_MATRIX_ORDER", "HiddenStateClassifier", "MIXES", "MatrixInfo", "OTHERS", "SCORES", "SVFWrapper",
           "SvdComponent", "alphas_from_official", "alphas_to_official", "classify_prompt",
           "compute_cem_interpolation", "decompose", "init_z", "load_expert", "load_z_checkpoint", "mask_from_z",
           "masks_from_z", "mix_masks", "official_matrix_order", "orient_masks", "own_correct_loglik",
           "parse_boxed", "patch_state", "pooled_features", "read_expert", "save_expert", "save_z_checkpoint",
           "select_expert", "select_matrices"]
