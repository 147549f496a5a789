# cdiwatch — two commands for a newcomer: `make demo` and `make test`.
# Every target sets up what it needs: a virtualenv with the project installed,
# and (when running as root on Debian/Ubuntu) the system packages the
# integration tests use: prometheus (+promtool), prometheus-alertmanager, chromium.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
APT_PACKAGES := prometheus prometheus-alertmanager chromium stunnel4 openssl

NATIVE := $(VENV)/.native-stamp
NATIVE_SOURCES := $(wildcard pipeline/core/*.py pipeline/capture/*.py pipeline/stream/*.py) pipeline/native.py setup.py
# The compiled modules' own tests, run once more on the source (CDIWATCH_PURE=1) after the compiled run.
CORE_TESTS := tests/test_rules.py tests/test_ledger_properties.py tests/test_timers.py tests/test_eventids.py \
              tests/test_validation.py tests/test_layering.py tests/test_native.py tests/test_idlog.py \
              tests/test_stream_stages.py tests/test_fetch.py

.PHONY: demo test bench schemas setup native system-deps clean

setup: $(STAMP) $(NATIVE)

# The editable install is plain Python; $(NATIVE) compiles the core in place.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	CDIWATCH_PURE=1 $(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

# mypyc compiles the per-message modules (pipeline/native.py lists them) when
# their sources change; without a C compiler the source runs (a warning says so).
native: $(NATIVE)
$(NATIVE): $(STAMP) $(NATIVE_SOURCES)
	@echo "compiling the core (mypyc; about a minute)"
	$(PY) setup.py --quiet build_ext --inplace >/dev/null
	@touch $@

# Installs missing Debian packages when we are root; otherwise says what is missing.
system-deps:
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || missing="$$missing stunnel4"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing (install them, e.g. sudo apt-get install$$missing)"; \
	  fi; \
	fi

test: $(STAMP) $(NATIVE) system-deps
	$(PY) -m pytest
	CDIWATCH_PURE=1 $(PY) -m pytest -q $(CORE_TESTS)

demo: $(STAMP) $(NATIVE)
	$(PY) -m pipeline demo

# The benchmarks also need the bench extra (quixstreams, the Python peer).
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	CDIWATCH_PURE=1 $(PY) -m pip install --quiet -e ".[dev,bench]"
	@touch $@

bench: $(BENCH_STAMP) $(NATIVE)
	$(PY) bench/run.py

schemas: $(STAMP) $(NATIVE)
	$(PY) -m pipeline.contract.schemas

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis pipeline/native.manifest
	find pipeline -name '*.so' -delete
