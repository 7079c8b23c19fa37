"""spark-submit entry point: the embed stage.

    spark-submit [--packages io.delta:delta-spark_4.1_2.13:4.1.0] jobs/embed.py --conf conf/local.yaml [--set key=value ...] [--json]

--packages: the Delta jars, needed locally (README "Run the catalogue pipeline"); clusters have them.
"""

import sys

from soundalike.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
