# HyperNet for QGIS -- set-up, demo, tests, benchmarks, packaging.
# `make demo` and `make test` are the README's two commands; both install what they need (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hypernet-installed
APT_PACKAGES := qgis python3-qgis qgis-providers python3-gdal gdal-bin python3-venv python3-matplotlib \
                xvfb xauth imagemagick libtcmalloc-minimal4
PIP_PACKAGES := torch==2.13.0 spectral "numpy<2" pytest
PLUGIN := hypernet_qgis
BUILD := build/$(PLUGIN)
export QT_QPA_PLATFORM ?= offscreen

.PHONY: install demo test bench bench-speed mutation plugin deploy zip clean

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

# The assembled plugin folder (what QGIS loads): package + metadata + resources + licence.
$(BUILD)/metadata.txt: $(STAMP) metadata.txt LICENSE $(shell find $(PLUGIN) resources -type f -not -name '*.pyc' 2>/dev/null)
	rm -rf $(BUILD) && mkdir -p $(BUILD)
	cp -r $(PLUGIN)/. $(BUILD)/
	cp -r resources $(BUILD)/resources
	cp metadata.txt LICENSE $(BUILD)/
	find $(BUILD) -name __pycache__ -prune -exec rm -rf {} +

plugin: $(BUILD)/metadata.txt

$(VENV)/bin/qgis_process: $(STAMP) tools/qgis_process.in
	sed -e "s|@REPO@|$(CURDIR)|g" tools/qgis_process.in > $@ && chmod +x $@

demo: install
	$(PY) tools/demo.py

test: install
	$(PY) -m pytest -q tests

# one-line bugs in a copy of the engine, each against the tests that should catch it (BENCHMARKS.md)
mutation: install
	$(PY) tools/mutation.py

bench: install
	$(PY) tools/bench_accuracy.py

bench-speed: install
	$(PY) tools/bench_speed.py

deploy: plugin
	$(PY) tools/deploy.py $(BUILD)

zip: plugin
	mkdir -p dist && rm -f dist/$(PLUGIN).zip
	cd build && ../$(PY) -m zipfile -c ../dist/$(PLUGIN).zip $(PLUGIN)

clean:
	rm -rf build dist $(VENV)
