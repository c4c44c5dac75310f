# The two commands of README.md. Both install what is missing first (scripts/setup.sh).
.PHONY: run test setup bench

CARGO ?= cargo

setup:
	@bash scripts/setup.sh

# Starts the workstation on the built-in simulated exchange (paper trading, no keys, no internet).
run: setup
	$(CARGO) run --release --locked --

# Runs every test (unit, integration, doc).
test: setup
	$(CARGO) test --locked

# Criterion benchmarks (not part of `make test`).
bench: setup
	$(CARGO) bench --locked
