"""Cross-entropy method over the per-matrix mixing coefficients of K experts (few-shot adaptation).

As the official `optim_modules.CEM`: population 32, 6 elites, samples clamped to [0, 1], member 0 of each
population is the best solution so far, best member by score with ties broken by a log-likelihood,
elites' mean and (unbiased) std for the next population. Seeded: same seed, same search.

The caller's `evaluate` gives each candidate's (score, tie-break); for few-shot adaptation the score is the
accuracy on the few-shot examples and the tie-break one of SCORES:
- "reference" (ours, the default): the mean per-token log-likelihood of the reference answers, every example;
- "official": `own_correct_loglik`, the mean over the examples the candidate answered correctly of the mean
  per-token log-likelihood of its own greedy answer, 0 when none is correct.
One difference is kept: our elites are the top members by (score, tie-break, index); the official takes the
top members by score alone (`np.argpartition`, ties in no defined order).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

# evaluate(alphas [K, L]) -> (score, tie-break log-likelihood); higher is better for both.
Evaluate = Callable[[np.ndarray], tuple[float, float]]

SCORES = ("reference", "official")


def own_correct_loglik(token_logliks: np.ndarray, correct: np.ndarray) -> float:
    """The official tie-break: mean over the correct examples of each one's mean per-token log-likelihood of
    the model's own answer (token_logliks [N], already averaged over each answer's tokens); 0.0 when no
    example is correct (as `optim_modules.CEM` with use_loglikelihood_for_ties)."""
    token_logliks, correct = np.asarray(token_logliks, np.float64), np.asarray(correct, bool)
    if token_logliks.shape != correct.shape or token_logliks.ndim != 1:
        raise ValueError(f"own_correct_loglik needs two [N] arrays, got {token_logliks.shape} and {correct.shape}")
    return float(token_logliks[correct].mean()) if correct.any() else 0.0


@dataclasses.dataclass(frozen=True)
class CEMResult:
    alphas: np.ndarray  # [K, L], the best solution found
    score: float
    loglik: float
    history: list[dict]  # per iteration: best score, mean score, elite mean


def compute_cem_interpolation(evaluate: Evaluate, num_experts: int, num_layers: int = 1, *, iterations: int = 10,
                              pop_size: int = 32, num_elites: int = 6, init_mean: np.ndarray | None = None,
                              init_std: float = 0.5, seed: int = 0) -> CEMResult:
    """Maximises evaluate(alphas) over alphas in [0, 1]^{K x L}; init mean 1/K, std (max - min)/2 = 0.5."""
    if num_experts < 1 or num_layers < 1:
        raise ValueError(f"CEM needs at least one expert and one layer, got K={num_experts}, L={num_layers}")
    if not 2 <= num_elites <= pop_size:
        raise ValueError(f"CEM needs 2 <= num_elites <= pop_size, got {num_elites} elites of {pop_size}")
    if iterations < 1:
        raise ValueError(f"CEM iterations must be >= 1, got {iterations}")
    shape = (num_experts, num_layers)
    mean = np.full(shape, 1.0 / num_experts) if init_mean is None else np.asarray(init_mean, np.float64)
    if mean.shape != shape:
        raise ValueError(f"CEM init_mean has shape {mean.shape}, expected {shape}")
    std = np.full(shape, float(init_std))
    rng = np.random.default_rng(seed)
    best: tuple[float, float, np.ndarray] | None = None
    history = []
    for it in range(iterations):
        pop = np.clip(mean + std * rng.standard_normal((pop_size, *shape)), 0.0, 1.0)
        if best is not None:
            pop[0] = best[2]
        results = [evaluate(a) for a in pop]
        scores = np.array([float(r[0]) for r in results])
        logliks = np.array([float(r[1]) for r in results])
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"CEM iteration {it}: evaluate returned non-finite scores {scores[~np.isfinite(scores)]}")
        logliks = np.where(np.isfinite(logliks), logliks, -np.inf)
        order = np.lexsort((np.arange(pop_size), -logliks, -scores))  # score, then log-likelihood, then index
        top = order[0]
        if best is None or (scores[top], logliks[top]) > (best[0], best[1]):
            best = (float(scores[top]), float(logliks[top]), pop[top].copy())
        elites = pop[order[:num_elites]]
        mean, std = elites.mean(axis=0), elites.std(axis=0, ddof=1)
        history.append({"iteration": it, "best_score": best[0], "best_loglik": best[1],
                        "mean_score": float(scores.mean()), "elite_mean": mean.tolist()})
    return CEMResult(best[2], best[0], best[1], history)
