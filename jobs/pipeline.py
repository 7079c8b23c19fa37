"""spark-submit entry point: the pipeline stage.

    spark-submit jobs/pipeline.py --conf conf/local.yaml [--set key=value ...] [--json]
"""

import sys

from soundalike.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
