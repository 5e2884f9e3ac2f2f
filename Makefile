# The two commands in the README: `make demo` and `make test`.
# Both start from a fresh clone: create the venv, install, fetch media, run.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out/demo

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	rm -rf $(OUT)
	$(VENV)/bin/guidance demo -o $(OUT)

test: install
	$(VENV)/bin/guidance media fetch > /dev/null
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

bench: install
	$(VENV)/bin/guidance bench "$$($(VENV)/bin/guidance media fetch single_face.mp4 | cut -f2)"

clean:
	rm -rf $(VENV) out
