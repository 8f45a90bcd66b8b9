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
	$(PIP) install --quiet --no-build-isolation -e '.[dev,bench,hitl,mmdet]'
	bash scripts/install_browser.sh
	touch $(FULL)

# 1. pretrain the LVM (lvm_tiny) without labels on 6000 simulated stamps of another sky (seed 1),
#    register it in the local zoo as lvm_tiny-demo (skipped when the zoo already has it);
# 2. fine-tune it on 500 labels of the default data, evaluate on the held-out split, report.
demo: $(STAMP)
	$(VENV)/bin/galframe pretrain data.n=6000 trainer.max_epochs=3 pretrain.zoo_name=lvm_tiny-demo pretrain.reuse=true
	$(VENV)/bin/galframe train experiment=demo

test: $(FULL)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
