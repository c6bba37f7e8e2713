"""Nearest-neighbour index over vectors [N, D] with stable integer ids, squared-L2 distances.

kind="flat" (default): faiss `IndexIDMap2(IndexFlatL2)`, exact. kind="ivf": `IndexIVFFlat` (trained on the
first `add`, which then needs >= nlist vectors), approximate with `nprobe`. kind="hnsw": `IndexHNSWFlat`,
approximate; HNSW cannot delete, so removed and updated rows become tombstones filtered out by an IDSelector and
the graph is rebuilt only when tombstones outnumber live rows. kind="exact": no faiss, a jitted
||q||^2 - 2 q.v + ||v||^2 with `jax.lax.top_k` over a power-of-two padded capacity (recompiles only when the
capacity doubles). add / update / remove never rebuild the whole index (except the HNSW compaction above).
"""

from __future__ import annotations

import functools

import faiss
import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("flat", "ivf", "hnsw", "exact")


@functools.partial(jax.jit, static_argnames="k")
def _exact_search(queries, vectors, valid, k: int):
    """queries [B, D], vectors [C, D] (C = capacity), valid [C] -> (squared distances [B, k], rows [B, k])."""
    d2 = (jnp.sum(queries * queries, axis=1, keepdims=True) - 2.0 * queries @ vectors.T
          + jnp.sum(vectors * vectors, axis=1)[None, :])  # [B, C]
    d2 = jnp.where(valid[None, :], jnp.maximum(d2, 0.0), jnp.inf)
    neg, rows = jax.lax.top_k(-d2, k)
    return -neg, rows


class FaissIndex:
    """Vectors of width `dim` under int64 ids; `search(queries [B, D], k)` -> (distances [B, k], ids [B, k])."""

    def __init__(self, dim: int, kind: str = "flat", *, hnsw_m: int = 32, ef_construction: int = 200,
                 ef_search: int = 64, nlist: int = 64, nprobe: int = 8):
        if dim < 1:
            raise ValueError(f"FaissIndex: dim must be >= 1, got {dim}")
        if kind not in KINDS:
            raise ValueError(f"FaissIndex: unknown kind {kind!r}; expected one of {KINDS}")
        self.dim, self.kind = dim, kind
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self.nlist, self.nprobe = nlist, nprobe
        # Host copy of the live rows: the exact path searches it, HNSW compaction rebuilds from it.
        self._vectors = np.zeros((0, dim), np.float32)  # [capacity, D]
        self._ids = np.zeros(0, np.int64)  # [capacity], meaningful where self._valid
        self._valid = np.zeros(0, bool)
        self._row: dict[int, int] = {}
        self._free: list[int] = []
        self._faiss = None
        self._labels: dict[int, int] = {}  # HNSW: external id -> internal label
        self._label_ids = np.zeros(0, np.int64)  # HNSW: internal label -> external id
        self._dead = np.zeros(0, bool)  # HNSW tombstones, by internal label
        self._device = None

    def __len__(self) -> int:
        return len(self._row)

    # ---- checks ----------------------------------------------------------------------------------------------

    def _check_vectors(self, vectors, where: str) -> np.ndarray:
        v = np.asarray(vectors, np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"FaissIndex.{where}: vectors of shape {v.shape} do not match the index dimension "
                             f"{self.dim} (expected [N, {self.dim}])")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"FaissIndex.{where}: vectors contain NaN or inf (rows "
                             f"{np.unique(np.nonzero(~np.isfinite(v))[0])[:8].tolist()})")
        return np.ascontiguousarray(v)

    def _check_ids(self, ids, n: int, where: str) -> np.ndarray:
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.shape[0] != n:
            raise ValueError(f"FaissIndex.{where}: got {ids.shape[0]} ids for {n} vectors")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"FaissIndex.{where}: ids contain duplicates")
        return ids

    # ---- mutation --------------------------------------------------------------------------------------------

    def add(self, vectors, ids=None) -> np.ndarray:
        """Adds vectors [N, D] under ids [N] (default: the next free integers); returns the ids."""
        v = self._check_vectors(vectors, "add")
        if ids is None:
            start = max(self._row, default=-1) + 1
            ids = np.arange(start, start + v.shape[0], dtype=np.int64)
        ids = self._check_ids(ids, v.shape[0], "add")
        present = [int(i) for i in ids if int(i) in self._row]
        if present:
            raise ValueError(f"FaissIndex.add: ids {present[:8]} are already in the index; use update()")
        self._store(ids, v)
        self._faiss_add(ids, v)
        return ids

    def update(self, ids, vectors) -> None:
        """Replaces the vectors [N, D] stored under existing ids [N]."""
        v = self._check_vectors(vectors, "update")
        ids = self._check_ids(ids, v.shape[0], "update")
        self._require_present(ids, "update")
        self._faiss_remove(ids)
        for i, vec in zip(ids, v):
            self._vectors[self._row[int(i)]] = vec
        self._device = None
        self._faiss_add(ids, v)

    def remove(self, ids) -> None:
        """Removes the rows stored under ids."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        self._require_present(ids, "remove")
        self._faiss_remove(ids)
        for i in ids:
            row = self._row.pop(int(i))
            self._valid[row] = False
            self._free.append(row)
        self._device = None

    def _require_present(self, ids: np.ndarray, where: str) -> None:
        missing = [int(i) for i in ids if int(i) not in self._row]
        if missing:
            raise KeyError(f"FaissIndex.{where}: ids {missing[:8]} are not in the index")

    def _store(self, ids: np.ndarray, v: np.ndarray) -> None:
        need = len(self._row) + len(ids)
        if need > self._vectors.shape[0]:
            cap = max(16, 1 << (need - 1).bit_length())
            grow = cap - self._vectors.shape[0]
            self._free.extend(range(self._vectors.shape[0], cap))
            self._vectors = np.concatenate([self._vectors, np.zeros((grow, self.dim), np.float32)])
            self._ids = np.concatenate([self._ids, np.zeros(grow, np.int64)])
            self._valid = np.concatenate([self._valid, np.zeros(grow, bool)])
            self._free.sort(reverse=True)
        for i, vec in zip(ids, v):
            row = self._free.pop()
            self._row[int(i)] = row
            self._vectors[row], self._ids[row], self._valid[row] = vec, i, True
        self._device = None

    def _faiss_add(self, ids: np.ndarray, v: np.ndarray) -> None:
        if self.kind == "exact":
            return
        if self._faiss is None:
            self._faiss = self._new_faiss(v)
        if self.kind == "hnsw":
            start = self._faiss.ntotal
            labels = np.arange(start, start + len(ids), dtype=np.int64)
            self._faiss.add(v)
            self._label_ids = np.concatenate([self._label_ids, ids])
            self._dead = np.concatenate([self._dead, np.zeros(len(ids), bool)])
            self._labels.update({int(i): int(lab) for i, lab in zip(ids, labels)})
        else:
            self._faiss.add_with_ids(v, ids)

    def _faiss_remove(self, ids: np.ndarray) -> None:
        if self.kind == "exact" or self._faiss is None:
            return
        if self.kind == "hnsw":
            for i in ids:
                self._dead[self._labels.pop(int(i))] = True
            if self._dead.sum() > max(len(self._labels), 64):
                self._rebuild_hnsw(exclude=ids)
        else:
            self._faiss.remove_ids(ids)

    def _rebuild_hnsw(self, exclude: np.ndarray) -> None:
        """Compacts the HNSW graph to the live rows (those being updated are re-added by the caller)."""
        keep = [i for i in self._row if i not in set(int(e) for e in exclude)]
        self._faiss, self._labels = None, {}
        self._label_ids, self._dead = np.zeros(0, np.int64), np.zeros(0, bool)
        if keep:
            ids = np.asarray(keep, np.int64)
            self._faiss_add(ids, self._vectors[[self._row[i] for i in keep]])

    def _new_faiss(self, first: np.ndarray):
        if self.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatL2(self.dim))
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m)
            index.hnsw.efConstruction = self.ef_construction
            return index
        if first.shape[0] < self.nlist:
            raise ValueError(f"FaissIndex(kind='ivf'): the first add trains {self.nlist} centroids and needs at "
                             f"least nlist={self.nlist} vectors, got {first.shape[0]}")
        self._quantizer = faiss.IndexFlatL2(self.dim)
        index = faiss.IndexIVFFlat(self._quantizer, self.dim, self.nlist)
        index.train(first)
        index.nprobe = self.nprobe
        return index

    # ---- search ----------------------------------------------------------------------------------------------

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries [B, D] -> (squared L2 distances [B, k'], ids [B, k']), k' = min(k, len(self)), nearest first.

        Approximate kinds may return fewer true neighbours; missing slots have id -1 and distance inf.
        """
        if len(self) == 0:
            raise ValueError("FaissIndex.search: the index is empty; add vectors first")
        if k < 1:
            raise ValueError(f"FaissIndex.search: k must be >= 1, got {k}")
        q = self._check_vectors(queries, "search")
        k = min(k, len(self))
        if self.kind == "exact":
            if self._device is None:
                self._device = (jnp.asarray(self._vectors), jnp.asarray(self._valid))
            d2, rows = _exact_search(jnp.asarray(q), *self._device, k)
            return np.asarray(d2), self._ids[np.asarray(rows)]
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)
            if self._dead.any():
                self._selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.nonzero(self._dead)[0].astype(np.int64)))
                params.sel = self._selector
            d2, labels = self._faiss.search(q, k, params=params)
            ids = np.where(labels >= 0, self._label_ids[np.maximum(labels, 0)], -1)
        else:
            d2, ids = self._faiss.search(q, k)
        return np.where(ids >= 0, d2, np.inf).astype(np.float32), ids.astype(np.int64)
