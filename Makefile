# Two commands do all the set-up: `make demo` runs the main job offline, `make test` runs
# every test. Both create .venv and install what they need into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= results/weather.jsonl

.PHONY: demo test bench install browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml plugins/gym-weather/pyproject.toml plugins/gym-openai-model/pyproject.toml \
		plugins/gym-reasoning/pyproject.toml
	$(BIN)/pip install -q -e '.[test,ray]' -e plugins/gym-weather -e plugins/gym-openai-model -e plugins/gym-reasoning
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gym plugins list
	$(BIN)/gym collect --agent weather --model replay --output $(DEMO_OUT) --num-repeats 2 --parallel 8 --overwrite
	@echo "browse them: $(BIN)/gym view $(DEMO_OUT)"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# Debian chromium for the viewer's browser tests; they skip, saying why, if it cannot be had.
browser:
	@test -x /usr/bin/chromium || [ "$$(id -u)" != 0 ] || { apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "could not install chromium: the browser tests will be skipped"

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/profile.py
	$(BIN)/python bench/serve_vs_embedded.py
	$(BIN)/python bench/viewer.py
	$(BIN)/python bench/input_scan.py
	$(BIN)/python bench/reliability.py

clean:
	rm -rf $(VENV) results .pytest_cache
