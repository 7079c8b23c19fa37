"""spark-submit entry point: the index stage.

    spark-submit jobs/build_index.py --conf conf/local.yaml [--set key=value ...] [--json]
"""

import sys

from soundalike.cli import main

if __name__ == "__main__":
    sys.exit(main(["index", *sys.argv[1:]]))
