"""spark-submit entry point: train the siamese embedder on the catalogue's tags.

    spark-submit [--packages io.delta:delta-spark_4.1_2.13:4.1.0] jobs/train_similarity.py --conf conf/local.yaml [--loss triplet] [--set key=value ...] [--json]

--packages: the Delta jars, needed locally (README "Run the catalogue pipeline"); clusters have them.

Ground truth is the catalogue's metadata sidecar (``catalogue.path`` / ``catalogue.metadata_file``);
training runs on the driver (CUDA when present).
"""

import sys

from soundalike.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
