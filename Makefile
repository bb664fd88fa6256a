# The two commands of the quick start: `make serve` and `make test`.
# Each makes (or refreshes, when pyproject.toml changed) the virtual environment in .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `make serve` installs what serving and folding need (".[fold]"); `make test` adds the test
# tooling (".[fold,test]") to the same venv.
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.test-installed-stamp
# `make serve PORT=18480 GRPC_PORT=18481`: the ports of the server (default 8080 and 8081)
PORT ?=
GRPC_PORT ?=
# Ray Serve lives in a venv of its own with the serving-only install (no TensorFlow); the
# Ray tests and bench/ray_serve.py start it from there.
RAY_VENV ?= .venv-ray
RAY_STAMP := $(RAY_VENV)/.installed-stamp

.PHONY: serve serve-ray ray-venv test test-slow lint fold-demo bench bench-full bench-ray container-smoke clean ui-screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[fold]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[fold,test]'
	touch $(TEST_STAMP)

$(RAY_STAMP): pyproject.toml
	$(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RAY_VENV)/bin/python -m pip install --quiet -e '.[serve,ray]'
	touch $(RAY_STAMP)

ray-venv: $(RAY_STAMP)

serve: $(STAMP)
	$(BIN)/foldserve serve --models-dir models $(if $(PORT),--port $(PORT)) $(if $(GRPC_PORT),--grpc-port $(GRPC_PORT))

serve-ray: $(RAY_STAMP)
	$(RAY_VENV)/bin/foldserve serve --engine ray --models-dir models --replicas 2

test: $(TEST_STAMP) $(RAY_STAMP)
	sh scripts/ensure-chromium.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# the slow tier: tests marked slow (broad sweeps, more models through the same paths)
test-slow: $(TEST_STAMP) $(RAY_STAMP)
	sh scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -m slow

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

fold-demo: $(STAMP)
	$(BIN)/foldserve fold models/digits/1/model.keras -o models/digits/1

clean:
	rm -rf $(VENV) $(RAY_VENV) .pytest_cache .ruff_cache

# `make bench`: a few minutes; the load figures at 64 clients (bench/load.py) and the fold
# timings. `make bench-full`: every target at every concurrency, written to docs/benchmarks.md.
bench: $(TEST_STAMP)
	$(BIN)/python bench/fold_latency.py --runs 5000 --repeats 2
	$(BIN)/python bench/load.py --duration 3 --rounds 3

bench-full: $(TEST_STAMP)
	$(BIN)/python bench/serving.py

bench-ray: $(TEST_STAMP) $(RAY_STAMP)
	$(BIN)/python bench/ray_serve.py

ui-screenshots: $(TEST_STAMP)
	sh scripts/ensure-chromium.sh
	$(BIN)/python scripts/ui_screenshots.py

container-smoke:
	bash scripts/container-smoke.sh
