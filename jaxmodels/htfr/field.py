"""The field's math as pure jitted functions over a FieldState (originals.md sections 5.3 and 5.4).

Letters: B batch, T samples in a sequential chunk, D input width, M hypertensors, O output width, K top-k
(slots), J = 3 controls.

Selection (`select`), per sample with signed distances d [M]:
1. candidates: the min(k * candidate_multiplier, M) anchors a_i = -delta_i n_i nearest to x in L2. With unit
   normals ||x - a_i||^2 = ||x||^2 + 2 delta_i d_i - delta_i^2, so the ranking comes from d for free (exact,
   where the original used HNSW or a float16 scan);
2. local = |d| <= locality_radius; the pool is the local candidates when there are at least k of them, else
   every local tensor (the original's full scan), else every tensor (its fallback list);
3. active = the min(k, M) pool members of smallest |d|, sorted by |d|; `valid` marks filled slots.

Update (`train_sequential`, `train_batched`), with e = dL/dyhat, locality weights lam, interpolation weights w,
dw = dw/dd: C_i -= eta lam_i e w_i^T; for d strictly inside the band, c_i = e . (C_i dw_i) (pre-update C),
n_i <- normalize(n_i - eta_g lam_i c_i x), delta_i -= eta_g lam_i c_i. Then usage statistics, the error queue and
relocation of the least-used tensor. The prediction returned is the one before the update.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmodels.htfr.config import HTFRConfig
from jaxmodels.htfr.hypertensor import interpolation_weights
from jaxmodels.htfr.state import FieldState

_F32 = jnp.float32


def locality_weights(absd, taus, valid, mode: str, epsilon: float):
    """absd, taus, valid of shape [..., K] -> weights [..., K] summing to 1 over valid slots."""
    if mode == "softmax":
        z = jnp.where(valid, -absd / (taus + 1e-12), -jnp.inf)
        z = z - jnp.max(z, axis=-1, keepdims=True)
        e = jnp.where(valid, jnp.exp(z), 0.0)
    else:
        e = jnp.where(valid, 1.0 / (absd + epsilon), 0.0)
    return e / jnp.sum(e, axis=-1, keepdims=True)


def select(d, deltas, k: int, cfg: HTFRConfig):
    """d [M], deltas [M] -> (idx [K] int32, valid [K] bool), K = min(k, M), sorted by |d|."""
    m = d.shape[0]
    n_cand = min(k * cfg.candidate_multiplier, m)
    _, cand = jax.lax.top_k(-(2.0 * deltas * d - deltas * deltas), n_cand)
    is_cand = jnp.zeros(m, bool).at[cand].set(True)
    absd = jnp.abs(d)
    local = absd <= cfg.radius
    n_local_cand = jnp.sum(is_cand & local)
    pool = jnp.where(n_local_cand >= k, is_cand & local, jnp.where(jnp.any(local), local, True))
    vals, idx = jax.lax.top_k(jnp.where(pool, -absd, -jnp.inf), min(k, m))
    return idx.astype(jnp.int32), vals > -jnp.inf


def _active_light(state: FieldState, d, k: int, cfg: HTFRConfig):
    """The active set of one sample: idx, valid [K], |d| [K], lam [K], w [K, 3], dw [K, 3]."""
    idx, valid = select(d, state.deltas, k, cfg)
    dsel = d[idx]
    w, dw, _ = interpolation_weights(state.interp[idx], dsel, state.dneg[idx], state.dpos[idx],
                                     state.ref_radius[idx])
    absd = jnp.abs(dsel)
    lam = locality_weights(absd, state.taus[idx], valid, cfg.weight_mode, cfg.epsilon)
    return idx, valid, absd, lam, w, dw


def _active(state: FieldState, d, k: int, cfg: HTFRConfig):
    """_active_light plus the gathered controls C [K, 3, O]."""
    idx, valid, absd, lam, w, dw = _active_light(state, d, k, cfg)
    ck = state.controls.at[idx].get(mode="promise_in_bounds", unique_indices=True)  # top_k indices are distinct
    return idx, valid, absd, lam, w, dw, ck.astype(_F32)


def loss_and_error(yhat, y, loss: str):
    """yhat [O]; y [O] (mse or probabilities) or an int label [] -> (loss [], e = dL/dyhat [O])."""
    if loss == "mse":
        e = yhat - y
        return jnp.mean(e * e), e
    logp = jax.nn.log_softmax(yhat)
    if jnp.ndim(y) == 0:
        target = jax.nn.one_hot(y, yhat.shape[0], dtype=_F32)
        return -logp[y], jnp.exp(logp) - target
    return -jnp.sum(y * logp), jnp.exp(logp) - y


@functools.partial(jax.jit, static_argnames=("k", "cfg"))
def predict(state: FieldState, x, *, k: int, cfg: HTFRConfig):
    """x [B, D] -> predictions [B, O] (pure: the state is not touched)."""
    d = x.astype(_F32) @ state.normals.astype(_F32).T + state.deltas  # [B, M]

    def one(di):
        idx, valid, _, lam, w, _, ck = _active(state, di, k, cfg)
        return (lam[:, None] * w).reshape(-1) @ ck.reshape(-1, state.output_dim)  # [K * 3] @ [K * 3, O]

    return jax.vmap(one)(d)


@functools.partial(jax.jit, static_argnames=("k", "cfg", "loss"))
def evaluate(state: FieldState, x, y, *, k: int, cfg: HTFRConfig, loss: str):
    """x [B, D], targets y -> (predictions [B, O], losses [B]) without any update."""
    yhat = predict(state, x, k=k, cfg=cfg)
    losses, _ = jax.vmap(lambda a, b: loss_and_error(a, b, loss))(yhat, y)
    return yhat, losses


def relocation_draw(key, r, d: int, o: int):
    """The random part of relocation number r: (unit normal [D], span [], jittered controls [3, O])."""
    k1, k2, k3 = jax.random.split(jax.random.fold_in(key, r), 3)
    n = jax.random.normal(k1, (d,), _F32)
    n = n / jnp.linalg.norm(n)
    span = jax.random.uniform(k2, (), _F32, 0.05, 0.5)
    return n, span, 1e-3 * jax.random.normal(k3, (3, o), _F32)


def _bookkeep(state: FieldState, idx, valid, absd, loss, x, live, cfg: HTFRConfig):
    """Usage statistics, error queue and relocation after one training sample (a no-op unless `live`).

    Only single rows are written (masked), never whole arrays under a condition, so XLA updates in place.
    Returns (state, do, idle, n): whether tensor `idle` was relocated, and its new normal n [D].
    """
    dec = cfg.usage_decay
    dt = state.usage.dtype
    valid = valid & live
    u, a, tr = state.usage[idx], state.avg_dist[idx], state.loss_trace[idx]
    state = state.replace(
        usage=state.usage.at[idx].set(jnp.where(valid, dec * u + 1.0, u).astype(dt)),
        avg_dist=state.avg_dist.at[idx].set(jnp.where(valid, dec * a + (1 - dec) * absd, a).astype(dt)),
        loss_trace=state.loss_trace.at[idx].set(jnp.where(valid, dec * tr + (1 - dec) * loss, tr).astype(dt)))

    push = live & (loss >= cfg.error_threshold)
    slot = jnp.argmin(state.queue_stamp)  # an empty slot (-1) first, else the oldest entry (deque maxlen)
    qx = state.queue_x
    state = state.replace(
        queue_x=qx.at[slot].set(jnp.where(push, x.astype(qx.dtype), qx[slot])),
        queue_loss=state.queue_loss.at[slot].set(jnp.where(push, loss, state.queue_loss[slot])),
        queue_stamp=state.queue_stamp.at[slot].set(jnp.where(push, state.pushes, state.queue_stamp[slot])),
        pushes=state.pushes + push.astype(jnp.int32))

    filled = state.queue_stamp >= 0
    do = live & (jnp.sum(filled) >= cfg.relocation_interval)
    idle = jnp.argmin(state.usage)
    best = jnp.max(jnp.where(filled, state.queue_loss, -jnp.inf))
    ties = filled & (state.queue_loss == best)
    pop = jnp.argmin(jnp.where(ties, state.queue_stamp, jnp.iinfo(jnp.int32).max))  # max loss, oldest on ties
    n, span, cj = relocation_draw(state.key, state.relocations, state.input_dim, state.output_dim)
    sample = state.queue_x[pop].astype(_F32)

    def put(arr, value):
        return arr.at[idle].set(jnp.where(do, jnp.asarray(value, arr.dtype), arr[idle]))

    state = state.replace(
        normals=put(state.normals, n), deltas=put(state.deltas, -(n @ sample)), dneg=put(state.dneg, -span),
        dpos=put(state.dpos, span), controls=put(state.controls, cj), usage=put(state.usage, 1.0),
        avg_dist=put(state.avg_dist, 0.0), loss_trace=put(state.loss_trace, 0.0),
        queue_stamp=state.queue_stamp.at[pop].set(jnp.where(do, -1, state.queue_stamp[pop])),
        relocations=state.relocations + do.astype(jnp.int32))
    return state, do, idle, n


def _blocks(k: int) -> int:
    """Active slots per block: blocks of [KB, 3, O] control rows stay in cache between reading and writing."""
    for kb in (128, 64, 32):
        if k % kb == 0 and k > kb:
            return kb
    return k


def _blocked_predict(controls, idx, v):
    """sum_i v[i] . C[idx[i]] -> [O], block by block: controls [M, 3, O], idx [K], v [K, 3]."""
    kb = _blocks(idx.shape[0])
    ib, vb = idx.reshape(-1, kb), v.reshape(-1, kb * 3)

    def body(b, acc):
        ck = controls.at[ib[b]].get(mode="promise_in_bounds", unique_indices=True)  # [KB, 3, O]
        return acc + vb[b] @ ck.reshape(kb * 3, -1).astype(_F32)

    return jax.lax.fori_loop(0, ib.shape[0], body, jnp.zeros(controls.shape[2], _F32))


def _blocked_update(controls, idx, u, e):
    """C[idx[i]] += u[i] e^T for idx [K], u [K, 3], e [O]; also returns e . C[idx[i]][j] before the update
    [K, 3]. Each block of rows is read once, used for both, and written back while still in cache."""
    kb = _blocks(idx.shape[0])
    ib, ub = idx.reshape(-1, kb), u.reshape(-1, kb, 3)

    def body(b, carry):
        controls, ec = carry
        ck = controls.at[ib[b]].get(mode="promise_in_bounds", unique_indices=True).astype(_F32)  # [KB, 3, O]
        ec = ec.at[b].set(ck.reshape(kb * 3, -1) @ e)
        new = (ck + ub[b][:, :, None] * e[None, None, :]).astype(controls.dtype)
        return controls.at[ib[b]].set(new, mode="promise_in_bounds", unique_indices=True), ec

    controls, ec = jax.lax.fori_loop(0, ib.shape[0], body, (controls, jnp.zeros((ib.shape[0], kb * 3), _F32)))
    return controls, ec.reshape(-1, 3)


@functools.partial(jax.jit, static_argnames=("cfg", "loss"), donate_argnums=(0,))
def train_sequential(state: FieldState, x, y, mask, *, cfg: HTFRConfig, loss: str):
    """Exact per-sample online updates, in order, for one chunk: x [T, D], targets y [T, ...], mask [T] bool
    (False = padding, a no-op) -> (state, predictions before each update [T, O], losses [T]).

    The normals are kept as n_i = alpha_i (N0_i - sum_s beta[i, s] x_s) during the chunk, so distances cost
    alpha * (G0[t] - beta . Gram[:, t]) with G0 = X N0^T [T, M] and Gram = X X^T [T, T] computed once as
    matmuls, instead of reading all of N [M, D] per sample; N is materialised once at the end of the chunk.
    This is algebraically the per-sample rule. The controls are updated in place, active rows only. (Keeping
    them low rank as well was measured slower: the end-of-chunk product costs more than the row updates.)
    """
    x = x.astype(_F32)
    t_len = x.shape[0]
    k = cfg.train_top_k
    m = state.size
    g0 = x @ state.normals.astype(_F32).T  # [T, M]
    gram = x @ x.T  # [T, T]
    low_rank = (jnp.ones(m, _F32), jnp.zeros((m, t_len), _F32))  # alpha [M], beta [M, T]

    def step(carry, inp):
        state, g0, (alpha, beta) = carry
        t, xt, yt, live = inp
        proj = alpha * (g0[t] - beta @ gram[:, t])  # [M], n_i . x_t
        d = proj + state.deltas
        idx, valid, absd, lam, w, dw = _active_light(state, d, k, cfg)
        v = lam[:, None] * w  # [K, 3]
        yhat = _blocked_predict(state.controls, idx, v)
        l, e = loss_and_error(yhat, yt, loss)
        upd = valid & live
        controls, ec = _blocked_update(state.controls, idx, jnp.where(upd[:, None], -cfg.eta * v, 0.0), e)
        c = jnp.sum(ec * dw, axis=-1)  # e . (C_i dw_i) with the pre-update C, [K]
        moves = upd & jnp.any(dw != 0, axis=-1)
        coef = jnp.where(moves, cfg.eta_g * lam * c, 0.0)  # [K]
        p = proj[idx]
        r = jnp.sqrt(jnp.maximum(1.0 - 2.0 * coef * p + coef * coef * gram[t, t], 1e-30))  # ||n_i - coef x_t||
        a_old = alpha[idx]
        alpha = alpha.at[idx].set(jnp.where(moves, a_old / r, a_old))
        beta = beta.at[idx, t].set(jnp.where(moves, coef / a_old, 0.0))
        state = state.replace(controls=controls, deltas=state.deltas.at[idx].add((-coef).astype(state.deltas.dtype)))
        state, do, idle, n = _bookkeep(state, idx, valid, absd, l, xt, live, cfg)
        # a relocated tensor restarts from its new normal (written into N0 by _bookkeep): reset its terms
        g0 = g0.at[:, idle].set(jnp.where(do, x @ n, g0[:, idle]))
        alpha = alpha.at[idle].set(jnp.where(do, 1.0, alpha[idle]))
        beta = beta.at[idle].set(jnp.where(do, 0.0, beta[idle]))
        return (state, g0, (alpha, beta)), (yhat, l)

    (state, _, (alpha, beta)), (yhat, losses) = jax.lax.scan(
        step, (state, g0, low_rank), (jnp.arange(t_len), x, y, mask))
    # beta is [M, T] so this product has its contracting axis last (XLA:CPU's fast dot path)
    normals = alpha[:, None] * (state.normals.astype(_F32) - beta @ x)  # [M, D]
    return state.replace(normals=normals.astype(state.normals.dtype)), yhat, losses


@functools.partial(jax.jit, static_argnames=("cfg", "loss"), donate_argnums=(0,))
def train_batched(state: FieldState, x, y, mask, *, cfg: HTFRConfig, loss: str):
    """One mini-batch step: every sample of x [B, D] is predicted from the same state, the B per-sample updates
    are summed and applied at once, then the bookkeeping runs sample by sample. Returns (state, [B, O], [B])."""
    x = x.astype(_F32)
    b, m = x.shape[0], state.size
    k = cfg.train_top_k
    d = x @ state.normals.astype(_F32).T + state.deltas  # [B, M]
    idx, valid, absd, lam, w, dw = jax.vmap(lambda di: _active_light(state, di, k, cfg))(d)
    valid = valid & mask[:, None]
    rows = jnp.arange(b)[:, None]
    # scattered [M, ..., B] (batch last) so every product below has its contracting axis last (fast dot path)
    vt = jnp.zeros((m, 3, b), _F32).at[idx, :, rows].add(jnp.where(valid[..., None], lam[..., None] * w, 0.0))
    controls = state.controls.astype(_F32).reshape(m * 3, -1)  # [M * 3, O]
    yhat = jnp.einsum("RB,RO->BO", vt.reshape(m * 3, b), controls)
    losses, e = jax.vmap(lambda a, t: loss_and_error(a, t, loss))(yhat, y)
    e = jnp.where(mask[:, None], e, 0.0)
    ec = (controls @ e.T).reshape(m, 3, b)  # e_b . C_i[j] for every tensor
    c = jnp.sum(ec[idx, :, rows] * dw, axis=-1)  # [B, K]
    moves = valid & jnp.any(dw != 0, axis=-1)
    coef = jnp.zeros((m, b), _F32).at[idx, rows].add(jnp.where(moves, cfg.eta_g * lam * c, 0.0))  # [M, B]
    normals = state.normals.astype(_F32) - coef @ x
    normals = normals / jnp.linalg.norm(normals, axis=1, keepdims=True)
    controls = (controls - cfg.eta * vt.reshape(m * 3, b) @ e).reshape(m, 3, -1)
    state = state.replace(normals=normals.astype(state.normals.dtype),
                          deltas=(state.deltas - jnp.sum(coef, axis=1)).astype(state.deltas.dtype),
                          controls=controls.astype(state.controls.dtype))

    def keep(s, inp):
        i, vd, ad, l, xt, live = inp
        return _bookkeep(s, i, vd, ad, l, xt, live, cfg)[0], None

    state, _ = jax.lax.scan(keep, state, (idx, valid, absd, losses, x, mask))
    return state, yhat, losses

