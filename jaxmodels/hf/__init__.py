"""Hugging Face checkpoint <-> jaxmodels parameter conversion (numpy/JAX only, no torch)."""
