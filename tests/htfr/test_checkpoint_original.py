"""The original HTFT `.npz` in its real on-disk format (written here key by key with plain NumPy): every scalar,
numbers, flags, strings and JSON alike, as a 1-element array (`stage1_model_top_k = array([2], int32)`), read by
the original with `[0]`. We read it, and what we write reads back the original's way."""

import json

import numpy as np
import pytest

from jaxmodels.htfr import load_original_checkpoint, save_original_checkpoint
from jaxmodels_kernels.countsketch import make_count_sketch
from jaxmodels_kernels.srht import make_block_srht

INTERPS = ["wavelet", "lerp", "hermite", "local_poly", "catmull_rom"]
MODEL_INTS = ("top_k", "train_top_k")
MODEL_FLOATS = ("eta", "eta_g", "epsilon", "max_knn_radius", "locality_radius", "interpolation_reference")
SRHT_INTS = ("input_dim", "padded_dim", "target_dim", "block_size", "tile_count")


def one(value, dtype=None):
    return np.array([value], dtype=dtype)


def original_archive(path, *, reference_radius=5.0):
    """A one-stage archive as the original's save_htft_checkpoint writes it (originals.md 5.8)."""
    rng = np.random.default_rng(0)
    n, d, o = 5, 16, 3
    normals = rng.normal(size=(n, d))
    a = {"stage1_tensor_normals": (normals / np.linalg.norm(normals, axis=1, keepdims=True)).astype(np.float16),
         "stage1_tensor_deltas": rng.normal(size=n).astype(np.float16),
         "stage1_tensor_dneg": np.full(n, -0.5, np.float16), "stage1_tensor_dpos": np.full(n, 0.25, np.float16),
         "stage1_tensor_taus": np.full(n, 0.8, np.float16),
         "stage1_tensor_reference_radius": np.full(n, reference_radius, np.float16),
         "stage1_tensor_controls": rng.normal(size=(n, o, 3)).astype(np.float16),
         "stage1_tensor_interpolations": np.array(INTERPS, "U16"),
         "stage1_model_top_k": one(2, np.int32), "stage1_model_train_top_k": one(4, np.int32),
         "stage1_model_eta": one(0.04), "stage1_model_eta_g": one(0.004), "stage1_model_epsilon": one(1e-6),
         "stage1_model_weight_mode": one("softmax"), "stage1_model_max_knn_radius": one(1.0),
         "stage1_model_locality_radius": one(5.0), "stage1_model_interpolation_reference": one(5.0),
         "stage1_model_randomize_interpolations": one(True),
         "stage1_model_interpolation_weights": one(json.dumps({"lerp": 1.0, "hermite": 2.0})),
         "stage1_metadata_json": one(json.dumps({"tensors": n})),
         "mapping": np.arange(10), "shortlist": np.arange(4), "unk_index": one(4, np.int32),
         "tail_config_json": one(json.dumps({"tail_tokens": 16})), "metadata_json": one("{}")}
    cs = make_count_sketch(23, 16, seed=0)
    srht = make_block_srht(16, 16, 4, seed=1)
    a.update({"stage1_cs_bucket_indices": cs.bucket_indices, "stage1_cs_signs": cs.signs,
              "stage1_cs_input_dim": one(23, np.int32), "stage1_cs_output_dim": one(16, np.int32),
              "stage1_srht_count": one(1, np.int32), "stage1_srht_0_srht_signs": srht.signs,
              "stage1_srht_0_srht_permutation": srht.permutation,
              "stage1_srht_0_srht_block_eps": one(srht.block_eps), "stage1_srht_0_srht_scale": one(srht.scale)})
    a.update({f"stage1_srht_0_srht_{k}": one(getattr(srht, k), np.int32) for k in SRHT_INTS})
    np.savez_compressed(path, **a)
    return a


def read_like_original(path) -> dict:
    """What the original's load_htft_checkpoint takes from an archive: every scalar with `[0]` (an IndexError on
    a 0-d array), so this fails on anything the original could not read."""
    with np.load(path, allow_pickle=False) as z:
        out = {"unk_index": int(z["unk_index"][0]), "tail_config": json.loads(str(z["tail_config_json"][0])),
               "metadata": json.loads(str(z["metadata_json"][0])), "mapping": z["mapping"],
               "shortlist": z["shortlist"]}
        for p in sorted({k[:-len("_tensor_normals")] for k in z.files if k.endswith("_tensor_normals")}):
            m = f"{p}_model_"
            s = {k: int(z[m + k][0]) for k in MODEL_INTS} | {k: float(z[m + k][0]) for k in MODEL_FLOATS}
            s |= {"weight_mode": str(z[m + "weight_mode"][0]),
                  "randomize_interpolations": bool(z[m + "randomize_interpolations"][0]),
                  "interpolation_weights": json.loads(str(z[m + "interpolation_weights"][0])),
                  "metadata": json.loads(str(z[f"{p}_metadata_json"][0])),
                  "interpolations": [str(v) for v in z[f"{p}_tensor_interpolations"]],
                  "controls": z[f"{p}_tensor_controls"], "srht": []}
            for i in range(int(z[f"{p}_srht_count"][0])):
                q = f"{p}_srht_{i}_srht_"
                s["srht"].append({k: int(z[q + k][0]) for k in SRHT_INTS} | {
                    "block_eps": float(z[q + "block_eps"][0]), "scale": float(z[q + "scale"][0]),
                    "signs": z[q + "signs"], "permutation": z[q + "permutation"]})
            s["cs"] = {k: int(z[f"{p}_cs_{k}"][0]) for k in ("input_dim", "output_dim")}
            out[p] = s
    return out


def test_reads_the_original_format_keeping_interpolations(tmp_path):
    a = original_archive(tmp_path / "orig.npz")
    ck = load_original_checkpoint(tmp_path / "orig.npz")
    stage = ck.stages["stage1"]
    assert stage.model.interpolations == INTERPS
    c = stage.model.config
    assert (c.top_k, c.train_top_k, c.eta, c.weight_mode, c.randomize_interpolations) == (2, 4, 0.04, "softmax", True)
    assert dict(c.interpolation_weights) == {"lerp": 1.0, "hermite": 2.0}
    np.testing.assert_array_equal(np.asarray(stage.model.state.controls).transpose(0, 2, 1),
                                  a["stage1_tensor_controls"].astype(np.float32))
    assert stage.projector.output_dim == 16 and stage.projector.countsketch.input_dim == 23
    assert stage.projector.srht_params[0].scale == float(a["stage1_srht_0_srht_scale"][0])
    assert ck.unk_index == 4 and ck.tail_config == {"tail_tokens": 16} and stage.metadata == {"tensors": 5}
    assert ck.metadata == {}


def test_what_we_write_reads_back_the_originals_way(tmp_path):
    a = original_archive(tmp_path / "orig.npz")
    ck = load_original_checkpoint(tmp_path / "orig.npz")
    x = np.random.default_rng(2).normal(size=(3, 23)).astype(np.float32)
    stage = ck.stages["stage1"]
    y = stage.model.predict(stage.projector.project(x))
    save_original_checkpoint(tmp_path / "again.npz", ck)
    with np.load(tmp_path / "again.npz") as z:
        zero_d = [k for k in z.files if z[k].ndim == 0]
        assert not zero_d, f"0-d arrays the original's [0] cannot index: {zero_d}"
        assert z["stage1_model_top_k"].dtype == np.int32 and z["stage1_model_weight_mode"].shape == (1,)
    want, got = read_like_original(tmp_path / "orig.npz"), read_like_original(tmp_path / "again.npz")
    for k in ("unk_index", "tail_config", "metadata"):
        assert got[k] == want[k]
    np.testing.assert_array_equal(got["mapping"], want["mapping"])
    w1, g1 = want["stage1"], got["stage1"]
    for k in (*MODEL_INTS, *MODEL_FLOATS, "weight_mode", "randomize_interpolations", "interpolation_weights",
              "metadata", "interpolations", "cs"):
        assert g1[k] == w1[k], k
    np.testing.assert_array_equal(g1["controls"], w1["controls"])
    for gs, ws in zip(g1["srht"], w1["srht"], strict=True):
        assert {k: v for k, v in gs.items() if k not in ("signs", "permutation")} == \
               {k: v for k, v in ws.items() if k not in ("signs", "permutation")}
        np.testing.assert_array_equal(gs["permutation"], ws["permutation"])
    again = load_original_checkpoint(tmp_path / "again.npz")
    assert again.stages["stage1"].model.interpolations == INTERPS
    np.testing.assert_array_equal(again.stages["stage1"].model.predict(stage.projector.project(x)), y)
    assert a["stage1_model_top_k"].shape == (1,)


def test_reference_radius_is_the_models_interpolation_reference(tmp_path):
    original_archive(tmp_path / "orig.npz", reference_radius=0.3)  # per tensor; the stage's reference is 5.0
    model = load_original_checkpoint(tmp_path / "orig.npz").stages["stage1"].model
    assert np.asarray(model.state.ref_radius).tolist() == [5.0] * 5
    kept = load_original_checkpoint(tmp_path / "orig.npz", keep_reference_radius=True).stages["stage1"].model
    np.testing.assert_array_equal(np.asarray(kept.state.ref_radius), np.full(5, 0.3, np.float16).astype(np.float32))
    x = np.random.default_rng(3).normal(size=(4, 16)).astype(np.float32) * 0.05
    assert np.abs(kept.predict(x) - model.predict(x)).max() > 1e-3  # the wavelet tensor reads it


def test_our_earlier_0d_scalars_still_read(tmp_path):
    a = original_archive(tmp_path / "orig.npz")
    zero_d = {k: v.reshape(()) if v.shape == (1,) else v for k, v in a.items()}  # every scalar of this archive
    np.savez(tmp_path / "zero_d.npz", **zero_d)
    ck = load_original_checkpoint(tmp_path / "zero_d.npz")
    assert ck.stages["stage1"].model.config.top_k == 2 and ck.unk_index == 4


def test_original_errors(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(KeyError, match="no '<stage>_tensor_normals' key; not an original HTFT checkpoint"):
        load_original_checkpoint(tmp_path / "other.npz")
    np.savez(tmp_path / "partial.npz", stage2_tensor_normals=np.ones((2, 3), np.float16))
    with pytest.raises(KeyError, match=r"not a complete original stage 'stage2'; missing keys \['stage2_tensor_delt"):
        load_original_checkpoint(tmp_path / "partial.npz")
    a = original_archive(tmp_path / "orig.npz")
    np.savez(tmp_path / "two.npz", **(a | {"stage1_model_top_k": np.array([2, 3], np.int32)}))
    with pytest.raises(ValueError, match=r"stage1_model_top_k must hold one value .*got shape \(2,\)"):
        load_original_checkpoint(tmp_path / "two.npz")
