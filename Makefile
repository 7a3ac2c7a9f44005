# HyperNet for QGIS -- set-up, demo, tests, benchmarks, packaging.
# `make demo` and `make test` are the README's two commands; both install what they need (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hypernet-installed
APT_PACKAGES := qgis python3-qgis qgis-providers python3-gdal gdal-bin python3-venv python3-matplotlib \
                xvfb xauth imagemagick libtcmalloc-minimal4
# the engine's dependencies, then the test tools (pyproject.toml's [test] extra: pytest and the security scans)
PIP_PACKAGES := torch==2.13.0 spectral "numpy<2" pytest "bandit>=1.7" "detect-secrets>=1.4" "ruff>=0.6" "mypy>=1.8"
PLUGIN := hypernet_qgis
BUILD := build/$(PLUGIN)
# Any Python 3: assembling the plugin and its zip needs only the standard library (no venv, root or network).
PYTHON3 ?= python3
export QT_QPA_PLATFORM ?= offscreen

.PHONY: install demo test test-qgis-lts bench bench-speed mutation mutmut plugin deploy zip wheel clean

install: $(STAMP) $(BUILD)/metadata.txt $(VENV)/bin/qgis_process

$(STAMP): Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q $(PIP_PACKAGES)
	# `python -m hypernet_qgis` from any folder: the venv sees this checkout
	$(PY) -c "import site, sys; open(site.getsitepackages()[0] + '/hypernet_qgis.pth', 'w').write(sys.argv[1] + '\n')" "$(CURDIR)"
	touch $@

# The assembled plugin folder (what QGIS loads): package + metadata + licence + requirements.txt + resources
# without the sample data (tools/package.py says why).
$(BUILD)/metadata.txt: metadata.txt LICENSE requirements.txt tools/package.py \
                       $(shell find $(PLUGIN) resources -type f -not -name '*.pyc' 2>/dev/null)
	$(PYTHON3) tools/package.py assemble $(BUILD)

plugin: $(BUILD)/metadata.txt

$(VENV)/bin/qgis_process: $(STAMP) tools/qgis_process.in
	sed -e "s|@REPO@|$(CURDIR)|g" tools/qgis_process.in > $@ && chmod +x $@

demo: install
	$(PY) tools/demo.py

test: install
	$(PY) -m pytest -q tests

# The QGIS-facing tests on QGIS 3.40 LTR (Debian 13 chroot in /var/cache/hypernet-qgis-lts, made once; root).
test-qgis-lts:
	tools/qgis_lts.sh test

# one-line bugs in a copy of the engine, each against the tests that should catch it (BENCHMARKS.md)
mutation: install
	$(PY) tools/mutation.py

# mutmut's own mutants of the numeric and I/O modules ([tool.mutmut] in pyproject.toml: which modules, which
# tests), one worker; MUTANTS="glob ..." runs a subset (e.g. "hypernet_qgis.core.io.atomic*"). Results stay in
# mutants/ (a second run resumes); tools/mutmut_summary.py prints the kill rate per module (BENCHMARKS.md).
MUTMUT_VERSION := 3.8.1
MUTANTS ?=
mutmut: install
	$(PY) -c "import mutmut" 2>/dev/null || $(PY) -m pip install -q mutmut==$(MUTMUT_VERSION)
	HYPERNET_SHARED="$${HYPERNET_SHARED:-$(abspath ../shared)}" HYPERNET_ALLOCATOR=system \
	  $(VENV)/bin/mutmut run --max-children 1 $(MUTANTS)
	$(PY) tools/mutmut_summary.py --equivalent tools/mutmut_equivalent.txt

bench: install
	$(PY) tools/bench_accuracy.py

bench-speed: install
	$(PY) tools/bench_speed.py

deploy: plugin
	$(PY) tools/deploy.py $(BUILD)

# The upload for plugins.qgis.org / Install from ZIP (tests/test_package.py checks it as the repository does).
zip:
	$(PYTHON3) tools/package.py zip dist/$(PLUGIN).zip

# The engine as a wheel (pyproject.toml): `pip install dist/hypernet_qgis-*.whl` gives the `hypernet` command.
wheel: install
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist .

clean:
	rm -rf build dist mutants $(VENV)
