# `make search` and `make test` each set up .venv on first use.
# torch and torchvision are pinned here, not in setup.cfg (whose ranges stay open for users):
# the pinned builds install from a local wheel cache where one exists instead of downloading.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ifeq ($(shell uname -m),aarch64)
TORCH_PINS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
endif

.PHONY: search test bench clean-venv

search: $(STAMP)
	$(PY) -m scoop gp_losses/main.py --task pose

test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal

bench: $(STAMP)
	@for b in bench/*.py; do [ -e "$$b" ] || continue; echo "== $$b" >&2; $(PY) $$b; rc=$$?; \
	  [ $$rc -eq 0 ] || [ $$rc -eq 2 ] || exit 1; done

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
