.PHONY: serve test install bench
serve:  ## install everything, then start the guarded chat server on the default model
	scripts/install.sh && .venv/bin/guardchat serve
test:   ## install runtime + test tools, then run the whole test suite
	scripts/install.sh --test
	.venv/bin/python -m pytest -q -rs; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc
bench:  ## serving overhead: our server vs raw vLLM, same engine settings
	scripts/install.sh && .venv/bin/python bench/serve_overhead.py
