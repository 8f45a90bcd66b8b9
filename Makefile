# galframe: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.galframe-installed
# the test suite also needs the detection stack (mmcv built once from source, cached) and Chromium
FULL   := $(VENV)/.galframe-full

.PHONY: demo test venv bench clean-venv

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip "setuptools>=68,<80" wheel
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet --no-build-isolation -e '.[dev]'
	touch $(STAMP)

# mmcv 2.1.0 + mmdet 3.3.0 (scripts/install_mmdet.sh: ~16 min the first time on 2 cores, then a cached
# wheel), the classical baselines, the HITL web stack and Debian's Chromium for the browser test
$(FULL): $(STAMP) scripts/install_mmdet.sh scripts/install_browser.sh
	bash scripts/install_mmdet.sh $(PY)
	$(PIP) install --quiet --no-build-isolation -e '.[dev,bench,hitl,mmdet,search]'
	bash scripts/install_browser.sh
	touch $(FULL)

# the headline in a few minutes: the shipped pretrained LVM (lvm_tiny-g10, no pretraining needed) with the
# few-shot classify head; HITL picks 60 labels from the simulated volunteers; ResNet18 trained from scratch
# on 60 labels beside it, both scored on the same held-out split (benchmarks/results/bench_demo/fewshot/)
demo: $(STAMP)
	$(VENV)/bin/galframe bench fewshot --profile demo

test: $(FULL)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
