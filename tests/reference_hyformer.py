"""A plain NumPy Hyformer forward (float64), written from the original's equations, for parity tests.

Independent of jaxmodels: separate q/k/v matmuls, explicit loops over heads, interleaved RoPE pairs,
boolean masks built by hand.
"""

from __future__ import annotations

import numpy as np


def rms_norm(x, w, eps):
    return w * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def rope_interleaved(x, positions):
    """x [B, T, N, H]; positions [B, T]; pairs (2i, 2i+1) rotated by pos * 10000^(-2i/H)."""
    h = x.shape[-1]
    out = np.empty_like(x)
    for i in range(h // 2):
        theta = 10000.0 ** (-2.0 * i / h)
        ang = positions[..., None] * theta  # [B, T, 1]
        a, b = x[..., 2 * i], x[..., 2 * i + 1]
        out[..., 2 * i] = a * np.cos(ang) - b * np.sin(ang)
        out[..., 2 * i + 1] = b * np.cos(ang) + a * np.sin(ang)
    return out


def silu(x):
    return x / (1.0 + np.exp(-x))


def forward(p: dict, cfg, ids, *, causal: bool, attention_mask=None):
    """Returns (hidden [B, T, D] after final norm, token logits [B, T, V])."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    b, t = ids.shape
    n, hd = cfg.n_heads, cfg.d_model // cfg.n_heads
    valid = np.ones((b, t), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.float64)
    allowed = np.repeat(valid[:, None, :], t, axis=1)  # [B, T(query), T(key)]
    if causal:
        allowed &= np.tril(np.ones((t, t), bool))[None]
    x = p["embed.weight"][ids]
    for layer in range(cfg.n_layers):
        pre = f"blocks.{layer}."
        h = rms_norm(x, p[pre + "input_norm.weight"], cfg.eps)
        q = (h @ p[pre + "attn.q_proj.kernel"].reshape(cfg.d_model, -1)).reshape(b, t, n, hd)
        k = (h @ p[pre + "attn.k_proj.kernel"].reshape(cfg.d_model, -1)).reshape(b, t, n, hd)
        v = (h @ p[pre + "attn.v_proj.kernel"].reshape(cfg.d_model, -1)).reshape(b, t, n, hd)
        q, k = rope_interleaved(q, positions), rope_interleaved(k, positions)
        heads = np.zeros((b, t, n, hd))
        for head in range(n):
            s = q[:, :, head] @ k[:, :, head].transpose(0, 2, 1) / np.sqrt(hd)  # [B, T, T]
            s = np.where(allowed, s, -np.inf)
            s = s - s.max(-1, keepdims=True)
            w = np.exp(s)
            w /= w.sum(-1, keepdims=True)
            heads[:, :, head] = w @ v[:, :, head]
        x = x + heads.reshape(b, t, -1) @ p[pre + "attn.o_proj.kernel"].reshape(-1, cfg.d_model)
        h = rms_norm(x, p[pre + "post_attn_norm.weight"], cfg.eps)
        gate = h @ p[pre + "mlp.gate_proj.kernel"] + p[pre + "mlp.gate_proj.bias"]
        up = h @ p[pre + "mlp.up_proj.kernel"] + p[pre + "mlp.up_proj.bias"]
        x = x + (silu(gate) * up) @ p[pre + "mlp.down_proj.kernel"] + p[pre + "mlp.down_proj.bias"]
    x = layer_norm(x, p["final_norm.weight"], p["final_norm.bias"], cfg.eps)
    return x, x @ p["embed.weight"].T
