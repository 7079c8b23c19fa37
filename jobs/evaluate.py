"""spark-submit entry point: the evaluate stage.

    spark-submit jobs/evaluate.py --conf conf/local.yaml [--set key=value ...] [--json]
"""

import sys

from soundalike.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
