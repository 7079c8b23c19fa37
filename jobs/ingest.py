"""spark-submit entry point: the ingest stage.

    spark-submit [--packages io.delta:delta-spark_4.1_2.13:4.1.0] jobs/ingest.py --conf conf/local.yaml [--set key=value ...] [--json]

--packages: the Delta jars, needed locally (README "Run the catalogue pipeline"); clusters have them.
"""

import sys

from soundalike.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
