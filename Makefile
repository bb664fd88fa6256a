# The two commands of the quick start: `make serve` and `make test`.
# Each makes (or refreshes, when pyproject.toml changed) the virtual environment in .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: serve test lint fold-demo bench container-smoke clean ui-screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[fold,test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/foldserve serve --models-dir models

test: $(STAMP)
	sh scripts/ensure-chromium.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

fold-demo: $(STAMP)
	$(BIN)/foldserve fold models/digits/1/model.keras -o models/digits/1

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

bench: $(STAMP)
	$(BIN)/python bench/fold_latency.py
	$(BIN)/python bench/serving.py

ui-screenshots: $(STAMP)
	sh scripts/ensure-chromium.sh
	$(BIN)/python scripts/ui_screenshots.py

container-smoke:
	bash scripts/container-smoke.sh
