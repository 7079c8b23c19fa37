"""spark-submit entry point: the register stage.

    spark-submit jobs/register.py --conf conf/local.yaml [--set key=value ...] [--json]
"""

import sys

from soundalike.cli import main

if __name__ == "__main__":
    sys.exit(main(["register", *sys.argv[1:]]))
