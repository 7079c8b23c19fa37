# The GPU run behind BENCHMARKS.md "Embedder throughput on one H100": run from the repo root on a
# CUDA machine whose python3 has torch + transformers; the wheels it lacks (soundfile, soxr, laion-clap and
# the model code's imports, faiss-cpu) are installed from .whl/ (pip download --python-version 3.12 ...).
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD/src:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_extract.py tests/test_flags.py tests/test_resample.py tests/test_clap.py tests/test_wav2vec2.py 2>&1 | tail -15 | tee $OUT/pytest_gpu.txt
B="python3 benchmarks/embedders.py --size default --batch-sizes 1,8,32,128,256 --clips 256 --files 160 --decode-workers 0,8,15 --resample-on-device --json"
for e in clap-laion clap-transformers wav2vec2 mel; do timeout 110 $B --embedders $e > $OUT/h100_$e.json; echo "$e rc=$?"; done
cat $OUT/h100_*.json | grep -v '^    "\(model\|command\)' 
