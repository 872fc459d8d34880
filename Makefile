# Two commands: `make test` and `make book`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= demo

.PHONY: install test book bench lab clean

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the requirements into $(VENV) (log: $(VENV)/install.log) ..."
	@$(PY) -m pip install -r requirements.txt > $(VENV)/install.log 2>&1 || { tail -n 40 $(VENV)/install.log; exit 1; }
	@$(PY) -m pip install --no-deps -e . >> $(VENV)/install.log 2>&1 || { tail -n 40 $(VENV)/install.log; exit 1; }
	@touch $@

install: $(VENV)/.installed

## make test: unit tests, every chapter at the smoke profile, the notebook pair check and an offline book build
test: install
	$(PY) -m pytest

## make book [PROFILE=smoke]: re-execute chapters whose inputs changed, then build the HTML into _build/html
book: install
	$(VENV)/bin/medlab book --profile $(PROFILE)

## make bench: time every chapter at the smoke and demo profiles on this machine
bench: install
	$(VENV)/bin/medlab bench --profiles smoke demo

## make lab: JupyterLab on the notebooks; jupytext keeps each .py/.ipynb pair in step as you edit either
lab: install
	@$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install -q "jupyterlab>=4.0"
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf _build runs/notebooks
