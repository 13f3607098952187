# how-many-params. `make help` lists the targets.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(abspath $(BIN)):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help setup browser run serve plots test test-fast lint format params bench publish lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@echo "setup: creating $(VENV)/ with $(PYTHON) (once; later runs reuse it)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup: upgrading pip"
	@$(BIN)/python -m pip install -qq --upgrade pip
	@echo "setup: installing torch 2.13.0 (CPU), transformers, dvc, hydra and the rest at the versions in requirements.lock (2-3 min the first time)"
	@$(BIN)/python -m pip install -qq --progress-bar off -c requirements.lock -e ".[dev]"
	@touch $(STAMP)
	@echo "setup: done; the hmp command is $(BIN)/hmp"

# The page `dvc plots show` fills, Vega inlined so it draws offline: where .dvc/config's plots.html_template says
PLOT_PAGE := .dvc/$(shell sed -n 's/^ *html_template *= *//p' .dvc/config)

$(PLOT_PAGE): $(STAMP) pipeline/report/plotpage.py
	python -m pipeline.report.plotpage

setup: $(STAMP) $(PLOT_PAGE) ## create .venv/ and install the pinned dependencies

run: $(STAMP) $(PLOT_PAGE) ## set up, then rebuild results/ and reports/ with dvc repro
	dvc repro
	@python -c 'import yaml, pathlib; p = yaml.safe_load(open("params.yaml"))["paths"]; print("Report: open " + pathlib.Path(p["report_html"]).resolve().as_uri() + " in a browser (self-contained, works offline); Markdown: " + p["report"])'

plots: $(PLOT_PAGE) ## dvc.yaml's plots into dvc_plots/index.html, offline (REV=main: dvc plots diff against it)
	dvc plots $(if $(REV),diff $(REV),show)

browser: ## headless Chromium and its driver, for the HTML report's and hmp serve's tests (Debian's packages; needs root)
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { [ "$$(id -u)" = 0 ] \
	  && command -v apt-get >/dev/null \
	  && echo "installing chromium and chromium-driver (Debian packages) for the browser tests..." \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || echo "no chromium or chromium-driver: the browser tests will be skipped (install Debian's chromium, chromium-driver)"

serve: $(STAMP) ## hmp serve on http://127.0.0.1:8000 (the API and the page; Ctrl-C stops it)
	hmp serve $(ARGS)

# The suite on every core (pytest-xdist; JOBS=0 runs it in one process), a line per test file as it
# finishes, and the slowest tests at the end.
JOBS ?= auto
PYTEST_ARGS := -n $(JOBS) --dist worksteal --durations=10

test: $(STAMP) browser ## set up, then run the whole test suite (slow tests included)
	pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## the tests without the slow ones (real DVC runs)
	pytest $(PYTEST_ARGS) -m "not slow"

lint: $(STAMP) ## ruff lint and format check
	ruff check . && ruff format --check .

format: $(STAMP) ## ruff format and import order
	ruff check --fix . && ruff format .

params: $(STAMP) ## rewrite params.yaml from conf/ (ARGS='sweep=gpt2-small' for overrides)
	python -m pipeline.core.compose $(ARGS)

bench: $(STAMP) ## run the benchmarks and print their tables
	python benchmarks/bench_pipeline.py
	python benchmarks/bench_values.py
	python benchmarks/bench_moe.py
	python benchmarks/bench_gguf.py
	python benchmarks/bench_families.py
	python benchmarks/bench_fit.py
	python benchmarks/bench_flops.py
	python benchmarks/bench_serve.py
	python benchmarks/bench_sweep.py
	python benchmarks/bench_census.py

publish: $(STAMP) ## register the committed report as a new artifact version (git tag report@vX.Y.Z)
	dvc status --quiet || (echo "results are out of date: run make run and commit first" && exit 1)
	git diff --quiet HEAD -- results reports dvc.lock params.yaml || (echo "commit results/ and reports/ first" && exit 1)
	gto register report
	@echo "Now: git push origin --tags. Anyone can then fetch it: dvc artifacts get <repo-url> report"

lock: $(STAMP) ## rewrite requirements.lock from the installed versions
	(echo "# Exact versions every install uses (pip install -c requirements.lock): regenerate with \`make lock\`."; \
	 $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/') > requirements.lock

clean: ## remove the virtualenv, the downloaded model folders, the stages' caches, the offline plots page and the benchmarks' files
	rm -rf $(VENV) data/models data/memo $(PLOT_PAGE) .bench
