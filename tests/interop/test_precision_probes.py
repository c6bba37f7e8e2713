"""The float64-throughout reference (interop/exact_reference.py) and the channel reorderings
(interop/channel_order.py) that jaxmodels-parity measures with, on tiny random transformers models."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxmodels_interop.channel_order import orderings, reordered  # noqa: E402
from jaxmodels_interop.exact_reference import exact_float64  # noqa: E402
from tests.hf_models import tiny_hf_model  # noqa: E402

IDS = torch.from_numpy(np.random.RandomState(0).randint(0, 97, (2, 48)))


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits.numpy()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_reordered_channels_compute_the_same_function(kind):
    model = tiny_hf_model(kind, vocab_size=97, num_key_value_heads=2).eval()
    hidden = model.config.hidden_size
    perms = orderings(hidden, 3)
    assert (perms[0] == np.arange(hidden)).all() and not (perms[1] == perms[0]).all()
    before = _logits(model)
    other = reordered(model, perms[1])
    after = _logits(other)
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
    assert not np.array_equal(after, before)  # rounded differently: that is the point
    emb = model.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_array_equal(other.get_input_embeddings().weight.detach().numpy(), emb[:, perms[1]])
    np.testing.assert_array_equal(_logits(model), before)  # the source is untouched


def test_reordering_refuses_what_it_cannot_place_and_non_permutations():
    model = tiny_hf_model("llama", vocab_size=97)
    with pytest.raises(ValueError, match="not a permutation"):
        reordered(model, np.zeros(model.config.hidden_size, int))
    model.register_parameter("extra_scale", torch.nn.Parameter(torch.ones(3)))
    with pytest.raises(ValueError, match=r"parameter extra_scale \(3,\)"):
        reordered(model, orderings(model.config.hidden_size, 2)[1])


def test_exact_float64_replaces_the_float32_norms_and_rope():
    shipped = tiny_hf_model("llama", vocab_size=97, max_position_embeddings=256).to(torch.float64).eval()
    exact = tiny_hf_model("llama", vocab_size=97, max_position_embeddings=256).to(torch.float64).eval()
    exact.load_state_dict(shipped.state_dict())
    patched = exact_float64(exact)
    layers = exact.config.num_hidden_layers
    assert (patched.norms, patched.rotary, patched.exact) == (2 * layers + 1, 1, True)
    a, b = _logits(shipped), _logits(exact)
    assert 0 < np.abs(a - b).max() < 1e-5  # the same model, without the float32 roundings
    # the patched norm is the float64 formula, exactly
    norm = exact.model.norm
    x = torch.randn(3, exact.config.hidden_size, dtype=torch.float64)
    want = norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    torch.testing.assert_close(norm(x), want, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="dtype=torch.float64"):
        exact_float64(tiny_hf_model("llama", vocab_size=97))
