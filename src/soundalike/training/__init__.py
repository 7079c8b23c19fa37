"""Learned similarity: a Siamese network trained on catalogue metadata, served as the ``siamese`` embedder.

=====================  ===================================================================
module                 what
=====================  ===================================================================
``similarity``         the metadata similarity of two tracks, and the 5 + 5 pair rule
``dataset``            tracks with metadata, the split by track, clips as branch inputs
``model``              the branch (compact CNN or projection head), losses, saved form
``train``              the training loop and the held-out evaluation
``tracking``           MLflow: params, loss curve, metrics, the registered model
=====================  ===================================================================

Run it with ``soundalike train --conf conf/local.yaml`` (or ``jobs/train_similarity.py``); use
the result with ``--set embedder.name=siamese --set embedder.weights_path=<model dir>``.
"""
