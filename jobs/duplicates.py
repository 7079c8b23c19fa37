"""spark-submit entry point: the duplicates stage.

    spark-submit jobs/duplicates.py --conf conf/local.yaml [--set key=value ...] [--json]
"""

import sys

from soundalike.cli import main

if __name__ == "__main__":
    sys.exit(main(["duplicates", *sys.argv[1:]]))
