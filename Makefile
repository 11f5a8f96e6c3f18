# mmcourse: `make course` runs the whole course; `make test` runs the test suite.
# Both create .venv and install the locked environment first (Python 3.11, ~6 GB).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml build-constraints.txt | sha256sum | cut -c1-12)
# PROFILE=full passes --profile full, which wins over MMCOURSE_PROFILE; unset, the runner uses
# MMCOURSE_PROFILE, else smoke (it prints which and why).
PROFILE ?=
NB ?=
TESTS ?= --nbval-lax tests solutions
# make bench: --quick sizes by default (all of bench/ in 15 min on 2 cores); BENCH_ARGS= for the notebooks' sizes
BENCH_ARGS ?= --quick
export UV_LINK_MODE ?= copy
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: course test book lab data models dashboard release check-release bench doctor env lock clean

course: models ## execute every solution notebook into build/ (HTML, report.json, summary)
	$(PY) -m mmcourse run --strict-checks $(if $(PROFILE),--profile $(PROFILE),) $(NB)
	@echo "Open build/index.html for the executed notebooks."

book: models ## the offline course book in build/book from build/ (runs notebooks not executed yet)
	$(PY) -m mmcourse book --run-missing
	@echo "Open build/book/index.html (works offline)."

test: models ## unit tests + notebook tests
	$(PY) -m pytest $(TESTS) $(PYTEST_ARGS)

env: $(STAMP) ## create .venv with the locked environment

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==0.13.9
	$(UV) pip sync -q --python $(PY) --build-constraints build-constraints.txt requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	@# visdom fetches its JavaScript from CDNs on first start; take the same files from npm instead
	$(PY) -c "from mmcourse import dashboard; dashboard.install_static()" \
	  || echo "warning: visdom's static files could not be installed (needs npm); the dashboard falls back to inline plots"
	rm -f $(VENV)/.installed-*
	touch $@
	@echo "environment ready: $$(du -sh $(VENV) | cut -f1) in $(VENV)"

models: env ## fetch, verify and convert the pretrained models (~1 GB in ~/.cache/mmcourse)
	$(PY) -m mmcourse fetch models

data: env ## download and prepare the real datasets into MMCOURSE_DATA_DIR
	$(PY) -m mmcourse fetch data $(DATA)

doctor: env
	$(PY) -m mmcourse doctor

lab: env ## JupyterLab on the student notebooks
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

release: env ## regenerate notebooks/ from solutions/ (and strip outputs from sources)
	$(PY) -m mmcourse release

check-release: env
	$(PY) -m mmcourse check-release

dashboard: env ## live training dashboard (visdom on 127.0.0.1)
	$(PY) -m mmcourse dashboard $(if $(PORT),--port $(PORT),)

bench: env ## speed/memory benchmarks: figures and ratios side by side, all of them in build/bench.json
	@set -e; rm -rf build/bench; mkdir -p build/bench; start=$$(date +%s); \
	for f in bench/[!_]*.py; do echo "== $$f"; $(PY) $$f $(BENCH_ARGS) --json build/bench/$$(basename $$f .py).json; done; \
	$(PY) bench/_collect.py build/bench build/bench.json $$(( $$(date +%s) - start ))

lock: ## re-resolve requirements.in into requirements.lock and environment.yml
	$(UV) pip compile requirements.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --build-constraints build-constraints.txt --no-header --annotation-style line -o requirements.lock
	$(PY) .ci/environment_yml.py > environment.yml

clean:
	rm -rf build .pytest_cache
