"""HTFR: the Hypertensor field regressor in JAX (originals.md section 5).

Letters: D input width, M hypertensors, O output width, K top-k slots, B batch, T samples in a chunk.
"""

from jaxmodels.htfr.checkpoint import (OriginalCheckpoint, StageCheckpoint, load_field, load_original_checkpoint,
                                       save_field, save_original_checkpoint)
from jaxmodels.htfr.config import HTFRConfig
from jaxmodels.htfr.estimator import HTFRClassifier, HTFRRegressor
from jaxmodels.htfr.hypertensor import INTERPOLATIONS, Hypertensor, LocalResult, interpolation_weights
from jaxmodels.htfr.init import kmeans, kmeans_tensors, random_tensors
from jaxmodels.htfr.model import HTFRModel
from jaxmodels.htfr.reference import ReferenceField
from jaxmodels.htfr.state import FieldState

__all__ = ["INTERPOLATIONS", "FieldState", "HTFRClassifier", "HTFRConfig", "HTFRModel", "HTFRRegressor",
           "Hypertensor", "LocalResult", "OriginalCheckpoint", "ReferenceField", "StageCheckpoint",
           "interpolation_weights", "kmeans", "kmeans_tensors", "load_field", "load_original_checkpoint",
           "random_tensors", "save_field", "save_original_checkpoint"]
