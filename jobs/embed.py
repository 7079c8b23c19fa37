"""spark-submit entry point: the embed stage.

    spark-submit jobs/embed.py --conf conf/local.yaml [--set key=value ...] [--json]
"""

import sys

from soundalike.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
