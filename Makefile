# make test: install what is missing (Debian packages, venv, pip) and run the test suite.
# make demo: the main job on the embedded default data.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BILO := $(VENV)/bin/bilo
STAMP := $(VENV)/.installed
# chromium: the browser the playground's tests drive (Playwright, headless; tests/test_playground.py)
DEBIAN_PACKAGES := python3-dolfinx-real python3-mpi4py python3-h5py-mpi python3-venv chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian's numpy, scipy and h5py are built against the HDF5/MPI that dolfinx uses: a PyPI h5py
# in the same process breaks on import. So the project is installed with --no-deps and its
# other dependencies (pyproject.toml) are listed here.
PIP_PACKAGES := torch==2.13.0 'matplotlib>=3.6' 'tqdm>=4.60' 'arviz>=0.17' 'nibabel>=5' 'nilearn>=0.10' \
  'pytest>=7' 'ruff>=0.4' 'import-linter>=2' 'playwright>=1.40'
DEMO_OUT ?= out/demo
export OMP_NUM_THREADS ?= 1

.PHONY: setup test test-slow test-mpi lint demo bench clean

# Playwright drives Debian's chromium (/usr/bin/chromium): no `playwright install` download.
$(STAMP): pyproject.toml constraints.txt Makefile
	@if ! /usr/bin/python3 -c "import dolfinx, mpi4py, h5py" 2>/dev/null \
	    || ! /usr/bin/python3 -c "import ensurepip" 2>/dev/null \
	    || ! test -x /usr/bin/chromium; then \
	  echo "== installing Debian packages: $(DEBIAN_PACKAGES)"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES) \
	    > /tmp/bilo-apt.log 2>&1 || { tail -20 /tmp/bilo-apt.log; exit 1; }; \
	fi
	@test -x $(PY) || { echo "== creating $(VENV) (with Debian's dolfinx/petsc4py/mpi4py/h5py)"; \
	  /usr/bin/python3 -m venv --system-site-packages $(VENV); }
	@echo "== pip install (numpy, scipy and h5py stay Debian's; CPU torch 2.13.0)"
	@$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt $(PIP_PACKAGES)
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@$(PY) -c "import dolfinx, torch, numpy, h5py; print('== ready: dolfinx', \
	  dolfinx.__version__, '| torch', torch.__version__, '| numpy', numpy.__version__)"
	@touch $@

setup: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest tests -m "not slow"

# the checks that take minutes on 2 cores (pytest -m slow): the GBM pipeline end to end, B-BiLO
# with LoRA
test-slow: $(STAMP)
	$(PY) -m pytest tests -m slow

# Only the MPI tests (also part of `make test`): each test module launches mpirun itself.
test-mpi: $(STAMP)
	$(PY) -m pytest tests/mpi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The main job: the embedded synthetic patient at a ventricle with a follow-up scan
# (data/patient_cortex) through the whole GBM pipeline (mesh, FEM at the initial guess and the
# anchors, BiLO, FEM at the inferred parameters, DICE, plans, report): 11.6 min on 2 cores.
# Exit 4 is the run's verdict, not a crash: its network check failed, and the report says how.
demo: $(STAMP)
	@$(BILO) gbm run data/patient_cortex --preset quick --out $(DEMO_OUT)/gbm --overwrite; \
	status=$$?; \
	if [ $$status -eq 4 ]; then \
	    echo "== the network check failed (exit 4): trust the FEM's DICE (docs/gbm.md)"; \
	elif [ $$status -ne 0 ]; then exit $$status; fi
	@echo "== results in $(DEMO_OUT)/gbm: summary.json, report.png, density_{nn,fem}*.nii.gz, plan_*.nii.gz, *.xdmf"

# Benchmarks, not part of `make test` (minutes): FEM strong scaling under mpirun (1 and 2 ranks)
# and the cost of one PINN/BiLO training step; options: `$(PY) bench/<script>.py --help`.
bench: $(STAMP)
	$(PY) bench/fem_scaling.py
	$(PY) bench/step_cost.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .import_linter_cache *.egg-info
