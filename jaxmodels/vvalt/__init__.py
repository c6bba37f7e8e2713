"""V.V.A.L.T (Vantage-Vector Autonomous Logic Transformer) in Flax NNX: exact, batched, trainable."""

from jaxmodels.vvalt.config import FRAME_NAMES, VVALTConfig
from jaxmodels.vvalt.init import original_weights
from jaxmodels.vvalt.convert import load
from jaxmodels.vvalt.family import VVALT_FAMILY
from jaxmodels.vvalt.model import (VVALTForRegression, VVALTForSequenceClassification, VVALTModel, VVALTOutput,
                                   to_numpy_weights)
from jaxmodels.vvalt.trace import VVALTTrace

__all__ = ["FRAME_NAMES", "VVALTConfig", "VVALTForRegression", "VVALTForSequenceClassification", "VVALTModel",
           "VVALTOutput", "VVALTTrace", "VVALT_FAMILY", "load", "original_weights", "to_numpy_weights"]
