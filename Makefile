# make install | make test | make demo | make bench | make article [QUICK=1]   (see README.md)
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PIP   := $(PY) -m pip
STAMP := $(VENV)/.installed
APT_PACKAGES := libusb-1.0-0 libvulkan1 mesa-vulkan-drivers libosmesa6 libegl1 libgl1

.PHONY: install test demo bench article article-quick lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null; \
	  else echo "warning: missing Debian packages:$$missing (install them for open3d/pyrender)"; fi; \
	fi
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	@$(PY) -c "import deepsdf_ad, torch, open3d, trimesh, skimage, igl" && touch $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/deepsdf-ad demo --out demo_out

bench: install
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# the article (docs/autodecoders.md): rerun the experiment presets and regenerate its tables and figures and
# the README's headline table; QUICK=1: CI-sized run into article_quick/docs (README untouched)
ARTICLE_FLAGS ?=
article: install
	$(VENV)/bin/deepsdf-ad article $(if $(QUICK),--quick,--readme README.md) $(ARTICLE_FLAGS)

article-quick:
	$(MAKE) article QUICK=1

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) demo_out article_quick .pytest_cache
