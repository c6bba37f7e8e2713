"""Transformer² adaptation at inference: prompt-based, classifier-based and few-shot (CEM) expert choice.

`python -m training.svf adapt --model DIR --experts arith=A.safetensors reverse=B.safetensors ...` evaluates
base / expert / prompt / classifier / few-shot on each task's test split and writes a table (and JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmodels.io import atomic_write_text
from jaxmodels.svf import (MIXES, OTHERS, SCORES, HiddenStateClassifier, SVFWrapper, compute_cem_interpolation,
                           own_correct_loglik, parse_boxed, pooled_features, select_expert)
from jaxmodels_training.svf_losses import token_logprobs
from jaxmodels_training.svf_rl import PromptCodec, accuracy_with, fixed_batches, rollout_with
from jaxmodels_training.svf_tasks import DEMO_CLASSIFY_TEMPLATE, Example, exact_match, get_task, split

STRATEGIES = ("base", "expert", "prompt", "classifier", "few-shot")


@partial(jax.jit, static_argnums=0)
def _answer_loglik(graphdef, state, tokens, attention, answer_mask):
    """Mean log-likelihood per answer token [B] of tokens [B, S] under the model; answer_mask marks them."""
    _, chosen = token_logprobs(nnx.merge(graphdef, state)(tokens, attention_mask=attention).logits, tokens)
    m = answer_mask[:, 1:].astype(jnp.float32)
    return jnp.sum(chosen * m, axis=1) / jnp.maximum(m.sum(axis=1), 1.0)


class Adapter:
    """A base model with K named experts; routes examples and scores answers (greedy, `reward` > 0 counts)."""

    def __init__(self, wrapper: SVFWrapper, tokenizer, experts: dict[str, dict], *, max_new_tokens: int,
                 batch_size: int, prompt_len: int, reward=exact_match):
        self.wrapper, self.tokenizer, self.experts = wrapper, tokenizer, experts
        self.reward = reward  # (completion, answer) -> +1 / -1: the answer checker of the tasks evaluated
        self.names = list(experts)
        self.batch_size = batch_size
        self.codec = PromptCodec(tokenizer, prompt_len, max_new_tokens)
        self.base = wrapper.merge(wrapper.params)
        self._models = {}

    def model(self, label: str | None):
        """The base model (None) or the expert's patched model, built once."""
        if label is None:
            return self.base
        if label not in self._models:
            self._models[label] = self.wrapper.patch_weights(self.experts[label])
        return self._models[label]

    def accuracy(self, model, examples: Sequence[Example]) -> float:
        return accuracy_with(model, examples, self.codec, self.reward, batch_size=self.batch_size)

    def behaviours(self, model, examples: Sequence[Example]) -> dict[str, float]:
        """Shares of greedy answers that are correct, the rival behaviour's (Example.distractor), or neither."""
        counts = {"correct": 0, "rival": 0, "other": 0}
        for chunk, n in fixed_batches(examples, self.batch_size):
            out = rollout_with(model, chunk, self.codec, exact_match)
            for ex, text in zip(chunk, out.completions[:n]):
                answer = text.split("\n", 1)[0].strip()
                rival = bool(ex.distractor) and answer == ex.distractor
                counts["correct" if answer == ex.answer else "rival" if rival else "other"] += 1
        return {k: v / len(examples) for k, v in counts.items()}

    def routed_accuracy(self, examples: Sequence[Example], routes: Sequence[str]) -> float:
        """Each example answered by the expert of its route ("others": the base weights)."""
        table = {**{n: n for n in self.names}, OTHERS: None}
        hits = 0.0
        for label in sorted(set(routes)):
            group = [e for e, r in zip(examples, routes) if r == label]
            hits += self.accuracy(self.model(select_expert(label, table)), group) * len(group)
        return hits / len(examples)

    def prompt_routes(self, examples: Sequence[Example], *, template: str = DEMO_CLASSIFY_TEMPLATE,
                      max_new_tokens: int = 24) -> list[str]:
        """The base model classifies each query (answer in \\boxed{...}, else "others")."""
        prompts = [Example(template.format(labels=", ".join(self.names), query=e.prompt), "", "") for e in examples]
        codec = PromptCodec.for_examples(self.tokenizer, prompts, max_new_tokens)
        routes = []
        for chunk, n in fixed_batches(prompts, self.batch_size):
            out = rollout_with(self.base, chunk, codec, lambda c, a: 0.0)
            routes += [parse_boxed(text, self.names) for text in out.completions[:n]]
        return routes

    def features(self, examples: Sequence[Example]) -> np.ndarray:
        ids, mask = self.codec.encode([e.prompt for e in examples])
        return pooled_features(self.base, ids, mask, batch_size=self.batch_size)

    def classifier_routes(self, examples: Sequence[Example], train: Sequence[Example], *, seed: int = 0) -> list[str]:
        """A softmax-regression head on the base model's pooled hidden states, fit on labelled train prompts."""
        clf = HiddenStateClassifier.fit(self.features(train), [e.domain for e in train], seed=seed)
        return clf.predict(self.features(examples))

    def answer_loglik(self, model, examples: Sequence[Example]) -> float:
        """Mean per-token log-likelihood of the correct answers (CEM's tie-break)."""
        width = self.codec.prompt_len + self.codec.max_new_tokens
        tokens = np.full((len(examples), width), self.codec.pad_id, np.int32)
        attention, answer = np.zeros_like(tokens), np.zeros_like(tokens)
        for i, e in enumerate(examples):
            p, a = self.tokenizer.encode(e.prompt), self.tokenizer.encode(e.answer + "\n")[: self.codec.max_new_tokens]
            start = self.codec.prompt_len - len(p)
            tokens[i, start:start + len(p) + len(a)] = np.concatenate([p, a])
            attention[i, start:start + len(p) + len(a)] = 1
            answer[i, self.codec.prompt_len:self.codec.prompt_len + len(a)] = 1
        graphdef, state = nnx.split(model)
        return float(jnp.mean(_answer_loglik(graphdef, state, tokens, attention, answer)))

    def own_answer_score(self, model, examples: Sequence[Example]) -> tuple[float, float]:
        """(greedy accuracy, the official tie-break): the mean over the correctly answered examples of the mean
        log-likelihood of the model's own answer tokens (the generated ids up to and including the stop token,
        as the RL loss scores them), 0.0 when none is correct."""
        graphdef, state = nnx.split(model)
        logliks, correct = [], []
        for chunk, n in fixed_batches(examples, self.batch_size):
            out = rollout_with(model, chunk, self.codec, exact_match)
            ll = _answer_loglik(graphdef, state, out.tokens, out.attention_mask, out.response_mask)
            logliks += np.asarray(ll)[:n].tolist()
            correct += (out.rewards[:n] > 0).tolist()
        return float(np.mean(correct)), own_correct_loglik(np.array(logliks), np.array(correct))

    def few_shot(self, shots: Sequence[Example], test: Sequence[Example], *, iterations: int = 5,
                 pop_size: int = 32, num_elites: int = 6, seed: int = 0, per_layer: bool = True,
                 mix: str = "sigmoid", score: str = "reference"):
        """CEM over alphas [K, L] (columns in the official matrix order) on the few-shot examples, then the test
        accuracy of the best mixture. Candidates rank by few-shot accuracy, ties by `score`: "reference", the
        mean token log-likelihood of the reference answers on every example, or "official", that of the
        candidate's own correct answers (0 when none). mix: "sigmoid" (mix sigmoid(z)) or "raw" (mix z)."""
        if not shots:
            raise ValueError("few-shot adaptation needs at least one example (--shots); got an empty few-shot set")
        if mix not in MIXES:
            raise ValueError(f"unknown few-shot mixing {mix!r}; expected one of {MIXES}")
        if score not in SCORES:
            raise ValueError(f"unknown few-shot CEM score {score!r}; expected one of {SCORES}")
        experts = [self.experts[n] for n in self.names]
        layers = len(self.wrapper.keys) if per_layer else 1

        def evaluate(alphas):
            model = self.wrapper.patch_mixture(alphas, experts, mix=mix)
            if score == "official":
                return self.own_answer_score(model, shots)
            return self.accuracy(model, shots), self.answer_loglik(model, shots)

        result = compute_cem_interpolation(evaluate, len(experts), layers, iterations=iterations, pop_size=pop_size,
                                           num_elites=num_elites, seed=seed)
        return self.accuracy(self.wrapper.patch_mixture(result.alphas, experts, mix=mix), test), result


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experts", nargs="+", required=True, metavar="NAME=PATH",
                   help="expert files by domain name (e.g. arith=runs/arith/expert.safetensors)")
    p.add_argument("--tasks", nargs="+", help="tasks to evaluate (default: the experts' names)")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--n-test", type=int, default=64, help="test examples per task")
    p.add_argument("--shots", type=int, default=8, help="few-shot examples per task for CEM")
    p.add_argument("--cem-iterations", type=int, default=5)
    p.add_argument("--cem-mix", choices=MIXES, default="sigmoid",
                   help="few-shot mixture: sigmoid = sum_k alpha_k sigmoid(z_k) (default, the masks the experts were "
                        "trained with); raw = sum_k alpha_k z_k used as the mask (the official WeightedCombination)")
    p.add_argument("--cem-score", choices=SCORES, default="reference",
                   help="CEM tie-break among candidates of equal few-shot accuracy: reference = mean token "
                        "log-likelihood of the reference answers (default); official = that of the candidate's own "
                        "correct greedy answers, 0 when none is correct (optim_modules.CEM)")
    p.add_argument("--classifier-train", type=int, default=64, help="labelled prompts per domain for the classifier")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--classify-template", default=DEMO_CLASSIFY_TEMPLATE,
                   help="classification prompt with {labels} and {query}; the answer is \\boxed{domain}")
    p.add_argument("--classify-tokens", type=int, default=20, help="new tokens for the classification answer")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def check_args(p: argparse.ArgumentParser, args) -> None:
    pairs = {}
    for item in args.experts:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            p.error(f"--experts {item!r}: expected NAME=PATH")
        pairs[name] = path
    args.expert_paths = pairs
    args.tasks = args.tasks or list(pairs)
    for name in ("n_test", "cem_iterations", "classifier_train", "batch_size", "classify_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.shots < 0:
        p.error(f"--shots must be >= 0, got {args.shots}")


def evaluate_all(adapter: Adapter, tasks: Sequence[str], strategies: Sequence[str], *, n_test: int, shots: int,
                 cem_iterations: int, classifier_train: int, template: str, classify_tokens: int = 20,
                 seed: int = 0, cem_mix: str = "sigmoid", cem_score: str = "reference") -> dict:
    """{"per_task": {task: {strategy: accuracy}}, "mixed": {strategy: mean over the tasks with an expert},
    "routing_accuracy": {strategy: fraction routed to the task's expert, or to "others" without one},
    "cem": the few-shot settings (mix, score, iterations, shots)}."""
    data = {t: split(get_task(t), n_train=classifier_train, n_valid=shots, n_test=n_test, seed=seed + 1)
            for t in tasks}
    per_task = {t: {} for t in tasks}
    mixed_test = [e for t in tasks for e in data[t][2]]
    mixed, routing = {}, {}
    for t in tasks:
        if "base" in strategies:
            per_task[t]["base"] = adapter.accuracy(adapter.base, data[t][2])
        if "expert" in strategies and t in adapter.experts:
            per_task[t]["expert"] = adapter.accuracy(adapter.model(t), data[t][2])
        if "few-shot" in strategies:
            per_task[t]["few-shot"], _ = adapter.few_shot(data[t][1], data[t][2], iterations=cem_iterations, seed=seed,
                                                          mix=cem_mix, score=cem_score)
    expected = [e.domain if e.domain in adapter.experts else OTHERS for e in mixed_test]
    if "prompt" in strategies:
        routes = adapter.prompt_routes(mixed_test, template=template, max_new_tokens=classify_tokens)
        routing["prompt"] = float(np.mean([r == x for r, x in zip(routes, expected)]))
        _per_task_from_routes(per_task, "prompt", adapter, mixed_test, routes)
    if "classifier" in strategies:
        train = [e if e.domain in adapter.experts else dataclasses.replace(e, domain=OTHERS)
                 for t in tasks for e in data[t][0]]  # tasks without an expert are learnt as "others"
        routes = adapter.classifier_routes(mixed_test, train, seed=seed)
        routing["classifier"] = float(np.mean([r == x for r, x in zip(routes, expected)]))
        _per_task_from_routes(per_task, "classifier", adapter, mixed_test, routes)
    with_expert = [t for t in tasks if t in adapter.experts] or list(tasks)
    for s in STRATEGIES:  # equal test sizes: the mean over tasks is the pooled accuracy
        if all(s in per_task[t] for t in with_expert):
            mixed[s] = float(np.mean([per_task[t][s] for t in with_expert]))
    return {"per_task": per_task, "mixed": mixed, "routing_accuracy": routing,
            "cem": {"mix": cem_mix, "score": cem_score, "iterations": cem_iterations, "shots": shots}}


def _per_task_from_routes(per_task, strategy, adapter, examples, routes):
    for t in per_task:
        idx = [i for i, e in enumerate(examples) if e.domain == t]
        per_task[t][strategy] = adapter.routed_accuracy([examples[i] for i in idx], [routes[i] for i in idx])


def table(results: dict, strategies: Sequence[str]) -> list[dict]:
    rows = [{"task": t, **{s: r.get(s, "") for s in strategies}} for t, r in results["per_task"].items()]
    rows.append({"task": "mixed (mean)", **{s: results["mixed"].get(s, "") for s in strategies}})
    return rows


def run(args, load_wrapper) -> dict:
    wrapper, tokenizer = load_wrapper(args)
    experts = {name: wrapper.load(path, set_current=False) for name, path in args.expert_paths.items()}
    prompts = [e for t in args.tasks for e in get_task(t).examples(64, args.seed)]
    prompt_len = max(len(tokenizer.encode(e.prompt)) for e in prompts) + 2
    adapter = Adapter(wrapper, tokenizer, experts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                      prompt_len=prompt_len)
    results = evaluate_all(adapter, args.tasks, args.strategies, n_test=args.n_test, shots=args.shots,
                           cem_iterations=args.cem_iterations, classifier_train=args.classifier_train,
                           template=args.classify_template, classify_tokens=args.classify_tokens, seed=args.seed,
                           cem_mix=args.cem_mix, cem_score=args.cem_score)
    for row in table(results, args.strategies):
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"routing accuracy: {results['routing_accuracy']}", file=sys.stderr)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(results, indent=2) + "\n")
    return results
