# Every target builds .venv from nothing when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Pinned builds that install from this machine's local wheels (torchvision 0.29.1 needs torch 2.14.1; a CUDA
# build that runs on the CPU). A bare `torch` requirement would pull an unpinned multi-GB build from the index.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test test-real bench clean

$(STAMP): pyproject.toml Makefile
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[torch,htfr,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m interop.real_demo --out runs/demo-smollm2
	$(PY) -m training.hyformer --demo --out runs/demo --force

test-real: $(STAMP)
	JAXMODELS_SMOLLM2_GGUF=$$($(PY) -c "from jaxmodels_interop.real_demo import fetch_smollm2; print(fetch_smollm2())") \
	  $(PY) -m pytest -q -s -m real_model tests/test_real_model.py tests/test_gguf.py

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) -m benchmarks all

clean:
	rm -rf $(VENV) runs .pytest_cache
