# `make run` and `make test` bootstrap everything they need on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
EXTRAS := postgres,litellm,bedrock,test,dev

.PHONY: run test lint bench system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# Real servers the tests run on 127.0.0.1: PostgreSQL, and nginx with the njs module.
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v nginx >/dev/null 2>&1 \
	    || ! ls /usr/lib/nginx/modules/ngx_http_js_module.so >/dev/null 2>&1; then \
	  echo "installing PostgreSQL and nginx (njs) from the OS packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    postgresql nginx libnginx-mod-http-js >/dev/null; \
	fi

run: $(STAMP)
	$(VENV)/bin/allotment serve --demo

test: $(STAMP) system-deps
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check core adapters plugins tests bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/admit_settle.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist build
