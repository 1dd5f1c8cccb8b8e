# make demo: a virtualenv with Rill, then `rill demo`.
# make test: what the tests need (Debian packages, as root), then the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEB_PACKAGES := openssh-server openssh-client sshpass busybox iproute2 iptables fping ripgrep tmux procps gzip

.PHONY: demo test venv system-deps clean

$(BIN)/rill: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# compat mode puts the checkout on sys.path, so twistd finds twisted/plugins/rill_plugin.py
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $@

venv: $(BIN)/rill

demo: venv
	$(BIN)/rill demo

system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "make test needs root to install:$$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: system-deps venv
	bash .ci/test-suite

clean:
	rm -rf $(VENV) _trial_temp* *.egg-info
