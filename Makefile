# Quick start on a fresh machine: `make demo` runs the main job on built-in defaults,
# `make test` runs the test suite. Both create .venv and install the project on first use;
# later runs reuse it (the stamp is rebuilt only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Pinned so a fresh CPU machine gets the same torch as CI; on a GPU cluster set
# TORCH_SPEC= (empty) to keep the torch build that matches your CUDA.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

# Where the demos write their data, weights and runs (make demo DEMO_OUT=/tmp/x).
DEMO_OUT ?= demo_output

.PHONY: install test demo demo-benchmarks demo-classification demo-retrieval bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(strip $(TORCH_SPEC)),$(PY) -m pip install --quiet $(TORCH_SPEC))
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The InternVL2 fine-tuning workflow on synthetic data (about 2 minutes on 2 cores).
demo: $(STAMP)
	$(PY) -m internvl_chat.demo --out '$(DEMO_OUT)/internvl_chat'

# The base and the fine-tuned tiny model of `make demo` on a few synthetic benchmark tasks, in one table (reuses
# make demo's checkpoints under the same DEMO_OUT, else runs make demo first; see internvl_chat/README.md).
demo-benchmarks: $(STAMP)
	$(PY) -m internvl_chat.demo_benchmarks --out '$(DEMO_OUT)/internvl_chat'

# InternViT linear probing on synthetic ImageNet layouts, written to $(DEMO_OUT).
demo-classification: $(STAMP)
	$(PY) -m classification.demo --out '$(DEMO_OUT)'

# InternVL-C/G retrieval fine-tuning (upstream's script, GPUS=0) on synthetic Flickr30K: recall through the
# clip_benchmark CLI before and after (about 1.5 minutes on 2 cores).
demo-retrieval: $(STAMP)
	$(PY) -m internvl_g.demo --out '$(DEMO_OUT)/internvl_g'

bench: $(STAMP)
	$(PY) benchmarks/internvit.py all

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache demo_output
