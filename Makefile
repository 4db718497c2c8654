# The two README commands. Both create .venv (torch 2.11.0 + test packages) when it is missing, and
# install the Debian packages the build uses when the system can (tools/setup_system_packages.sh:
# mold for faster links, libgloo-dev for cellseg-dist's c10d shim).
.PHONY: test test-oracles test-all demo reproduce venv setup

# The mmdet 2.17 parity oracles (tests/it modules of cellseg-heads and cellseg-ensemble): real
# mmdet models run in .venv to make their fixtures (15-60 s each in Python, kept in target/tmp for
# the next run), then the same models in Rust, stage by stage. About 7 minutes on 2 cores on a
# fresh clone; `make test` leaves them to `make test-oracles`, and `.ci/run` runs both.
ORACLES := mmdet_parity:: mmdet_cascade_parity:: mmdet_ensemble_parity::

venv:
	tools/setup_venv.sh

setup: venv
	tools/setup_system_packages.sh

# Every test of the workspace but the mmdet oracles.
test: setup
	cargo test --workspace -- $(addprefix --skip ,$(ORACLES))

# Only the mmdet oracles. `--workspace` (not `-p cellseg-heads -p cellseg-ensemble`) so that cargo
# unifies the same features as `make test` and reuses its build instead of recompiling 25 crates.
test-oracles: setup
	cargo test --workspace --test it -- $(ORACLES)

# Both, as `.ci/run` does (the same set as a plain `cargo test --workspace`).
test-all: test test-oracles

demo: setup
	tools/demo.sh

# The seed's workflow end to end on the CPU: k-fold experiments, cross-validation, tweaking, test.
reproduce: setup
	tools/reproduce.sh
