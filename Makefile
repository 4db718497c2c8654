# The two README commands. Both create .venv (torch 2.11.0 + test packages) when it is missing.
.PHONY: test demo venv

venv:
	tools/setup_venv.sh

test: venv
	cargo test --workspace

demo: venv
	tools/demo.sh
