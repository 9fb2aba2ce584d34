"""The code MLflow runs to build the torsional pyfunc model when it saves or loads one ("models from code": MLflow
refuses to unpickle a model unless told to); see pyfunc.py."""

import mlflow

from orchestrator.families.torsional.pyfunc import TorsionalSampler

mlflow.models.set_model(TorsionalSampler())
