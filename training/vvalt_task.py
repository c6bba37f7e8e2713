"""Data for `training.vvalt`: the task-conditioning demo, or the user's arrays from an .npz file.

Demo: inputs x ~ N(0, I) of shape [N, I]; each sample belongs to one of `num_tasks` tasks, given to the model
only as that task's vector [T]. Tasks come in pairs with opposite directions (u, -u), and the label is
sign(x . u_task) (classification) or x . u_task (regression). So the same input has opposite labels under
paired tasks: a model that ignores the task vector can do no better than chance (accuracy 1/2; for
regression, predicting 0, i.e. MSE = Var(y) = 1).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
    """inputs [N, I] float32, tasks [N, T] float32, labels [N] int32 (classification) or [N, L] float32."""

    inputs: np.ndarray
    tasks: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.inputs[idx], self.tasks[idx], self.labels[idx]


def demo_task(kind: str, input_dim: int, task_dim: int, n: int, *, num_tasks: int = 4, seed: int = 0,
              split_seed: int = 0) -> Split:
    """n samples of the paired-task problem; the task directions and vectors depend on `seed` only,
    the samples on (seed, split_seed), so train and eval splits share the tasks."""
    if num_tasks < 2 or num_tasks % 2:
        raise ValueError(f"--num-tasks must be an even number >= 2 (tasks come in opposite pairs), got {num_tasks}")
    g = np.random.default_rng([seed, 0])
    u = g.standard_normal((num_tasks // 2, input_dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    directions = np.concatenate([u, -u])  # [num_tasks, I]: task j and j + num_tasks/2 are opposite
    vectors = g.standard_normal((num_tasks, task_dim))  # [num_tasks, T]
    s = np.random.default_rng([seed, 1, split_seed])
    x = s.standard_normal((n, input_dim))
    task = s.integers(0, num_tasks, n)
    score = np.einsum("NI,NI->N", x, directions[task])
    labels = (score > 0).astype(np.int32) if kind == "classification" else score[:, None].astype(np.float32)
    return Split(x.astype(np.float32), vectors[task].astype(np.float32), labels)


def load_npz(path: str | Path, kind: str, input_dim: int, task_dim: int, num_labels: int) -> Split:
    """The user's data: an .npz with `inputs` [N, I], `tasks` [N, T] and `labels` ([N] ids or [N, L] reals)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: no such file")
    with np.load(path) as z:
        missing = sorted({"inputs", "tasks", "labels"} - set(z.files))
        if missing:
            raise ValueError(f"--data {path}: missing array(s) {missing}; expected inputs [N, {input_dim}], "
                             f"tasks [N, {task_dim}], labels")
        x, t, y = z["inputs"].astype(np.float32), z["tasks"].astype(np.float32), z["labels"]
    n = x.shape[0]
    if x.shape != (n, input_dim) or t.shape != (n, task_dim):
        raise ValueError(f"--data {path}: inputs {x.shape} / tasks {t.shape} do not match [N, input_dim={input_dim}] "
                         f"/ [N, task_dim={task_dim}]")
    if kind == "classification":
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"--data {path}: classification labels must be integer ids of shape [{n}], "
                             f"got {y.dtype} {y.shape}")
        if y.min() < 0 or y.max() >= num_labels:
            raise ValueError(f"--data {path}: labels span [{y.min()}, {y.max()}], outside [0, num_labels={num_labels})")
        return Split(x, t, y.astype(np.int32))
    y = y.astype(np.float32).reshape(n, -1)
    if y.shape[1] != num_labels:
        raise ValueError(f"--data {path}: regression labels have {y.shape[1]} columns, expected num_labels={num_labels}")
    return Split(x, t, y)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """The sample indices of training step `step`: a fresh permutation per epoch, fixed by (seed, epoch), so a
    resumed run sees exactly the batches an uninterrupted one would."""
    per_epoch = max(n // batch_size, 1)
    epoch, i = divmod(step, per_epoch)
    order = np.random.default_rng([seed, 2, epoch]).permutation(n)
    return order[i * batch_size:(i + 1) * batch_size]
