# Two entry points for a fresh machine: `make demo` and `make test`; both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.4"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	# uv installs without bytecode, and with PYTHONDONTWRITEBYTECODE set (as on some CI machines)
	# every process (the CLI, test workers, Dask and BentoML workers) would compile mlflow, pandas
	# and the rest again: about 7 s of CPU each. Compiled once here.
	$(BIN)/python -m compileall -q -j 0 $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') >/dev/null \
		|| echo "compileall: some files did not compile; they are compiled at import, nothing else changes"
	touch $(STAMP)

install: $(STAMP)

# Two test workers share the machine's cores: each runs its OpenMP and BLAS pools single-threaded
# (LightGBM's own count is in the config), or the pools of both workers oversubscribe the cores
# (on 2 cores: 10:39 with the default pools, 9:14 with one thread each).
test: install
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile -q

demo: install
	$(BIN)/clvcast demo

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
