# Two commands do everything: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fnac-lab-installed
DEMO_OUT ?= demo_out
CHROMIUM ?= /usr/bin/chromium

.PHONY: install demo test lab board stamps stamps-benchmark docs docs-serve clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,docs]"  # dev: pytest and the playwright package (never `playwright install`); docs: MkDocs
	@touch $(STAMP)

# The browser tests (pytest -m browser) drive JupyterLab in Debian's chromium; without it they are left out.
# Three pytest-xdist workers of one torch thread each, a test file per worker at a time (its fixtures built once):
# most tests wait on subprocesses, kernels and the browser, so a third worker on two cores fills that waiting
# (measured: 7 min 7 s against 8 min 2 s and 8 min 23 s with two).
TEST_WORKERS ?= 3
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --max-worker-restart 0
test: $(STAMP)
	@if [ -x $(CHROMIUM) ]; then \
		$(PYTEST); \
	else \
		$(PYTEST) -m "not browser" && \
		echo "browser tests skipped: $(CHROMIUM) is missing (apt-get install chromium)"; \
	fi

demo: $(STAMP)
	@mkdir -p $(DEMO_OUT)
	$(PY) -m fnac_lab.papermill_engine notebooks/01_train.ipynb $(DEMO_OUT)/01_train.ipynb --log-output \
		-p preset demo -p out_dir $(abspath $(DEMO_OUT)) -p log_epochs True
	$(VENV)/bin/jupyter nbconvert --to html --no-input $(DEMO_OUT)/01_train.ipynb --output-dir $(DEMO_OUT)
	@cat $(DEMO_OUT)/scores.md

# Tux Paint's real photographs and recordings (Debian packages, fetched without root into ~/.cache/fnac-lab/stamps).
stamps: $(STAMP)
	$(VENV)/bin/fnac-lab stamps fetch

# The stamps benchmark built, prepared and cached into ~/.cache/fnac-lab/stamps-benchmark, where the stamps preset
# reads it: fnac-lab train --preset stamps --out runs/stamps. STAMPS_ARGS passes build options (--n-train 2000).
stamps-benchmark: stamps
	$(VENV)/bin/fnac-lab stamps build --prepare $(STAMPS_ARGS)

# The lab's server settings are committed in notebooks/lab-settings/: closing a notebook's tab shuts its kernel down
# (overrides.json, JupyterLab's default settings), a kernel no tab is connected to is shut down after 10 idle
# minutes (a closed browser), and the server logs warnings only (jupyter_server_config.py). The notebooks are
# marked trusted, and their runs go to runs/ at the root (FNAC_LAB_RUNS), outside the notebooks' folder.
LAB_IP ?= localhost
LAB_PORT ?= 8888
lab: $(STAMP)
	@$(VENV)/bin/jupyter trust notebooks/*.ipynb >/dev/null
	FNAC_LAB_RUNS=$(abspath runs) $(VENV)/bin/jupyter lab notebooks/ \
		--config=notebooks/lab-settings/jupyter_server_config.py --ip=$(LAB_IP) --port=$(LAB_PORT) \
		$(if $(filter 0,$(shell id -u)),--allow-root)

# The documentation site (mkdocs.yml, docs/) built into site/, with --strict: a broken link or reference fails it.
MKDOCS := NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs
docs: $(STAMP)
	$(MKDOCS) build --strict --site-dir site

docs-serve: $(STAMP)
	$(MKDOCS) serve --strict

# TensorBoard over every run below LOGDIR: each training or pretraining run writes its curves into its tensorboard/
# folder, so a grid's --out folder compares its points (make board LOGDIR=runs/GRID).
LOGDIR ?= runs
BOARD_PORT ?= 6006
board: $(STAMP)
	$(VENV)/bin/tensorboard --logdir $(LOGDIR) --port $(BOARD_PORT)

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
