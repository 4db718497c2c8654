# The two README commands. Both create .venv (torch 2.11.0 + test packages) when it is missing, and
# install the mold linker when the system can (tools/setup_mold.sh; the default linker otherwise).
.PHONY: test demo venv setup

venv:
	tools/setup_venv.sh

setup: venv
	tools/setup_mold.sh

test: setup
	cargo test --workspace

demo: setup
	tools/demo.sh
