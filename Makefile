# The two commands of README.md. Both install what is missing first (scripts/setup.sh).
.PHONY: run test setup test-servers bench

CARGO ?= cargo

setup:
	@bash scripts/setup.sh

# Starts the workstation on the built-in simulated exchange (paper trading, no keys, no internet).
run: setup
	$(CARGO) run --release --locked --

# PostgreSQL and Redis binaries for the tests that start their own servers (Debian packages).
test-servers:
	@bash scripts/test-servers.sh

# Runs every test (unit, integration, doc).
test: setup test-servers
	$(CARGO) test --locked

# Criterion benchmarks (not part of `make test`).
bench: setup test-servers
	$(CARGO) bench --locked
