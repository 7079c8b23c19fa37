"""soundalike: audio similarity search for music catalogues.

The core (decode, chunk, features, embed, index, fuse, compare) is plain functions on numpy
arrays; Spark jobs, MLflow models, the CLI and the web app are thin shells around it.
"""

__version__ = "0.1.0"
