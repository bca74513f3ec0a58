# Two commands do all the set-up: `make demo` runs the main job offline, `make test` runs
# every test. Both create .venv and install what they need into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= results/weather.jsonl

.PHONY: demo test bench install browser clean

# What pip and apt print goes to a log, shown only when they fail.
INSTALL_LOG ?= $(VENV)/install.log
APT_LOG ?= $(VENV)/apt.log
CHROMIUM ?= /usr/bin/chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --upgrade pip > $(INSTALL_LOG) 2>&1 || { cat $(INSTALL_LOG); exit 1; }

$(STAMP): $(BIN)/python pyproject.toml plugins/gym-weather/pyproject.toml plugins/gym-openai-model/pyproject.toml \
		plugins/gym-reasoning/pyproject.toml plugins/gym-math/pyproject.toml
	@echo "installing gymcore and its plugins (weather, openai-model, reasoning, math) into $(VENV) (log: $(INSTALL_LOG))"
	@$(BIN)/pip install -e '.[test,ray]' -e plugins/gym-weather -e plugins/gym-openai-model -e plugins/gym-reasoning \
		-e plugins/gym-math > $(INSTALL_LOG) 2>&1 \
		|| { cat $(INSTALL_LOG); echo "pip install failed (log: $(INSTALL_LOG))"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gym plugins list
	$(BIN)/gym collect --agent weather --model replay --output $(DEMO_OUT) --num-repeats 2 --parallel 8 --overwrite
	@echo "browse them: $(BIN)/gym view $(DEMO_OUT)"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# Debian chromium for the viewer's browser tests; they skip, saying why, if it cannot be had.
browser:
	@test -x $(CHROMIUM) || [ "$$(id -u)" != 0 ] || { \
		echo "installing chromium for the browser tests (log: $(APT_LOG))"; mkdir -p $(dir $(APT_LOG)); \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } > $(APT_LOG) 2>&1 \
		|| { cat $(APT_LOG); false; }; } || echo "could not install chromium: the browser tests will be skipped"

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/profile.py
	$(BIN)/python bench/serve_vs_embedded.py
	$(BIN)/python bench/viewer.py
	$(BIN)/python bench/input_scan.py
	$(BIN)/python bench/reliability.py
	$(BIN)/python bench/environments.py
	$(BIN)/python bench/tokens.py
	$(BIN)/python bench/collector_api.py

clean:
	rm -rf $(VENV) results .pytest_cache
