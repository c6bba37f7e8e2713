"""The dots of a compiled XLA module, run again with nothing else: the floor its matmuls set.

`dot_specs(hlo)` reads every float32 dot of an optimised HLO module (the text of
`jax.jit(f).lower(...).compile()`): its operand shapes and dimension numbers.
`dots_only(specs)` builds random float32 operands and one jitted function computing exactly those dots, in one
program (XLA may run independent dots at the same time, as it does in the module they came from).
`torch_dots(specs)` runs the same products in PyTorch, one after another (each through `torch.einsum`, which hands
a transposed operand to its matmul library as a strided view): the matmuls alone, at PyTorch's rate.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_COMPUTATION = re.compile(r"\n(?:ENTRY )?%?[\w.\-]+ \(([^)]*)\) -> [^{]*\{\n(.*?)\n\}", re.S)
_PARAMETER = re.compile(r"([\w.\-]+): f32\[([\d,]*)\]")
_DEFINITION = re.compile(r"%?([\w.\-]+) = f32\[([\d,]*)\]")
_DOT = re.compile(r"= f32\[[\d,]*\]\S* dot\(%?([\w.\-]+), %?([\w.\-]+)\)([^\n]*)")


class DotSpec(NamedTuple):
    lhs: tuple[int, ...]
    rhs: tuple[int, ...]
    contracting: tuple[tuple[int, ...], tuple[int, ...]]
    batch: tuple[tuple[int, ...], tuple[int, ...]]

    @property
    def rhs_free(self) -> list[int]:
        """The rhs dimensions that are neither contracted nor batch: the last of the output's dimensions."""
        return [j for j in range(len(self.rhs)) if j not in self.contracting[1] and j not in self.batch[1]]

    @property
    def flops(self) -> int:
        """2 x multiply-adds: every lhs element meets every free rhs column."""
        return 2 * int(np.prod(self.lhs)) * int(np.prod([self.rhs[j] for j in self.rhs_free]))

    @property
    def einsum(self) -> str:
        """The product as an einsum equation, output dimensions in dot_general's order (batch, lhs free, rhs free)."""
        lhs = [chr(ord("a") + i) for i in range(len(self.lhs))]
        rhs = [chr(ord("n") + i) for i in range(len(self.rhs))]
        for i, j in zip(*self.contracting):
            rhs[j] = lhs[i]
        for i, j in zip(*self.batch):
            rhs[j] = lhs[i]
        shared = set(self.contracting[0]) | set(self.batch[0])
        out = ([lhs[i] for i in self.batch[0]] + [c for i, c in enumerate(lhs) if i not in shared]
               + [rhs[j] for j in self.rhs_free])
        return f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"


def _dims(attrs: str, name: str) -> tuple[int, ...]:
    found = re.search(name + r"=\{([\d,]*)\}", attrs)
    return tuple(int(d) for d in found.group(1).split(",") if d) if found else ()


def dot_specs(hlo: str) -> list[DotSpec]:
    """Every float32 dot of `hlo` whose operand shapes its computation names, in text order."""
    specs = []
    for computation in _COMPUTATION.finditer(hlo):
        shapes = {name: tuple(int(d) for d in dims.split(",") if d)
                  for name, dims in _PARAMETER.findall(computation.group(1)) + _DEFINITION.findall(computation.group(2))}
        for lhs, rhs, attrs in _DOT.findall(computation.group(2)):
            if lhs in shapes and rhs in shapes:
                specs.append(DotSpec(shapes[lhs], shapes[rhs],
                                     (_dims(attrs, "lhs_contracting_dims"), _dims(attrs, "rhs_contracting_dims")),
                                     (_dims(attrs, "lhs_batch_dims"), _dims(attrs, "rhs_batch_dims"))))
    return specs


def random_operands(specs: list[DotSpec], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Standard-normal float32 (lhs, rhs) numpy pairs of the shapes `specs` name."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s.lhs, dtype=np.float32), rng.standard_normal(s.rhs, dtype=np.float32))
            for s in specs]


def dots_only(specs: list[DotSpec], seed: int = 0):
    """(fn, operands): fn(operands) computes the dots of `specs` and nothing else, jitted."""
    operands = [(jnp.asarray(a), jnp.asarray(b)) for a, b in random_operands(specs, seed)]

    @jax.jit
    def run(operands):
        return [jax.lax.dot_general(a, b, (s.contracting, s.batch)) for (a, b), s in zip(operands, specs)]

    return run, operands


def torch_dots(specs: list[DotSpec], seed: int = 0):
    """(fn, operands) as `dots_only`, in PyTorch: fn(operands) runs each product with torch.einsum in turn."""
    import torch

    operands = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in random_operands(specs, seed)]
    equations = [s.einsum for s in specs]

    @torch.no_grad()
    def run(operands):
        return [torch.einsum(eq, a, b) for eq, (a, b) in zip(equations, operands)]

    return run, operands
