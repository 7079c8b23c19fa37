# The two commands of the README: `make demo` (the main job) and `make test` (the test suite).
# Both set up everything first (scripts/bootstrap.sh: system packages, .venv, pinned deps).
PY := .venv/bin/python
SAMPLE := work/sample_catalogue

.PHONY: setup demo test bench clean

setup:
	@scripts/bootstrap.sh

demo: setup
	$(PY) -m soundalike sample-catalogue $(SAMPLE) --tracks 24 --seed 0
	$(PY) -m soundalike pipeline --conf conf/local.yaml
	@echo "== which songs sound like track_002 (a piano take of motif_00)?"
	$(PY) -m soundalike query $(SAMPLE)/track_002_piano_arpeggio.ogg --conf conf/local.yaml --exclude-self
	@echo "== two alternate takes of one motif (piano vs plucked strings):"
	$(PY) -m soundalike compare $(SAMPLE)/track_002_piano_arpeggio.ogg $(SAMPLE)/track_008_plucked_strings.wav --align --plot work/compare.png

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/run_all.py $(if $(FULL),--full,)

clean:
	rm -rf work .pytest_cache
