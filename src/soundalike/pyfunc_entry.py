"""MLflow models-from-code entry: the file ``log_search_model`` hands MLflow as the model.

MLflow stores this file's source, not a pickled object, and runs it at load time.
"""

import mlflow

from soundalike.mlflow_model import SoundalikeSearchModel

mlflow.models.set_model(SoundalikeSearchModel())
