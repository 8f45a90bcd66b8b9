# galframe: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.galframe-installed

.PHONY: demo test venv bench clean-venv

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip "setuptools>=68,<80" wheel
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet --no-build-isolation -e '.[dev]'
	touch $(STAMP)

# 1. pretrain the LVM (lvm_tiny) without labels on 6000 simulated stamps of another sky (seed 1),
#    register it in the local zoo as lvm_tiny-demo (skipped when the zoo already has it);
# 2. fine-tune it on 500 labels of the default data, evaluate on the held-out split, report.
demo: $(STAMP)
	$(VENV)/bin/galframe pretrain data.n=6000 trainer.max_epochs=3 pretrain.zoo_name=lvm_tiny-demo pretrain.reuse=true
	$(VENV)/bin/galframe train experiment=demo

test: $(STAMP)
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
