"""jaxmodels/layers."""
