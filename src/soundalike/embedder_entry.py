"""MLflow models-from-code entry of :class:`soundalike.mlflow_embedder.SoundalikeEmbedderModel`."""

import mlflow

from soundalike.mlflow_embedder import SoundalikeEmbedderModel

mlflow.models.set_model(SoundalikeEmbedderModel())
