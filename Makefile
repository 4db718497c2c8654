# The two README commands. Both create .venv (torch 2.11.0 + test packages) when it is missing, and
# install the mold linker when the system can (tools/setup_mold.sh; the default linker otherwise).
.PHONY: test demo reproduce venv setup

venv:
	tools/setup_venv.sh

setup: venv
	tools/setup_mold.sh

test: setup
	cargo test --workspace

demo: setup
	tools/demo.sh

# The seed's workflow end to end on the CPU: k-fold experiments, cross-validation, tweaking, test.
reproduce: setup
	tools/reproduce.sh
