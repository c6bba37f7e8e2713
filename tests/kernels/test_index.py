"""FaissIndex: every kind against a brute-force scan, add/update/remove, and its errors."""

import numpy as np
import pytest

pytest.importorskip("faiss", reason="needs the index (the htfr extra)")

from jaxmodels_kernels.index import FaissIndex


@pytest.mark.parametrize("kind", ["flat", "exact", "hnsw", "ivf"])
def test_index_kinds_match_brute_force_after_edits(kind):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((113, 7)).astype(np.float32)
    q = rng.standard_normal((5, 7)).astype(np.float32)
    index = FaissIndex(7, kind, nlist=4, nprobe=4)
    index.add(x, ids=np.arange(1000, 1113))
    index.remove(np.arange(1000, 1020))
    index.update(np.arange(1020, 1030), x[20:30] + 1)
    y = x.copy()
    y[20:30] += 1
    live = np.arange(20, 113)
    d2 = ((q[:, None] - y[None, live]) ** 2).sum(-1)
    d, ids = index.search(q, 3)
    np.testing.assert_array_equal(ids, 1000 + live[np.argsort(d2, 1)[:, :3]])
    np.testing.assert_allclose(d, np.sort(d2, 1)[:, :3], rtol=1e-4, atol=1e-4)
    assert len(index) == 93


def test_index_errors():
    index = FaissIndex(4, "exact")
    with pytest.raises(ValueError, match="the index is empty; add vectors first"):
        index.search(np.zeros((1, 4)), 1)
    with pytest.raises(ValueError, match=r"vectors of shape \(2, 3\) do not match the index dimension 4"):
        index.add(np.zeros((2, 3)))
    index.add(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="ids \\[0\\] are already in the index; use update"):
        index.add(np.ones((1, 4)), ids=[0])
    with pytest.raises(KeyError, match="ids \\[7\\] are not in the index"):
        index.remove([7])
    with pytest.raises(ValueError, match="contain NaN or inf"):
        index.search(np.full((1, 4), np.nan), 1)
    with pytest.raises(ValueError, match="unknown kind 'lsh'"):
        FaissIndex(4, "lsh")
    assert index.search(np.zeros((1, 4)), 5)[1].shape == (1, 2)
