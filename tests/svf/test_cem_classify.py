"""CEM (seeded, clamped, elites, log-likelihood tie-break) and prompt classification parsing / routing."""

import numpy as np
import pytest

from jaxmodels.svf import OTHERS, classify_prompt, compute_cem_interpolation, parse_boxed, select_expert

TARGET = np.array([[0.9, 0.1, 0.6], [0.2, 0.7, 0.0]])  # [K=2, L=3]


def quadratic(seen):
    def evaluate(a):
        seen.append(a.copy())
        return -float(np.sum((a - TARGET) ** 2)), 0.0
    return evaluate


def test_cem_is_seeded_clamped_and_converges():
    seen_a, seen_b, seen_c = [], [], []
    a = compute_cem_interpolation(quadratic(seen_a), 2, 3, iterations=8, seed=3)
    b = compute_cem_interpolation(quadratic(seen_b), 2, 3, iterations=8, seed=3)
    c = compute_cem_interpolation(quadratic(seen_c), 2, 3, iterations=8, seed=4)
    np.testing.assert_array_equal(np.stack(seen_a), np.stack(seen_b))
    assert not np.array_equal(np.stack(seen_a), np.stack(seen_c))
    pop = np.stack(seen_a)
    assert pop.shape == (8 * 32, 2, 3) and pop.min() >= 0.0 and pop.max() <= 1.0
    assert np.any(pop == 0.0) and np.any(pop == 1.0)  # samples outside [0, 1] were clamped
    assert a.alphas.shape == (2, 3) and np.abs(a.alphas - TARGET).max() < 0.15
    scores = [h["best_score"] for h in a.history]
    assert scores == sorted(scores)  # member 0 re-evaluates the best so far: never worse
    first_best = max(range(32), key=lambda i: -np.sum((pop[i] - TARGET) ** 2))
    np.testing.assert_array_equal(pop[32], pop[first_best])


def test_cem_breaks_score_ties_by_log_likelihood():
    def evaluate(a):
        return 1.0, -abs(float(a[1, 0]) - 0.25)  # every member scores the same accuracy

    result = compute_cem_interpolation(evaluate, 2, 1, iterations=6, seed=0)
    assert result.score == 1.0 and abs(result.alphas[1, 0] - 0.25) < 0.05


def test_cem_bad_arguments():
    with pytest.raises(ValueError, match=r"2 <= num_elites <= pop_size, got 40 elites of 32"):
        compute_cem_interpolation(lambda a: (0.0, 0.0), 2, num_elites=40)
    with pytest.raises(ValueError, match=r"at least one expert and one layer, got K=0, L=1"):
        compute_cem_interpolation(lambda a: (0.0, 0.0), 0)
    with pytest.raises(ValueError, match=r"non-finite scores \[nan"):
        compute_cem_interpolation(lambda a: (float("nan"), 0.0), 2)


@pytest.mark.parametrize("text,expected", [
    (r"\boxed{math}", "math"), (r" the answer is \boxed{ Code } ok", "code"), (r"\boxed{MATH} \boxed{code}", "math"),
    (r"\boxed{poetry}", OTHERS), ("math", OTHERS), (r"\boxed{}", OTHERS), (r"\boxed{math", OTHERS), ("", OTHERS),
])
def test_parse_boxed(text, expected):
    assert parse_boxed(text, ["math", "code", "reasoning"]) == expected


def test_classify_prompt_parses_only_the_continuation():
    prompts = []

    def echo(prompt):  # like the prototype's decode of prompt + answer; the prompt itself says \boxed{category}
        prompts.append(prompt)
        return prompt + r"\boxed{reasoning}"

    assert classify_prompt(echo, "Is 7 prime?", ["math", "reasoning"]) == "reasoning"
    assert "math, reasoning" in prompts[0] and "Is 7 prime?" in prompts[0]
    assert classify_prompt(lambda p: "no idea", "q", ["math"]) == OTHERS


def test_routing_others_to_base_and_unknown_labels_refused():
    experts = {"math": "math.safetensors", "code": None}
    assert select_expert("math", experts) == "math.safetensors"
    assert select_expert(OTHERS, experts) is None and select_expert("code", experts) is None
    with pytest.raises(ValueError, match=r"the classifier answered 'poetry', which names no expert; known experts: "
                                         r"\['code', 'math'\] \(answer 'others' routes to the base weights\)"):
        select_expert("poetry", experts)
