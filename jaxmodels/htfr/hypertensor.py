"""The Hypertensor: an oriented band around a hyperplane with three control vectors.

Signed distance d(x) = n.x + delta with a unit normal n [D]. Inside the band dneg < 0 < dpos the output
interpolates the controls C [O, 3] = [V_neg, V_0, V_pos] with weights w(d) [3]; outside, d is clipped to the
band. `local(x)` returns value = C w [O], w [3], the clipped distance and dvalue/dd = C dw/dd [O], which is zero
unless dneg < d < dpos (open band). Five interpolations, numbered as in INTERPOLATIONS (originals.md section 5.2).

Two implementations of the weights: `reference_weights` (plain Python floats, one tensor, the oracle) and
`interpolation_weights` (jnp, vectorised over any batch of tensors, used by the field).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

INTERPOLATIONS = ("lerp", "hermite", "catmull_rom", "local_poly", "wavelet")


def interpolation_id(name: str) -> int:
    if name not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {name!r}; expected one of {INTERPOLATIONS}")
    return INTERPOLATIONS.index(name)


def _hermite_basis(t):
    t2, t3 = t * t, t * t * t
    h = (2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + t, -2 * t3 + 3 * t2, t3 - t2)  # h00, h10, h01, h11
    dh = (6 * t2 - 6 * t, 3 * t2 - 4 * t + 1, -6 * t2 + 6 * t, 3 * t2 - 2 * t)
    return h, dh


def reference_weights(name: str, d: float, dneg: float, dpos: float, reference_radius: float):
    """Plain-Python weights of one tensor: (w [3], dw/dd [3], clipped distance), as lists of floats."""
    dcl = min(max(d, dneg), dpos)
    inside = dneg < d < dpos
    pos = dcl >= 0
    if name == "lerp":
        if pos:
            t = dcl / dpos
            w, dw = [0.0, 1 - t, t], [0.0, -1 / dpos, 1 / dpos]
        else:
            s = (dcl - dneg) / -dneg
            w, dw = [1 - s, s, 0.0], [-1 / -dneg, 1 / -dneg, 0.0]
    elif name == "hermite":
        if pos:
            t, inv, rho = dcl / dpos, 1 / dpos, dpos / dneg
            (h00, h10, h01, h11), (g00, g10, g01, g11) = _hermite_basis(t)
            w = [0.5 * h10 * rho, h00 - 0.5 * h10 * rho - 0.5 * h10 - h11, 0.5 * h10 + h01 + h11]
            dw = [0.5 * g10 * rho, g00 - 0.5 * g10 * rho - 0.5 * g10 - g11, 0.5 * g10 + g01 + g11]
        else:
            t, inv, rho = (dcl - dneg) / -dneg, 1 / -dneg, -dneg / dpos
            (h00, h10, h01, h11), (g00, g10, g01, g11) = _hermite_basis(t)
            w = [h00 - h10 - 0.5 * h11, h10 + h01 + 0.5 * h11 + 0.5 * h11 * rho, 0.5 * h11 * rho]
            dw = [g00 - g10 - 0.5 * g11, g10 + g01 + 0.5 * g11 + 0.5 * g11 * rho, 0.5 * g11 * rho]
        dw = [v * inv for v in dw]
    elif name == "catmull_rom":
        if pos:
            t, inv = dcl / dpos, 1 / dpos
            w = [0.5 * (-t + 2 * t * t - t ** 3), 0.5 * (2 - 4 * t * t + 2 * t ** 3), 0.5 * (t + 2 * t * t - t ** 3)]
            dw = [0.5 * (-1 + 4 * t - 3 * t * t), 0.5 * (-8 * t + 6 * t * t), 0.5 * (1 + 4 * t - 3 * t * t)]
        else:
            t, inv = (dcl - dneg) / -dneg, 1 / -dneg
            w = [0.5 * (2 - 2 * t - t * t + t ** 3), 0.5 * (2 * t + 2 * t * t - 2 * t ** 3), 0.5 * (-t * t + t ** 3)]
            dw = [0.5 * (-2 - 2 * t + 3 * t * t), 0.5 * (2 + 4 * t - 6 * t * t), 0.5 * (-2 * t + 3 * t * t)]
        dw = [v * inv for v in dw]
    elif name == "local_poly":
        scale = dpos if pos else -dneg
        t = min(max(dcl / scale, -1.0), 1.0)
        w = [-0.5 * t + 0.5 * t * t, 1 - t * t, 0.5 * t + 0.5 * t * t]
        dw = [(-0.5 + t) / scale, -2 * t / scale, (0.5 + t) / scale]
    elif name == "wavelet":
        scale = max(dpos if pos else -dneg, reference_radius)
        raw = dcl / scale
        t = min(max(raw, -1.0), 1.0)
        if t < 0:
            u = 1 + 2 * t
            w_neg, w_pos = min(max(u, 0.0), 1.0), 0.0
            dneg_w, dpos_w = (2 / scale if 0 < u < 1 and -1 < raw else 0.0), 0.0
        else:
            u = 1 - 2 * t
            w_neg, w_pos = 0.0, min(max(u, 0.0), 1.0)
            dneg_w, dpos_w = 0.0, (-2 / scale if 0 < u < 1 and raw < 1 else 0.0)
        w = [w_neg, 1 - w_neg - w_pos, w_pos]
        dw = [dneg_w, -dneg_w - dpos_w, dpos_w]
    else:
        raise ValueError(f"unknown interpolation {name!r}; expected one of {INTERPOLATIONS}")
    if not inside:
        dw = [0.0, 0.0, 0.0]
    return w, dw, dcl


def interpolation_weights(kind, d, dneg, dpos, reference_radius):
    """Vectorised weights. All inputs broadcast to one shape [...] (kind: int ids of INTERPOLATIONS).

    Returns (w [..., 3], dw/dd [..., 3], clipped distance [...]); same formulas as `reference_weights`.
    """
    d = jnp.asarray(d, jnp.float32)
    dcl = jnp.clip(d, dneg, dpos)
    inside = (d > dneg) & (d < dpos)
    pos = dcl >= 0
    one = jnp.ones_like(dcl)
    zero = jnp.zeros_like(dcl)
    # side-dependent coordinate t in [0, 1] and dt/dd, shared by lerp, hermite and catmull_rom
    t = jnp.where(pos, dcl / dpos, (dcl - dneg) / -dneg)
    inv = jnp.where(pos, 1 / dpos, 1 / -dneg)

    lerp_w = jnp.where(pos[..., None], jnp.stack([zero, 1 - t, t], -1), jnp.stack([1 - t, t, zero], -1))
    lerp_dw = jnp.where(pos[..., None], jnp.stack([zero, -one, one], -1), jnp.stack([-one, one, zero], -1))

    (h00, h10, h01, h11), (g00, g10, g01, g11) = _hermite_basis(t)
    rho_p, rho_n = dpos / dneg, -dneg / dpos
    herm_w = jnp.where(pos[..., None],
                       jnp.stack([0.5 * h10 * rho_p, h00 - 0.5 * h10 * rho_p - 0.5 * h10 - h11,
                                  0.5 * h10 + h01 + h11], -1),
                       jnp.stack([h00 - h10 - 0.5 * h11, h10 + h01 + 0.5 * h11 + 0.5 * h11 * rho_n,
                                  0.5 * h11 * rho_n], -1))
    herm_dw = jnp.where(pos[..., None],
                        jnp.stack([0.5 * g10 * rho_p, g00 - 0.5 * g10 * rho_p - 0.5 * g10 - g11,
                                   0.5 * g10 + g01 + g11], -1),
                        jnp.stack([g00 - g10 - 0.5 * g11, g10 + g01 + 0.5 * g11 + 0.5 * g11 * rho_n,
                                   0.5 * g11 * rho_n], -1))

    t2, t3 = t * t, t * t * t
    cat_w = 0.5 * jnp.where(pos[..., None], jnp.stack([-t + 2 * t2 - t3, 2 - 4 * t2 + 2 * t3, t + 2 * t2 - t3], -1),
                            jnp.stack([2 - 2 * t - t2 + t3, 2 * t + 2 * t2 - 2 * t3, -t2 + t3], -1))
    cat_dw = 0.5 * jnp.where(pos[..., None], jnp.stack([-1 + 4 * t - 3 * t2, -8 * t + 6 * t2, 1 + 4 * t - 3 * t2], -1),
                             jnp.stack([-2 - 2 * t + 3 * t2, 2 + 4 * t - 6 * t2, -2 * t + 3 * t2], -1))

    scale = jnp.where(pos, dpos, -dneg)
    tp = jnp.clip(dcl / scale, -1.0, 1.0)
    poly_w = jnp.stack([-0.5 * tp + 0.5 * tp * tp, 1 - tp * tp, 0.5 * tp + 0.5 * tp * tp], -1)
    poly_dw = jnp.stack([-0.5 + tp, -2 * tp, 0.5 + tp], -1) / scale[..., None]

    wscale = jnp.maximum(scale, reference_radius)
    raw = dcl / wscale
    tw = jnp.clip(raw, -1.0, 1.0)
    u = jnp.where(tw < 0, 1 + 2 * tw, 1 - 2 * tw)
    wu = jnp.clip(u, 0.0, 1.0)
    du = jnp.where((u > 0) & (u < 1) & (raw > -1) & (raw < 1), jnp.where(tw < 0, 2.0, -2.0) / wscale, 0.0)
    w_neg, w_pos = jnp.where(tw < 0, wu, 0.0), jnp.where(tw < 0, 0.0, wu)
    dn, dp = jnp.where(tw < 0, du, 0.0), jnp.where(tw < 0, 0.0, du)
    wav_w = jnp.stack([w_neg, 1 - w_neg - w_pos, w_pos], -1)
    wav_dw = jnp.stack([dn, -dn - dp, dp], -1)

    all_w = jnp.stack([lerp_w, herm_w, cat_w, poly_w, wav_w], -2)  # [..., 5, 3]
    all_dw = jnp.stack([lerp_dw * inv[..., None], herm_dw * inv[..., None], cat_dw * inv[..., None],
                        poly_dw, wav_dw], -2)
    pick = (jnp.asarray(kind)[..., None] == jnp.arange(len(INTERPOLATIONS)))[..., None]  # [..., 5, 1]
    w = jnp.sum(jnp.where(pick, all_w, 0.0), axis=-2)
    dw = jnp.sum(jnp.where(pick, all_dw, 0.0), axis=-2)
    return w, jnp.where(inside[..., None], dw, 0.0), dcl


@dataclasses.dataclass(frozen=True)
class LocalResult:
    """value [O], weights [3], clipped_distance, distance_derivative [O]."""

    value: np.ndarray
    weights: np.ndarray
    clipped_distance: float
    distance_derivative: np.ndarray


class Hypertensor:
    """One hypertensor: n [D] (renormalised), delta, dneg < 0 < dpos, C [O, 3], tau > 0, an interpolation.

    State is float32 by default (the original stored float16; pass dtype=np.float16 for that).
    """

    def __init__(self, n, delta, dneg, dpos, C, tau=1.0, interpolation="lerp", reference_radius=5.0,
                 dtype=np.float32):
        n = np.asarray(n, np.float64)
        if n.ndim != 1 or n.size == 0:
            raise ValueError(f"Hypertensor: normal must have shape [D] with D >= 1, got {n.shape}")
        if not np.all(np.isfinite(n)):
            raise ValueError("Hypertensor: normal contains NaN or inf")
        norm = float(np.linalg.norm(n))
        if norm == 0.0:
            raise ValueError("Hypertensor: normal has zero length; expected a non-zero vector of shape [D]")
        normal = (n / norm).astype(dtype)
        if not np.any(normal):
            raise ValueError(f"Hypertensor: normal is zero after renormalising and casting to {np.dtype(dtype)}")
        dneg, dpos, tau, delta = float(dneg), float(dpos), float(tau), float(delta)
        if not (dneg < 0 < dpos):
            raise ValueError(f"Hypertensor: band must satisfy dneg < 0 < dpos, got dneg={dneg}, dpos={dpos}")
        if not (tau > 0) or not math.isfinite(delta):
            raise ValueError(f"Hypertensor: tau must be > 0 and delta finite, got tau={tau}, delta={delta}")
        C = np.asarray(C)
        if C.ndim != 2 or C.shape[1] != 3:
            raise ValueError(f"Hypertensor: controls C must have shape [O, 3], got {C.shape}")
        interpolation_id(interpolation)
        self.n, self.delta, self.dneg, self.dpos = normal, float(np.asarray(delta, dtype)), dneg, dpos
        self.C, self.tau, self.interpolation = C.astype(dtype), tau, interpolation
        self.reference_radius, self.dtype = float(reference_radius), dtype

    @property
    def input_dim(self) -> int:
        return int(self.n.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.C.shape[0])

    def distance(self, x) -> float:
        """Signed distance n.x + delta of one input x [D], in float32."""
        x = np.asarray(x, np.float32)
        if x.shape != self.n.shape:
            raise ValueError(f"Hypertensor.distance: x of shape {x.shape}, expected [D] = {self.n.shape}")
        return float(np.dot(self.n.astype(np.float32), x) + np.float32(self.delta))

    def local(self, x) -> LocalResult:
        """value [O], weights [3], clipped distance and dvalue/dd [O] at one input x [D]."""
        d = self.distance(x)
        w, dw, dcl = reference_weights(self.interpolation, d, self.dneg, self.dpos, self.reference_radius)
        C = self.C.astype(np.float32)
        w, dw = np.asarray(w, np.float32), np.asarray(dw, np.float32)
        return LocalResult(value=(C @ w).astype(self.dtype), weights=w.astype(self.dtype), clipped_distance=dcl,
                           distance_derivative=(C @ dw).astype(self.dtype))

    def to_tuple(self) -> tuple:
        """(n, delta, dneg, dpos, C, tau, interpolation, reference_radius)."""
        return (self.n.copy(), self.delta, self.dneg, self.dpos, self.C.copy(), self.tau, self.interpolation,
                self.reference_radius)

    @classmethod
    def from_tuple(cls, values, dtype=np.float32) -> "Hypertensor":
        """From (n, delta, dneg, dpos, C, tau) or (n, delta, dneg, dpos, C, tau, interpolation, reference_radius)."""
        if len(values) not in (6, 8):
            raise ValueError(f"Hypertensor.from_tuple: expected a 6- or 8-tuple, got {len(values)} items")
        return cls(*values, dtype=dtype)

    def clone(self) -> "Hypertensor":
        return Hypertensor.from_tuple(self.to_tuple(), dtype=self.dtype)
