"""Reading the original HTFT `.npz` layout (written here with plain NumPy, key by key) and writing it back."""

import json

import numpy as np
import pytest

from jaxmodels.htfr import load_original_checkpoint, save_original_checkpoint
from jaxmodels_kernels.countsketch import make_count_sketch
from jaxmodels_kernels.srht import make_block_srht


def original_archive(path):
    rng = np.random.default_rng(0)
    n, d, o = 5, 16, 3
    normals = rng.normal(size=(n, d))
    a = {"stage1_tensor_normals": (normals / np.linalg.norm(normals, axis=1, keepdims=True)).astype(np.float16),
         "stage1_tensor_deltas": rng.normal(size=n).astype(np.float16),
         "stage1_tensor_dneg": np.full(n, -0.5, np.float16), "stage1_tensor_dpos": np.full(n, 0.25, np.float16),
         "stage1_tensor_taus": np.full(n, 0.8, np.float16), "stage1_tensor_reference_radius": np.full(n, 5, np.float16),
         "stage1_tensor_controls": rng.normal(size=(n, o, 3)).astype(np.float16),
         "stage1_tensor_interpolations": np.array(["wavelet", "lerp", "hermite", "local_poly", "catmull_rom"], "U16"),
         "stage1_model_top_k": np.int64(2), "stage1_model_train_top_k": np.int64(4),
         "stage1_model_eta": np.float64(0.04), "stage1_model_eta_g": np.float64(0.004),
         "stage1_model_epsilon": np.float64(1e-6), "stage1_model_weight_mode": np.array("softmax"),
         "stage1_model_max_knn_radius": np.float64(1.0), "stage1_model_locality_radius": np.float64(5.0),
         "stage1_model_interpolation_reference": np.float64(5.0),
         "stage1_model_randomize_interpolations": np.bool_(True),
         "stage1_model_interpolation_weights": np.array(json.dumps({"lerp": 1.0, "hermite": 2.0})),
         "stage1_metadata_json": np.array(json.dumps({"tensors": n})),
         "mapping": np.arange(10), "shortlist": np.arange(4), "unk_index": np.int64(4),
         "tail_config_json": np.array(json.dumps({"tail_tokens": 16})), "metadata_json": np.array("{}")}
    cs = make_count_sketch(23, 16, seed=0)
    srht = make_block_srht(16, 16, 4, seed=1)
    a.update({f"stage1_cs_{k}": v for k, v in cs.to_dict().items()})
    a["stage1_srht_count"] = np.int64(1)
    a.update({f"stage1_srht_0_srht_{k}": v for k, v in srht.to_dict().items()})
    np.savez_compressed(path, **a)
    return a


def test_reads_original_keeping_interpolations(tmp_path):
    a = original_archive(tmp_path / "orig.npz")
    ck = load_original_checkpoint(tmp_path / "orig.npz")
    stage = ck.stages["stage1"]
    assert stage.model.interpolations == ["wavelet", "lerp", "hermite", "local_poly", "catmull_rom"]
    assert (stage.model.config.top_k, stage.model.config.train_top_k, stage.model.config.eta) == (2, 4, 0.04)
    assert dict(stage.model.config.interpolation_weights) == {"lerp": 1.0, "hermite": 2.0}
    np.testing.assert_array_equal(np.asarray(stage.model.state.controls).transpose(0, 2, 1),
                                  a["stage1_tensor_controls"].astype(np.float32))
    assert stage.projector.output_dim == 16 and stage.projector.countsketch.input_dim == 23
    assert ck.unk_index == 4 and ck.tail_config == {"tail_tokens": 16} and stage.metadata == {"tensors": 5}
    x = np.random.default_rng(2).normal(size=(3, 23)).astype(np.float32)
    y = stage.model.predict(stage.projector.project(x))
    save_original_checkpoint(tmp_path / "again.npz", ck)
    again = load_original_checkpoint(tmp_path / "again.npz")
    assert again.stages["stage1"].model.interpolations == stage.model.interpolations
    np.testing.assert_array_equal(again.stages["stage1"].model.predict(stage.projector.project(x)), y)


def test_original_errors(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(KeyError, match="no '<stage>_tensor_normals' key; not an original HTFT checkpoint"):
        load_original_checkpoint(tmp_path / "other.npz")
    np.savez(tmp_path / "partial.npz", stage2_tensor_normals=np.ones((2, 3), np.float16))
    with pytest.raises(KeyError, match=r"not a complete original stage 'stage2'; missing keys \['stage2_tensor_delt"):
        load_original_checkpoint(tmp_path / "partial.npz")
