"""Adaptation: routing (unknown classes fall back to the base weights), few-shot CEM, and the adapt CLI."""

import json

import numpy as np
import pytest

from jaxmodels import Hyformer, HyformerConfig
from jaxmodels.svf import SVFWrapper
from jaxmodels_training import svf as svf_cli
from jaxmodels_training.svf_adapt import Adapter
from jaxmodels_training.svf_rl import rollout_with
from jaxmodels_training.svf_tasks import Example, exact_match, get_task
from jaxmodels_training.tokenizer import ByteTokenizer


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    path = tmp_path_factory.mktemp("adapt")
    model = Hyformer.from_config(HyformerConfig.tiny(vocab_size=260, max_seq_len=40), seed=2)
    model.save_pretrained(path / "model")
    wrapper = SVFWrapper(model)
    rng = np.random.default_rng(0)
    experts = {}
    for name in ("sort", "reverse"):
        z = {k: rng.normal(0, 2, v.shape).astype(np.float32) for k, v in wrapper.z_vectors.items()}
        wrapper.save(path / f"{name}.safetensors", z, name=name)
        experts[name] = wrapper.load(path / f"{name}.safetensors", set_current=False)
    return Adapter(wrapper, ByteTokenizer(), experts, max_new_tokens=4, batch_size=4, prompt_len=13), path


def test_routes_and_others_fallback(adapter):
    adapter, _ = adapter
    examples = get_task("sort").examples(3, 0)
    routes = adapter.prompt_routes(examples, max_new_tokens=6)
    assert routes == ["others"] * 3  # a random model answers no \boxed{...}: the documented fallback
    assert 0.0 <= adapter.routed_accuracy(examples, ["others", "sort", "reverse"]) <= 1.0
    with pytest.raises(ValueError, match=r"the classifier answered 'math', which names no expert"):
        adapter.routed_accuracy(examples, ["math", "sort", "sort"])
    train = get_task("sort").examples(6, 1) + get_task("reverse").examples(6, 1)
    assert set(adapter.classifier_routes(examples, train)) <= {"sort", "reverse"}


def test_behaviours_sort_answers_into_correct_rival_other(adapter):
    adapter, _ = adapter
    prompts = get_task("sort").examples(3, 0)
    said = [c.strip() for c in rollout_with(adapter.base, prompts, adapter.codec, exact_match).completions]
    examples = [Example(prompts[0].prompt, said[0], "sort", "x"),  # the model's own answer is "correct"
                Example(prompts[1].prompt, "x", "sort", said[1]),  # ... or the rival behaviour's
                Example(prompts[2].prompt, "x", "sort", "y")]  # ... or neither
    assert adapter.behaviours(adapter.base, examples) == pytest.approx({"correct": 1 / 3, "rival": 1 / 3,
                                                                        "other": 1 / 3})
    no_rival = [Example(prompts[1].prompt, "x", "upper", "")] * 5  # no distractor: never "rival"
    assert adapter.behaviours(adapter.base, no_rival) == {"correct": 0.0, "rival": 0.0, "other": 1.0}


def test_few_shot_cem_and_empty_set(adapter):
    adapter, _ = adapter
    shots, test = get_task("sort").examples(2, 3), get_task("sort").examples(2, 4)
    with pytest.raises(ValueError, match=r"few-shot adaptation needs at least one example \(--shots\); got an "
                                         r"empty few-shot set"):
        adapter.few_shot([], test)
    acc, result = adapter.few_shot(shots, test, iterations=1, pop_size=4, num_elites=2, seed=0)
    assert 0.0 <= acc <= 1.0 and result.alphas.shape == (2, 6)
    assert result.alphas.min() >= 0 and result.alphas.max() <= 1 and np.isfinite(result.loglik)


def test_adapt_cli(adapter, tmp_path, capsys):
    _, path = adapter
    out = tmp_path / "adapt.json"
    svf_cli.main(["adapt", "--model", str(path / "model"), "--experts", f"sort={path / 'sort.safetensors'}",
                  f"reverse={path / 'reverse.safetensors'}", "--strategies", "base", "expert",
                  "--n-test", "3", "--batch-size", "4", "--max-new-tokens", "4", "--json", str(out)])
    results = json.loads(out.read_text())
    assert set(results["per_task"]) == {"sort", "reverse"} and set(results["mixed"]) == {"base", "expert"}
    assert "task=mixed (mean)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        svf_cli.main(["adapt", "--model", str(path / "model"), "--experts", "sort"])
    assert "--experts 'sort': expected NAME=PATH" in capsys.readouterr().err
