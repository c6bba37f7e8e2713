import numpy as np
import pytest

pytest.importorskip("numba", reason="needs the host kernels (the htfr extra)")

from jaxmodels.htfr import HTFRConfig, HTFRModel
from jaxmodels.htfr.init import random_tensors

M, D, O = 37, 11, 5  # prime, distinct


@pytest.fixture
def small_model():
    """37 random tensors over D = 11 with O = 5, every interpolation present, relocation reachable."""
    arrays = random_tensors(M, D, O, seed=0, interpolation_probs=[1, 1, 1, 1, 1])
    cfg = HTFRConfig(top_k=3, train_top_k=4, max_knn_radius=0.3, error_threshold=0.5, max_error_queue=8,
                     relocation_interval=3, eta=0.2, eta_g=0.1, chunk_size=8)
    return HTFRModel.from_arrays(arrays, cfg, seed=0)


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(29, D)).astype(np.float32), rng.normal(size=(29, O)).astype(np.float32)
