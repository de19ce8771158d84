"""Integrations with training and tracking libraries (mirrors ``ray.tune.integration``).

Each submodule needs its library, installed through an extra of its own::

    tune_async.integration.xgboost            pip install "tune_async[xgboost]"
    tune_async.integration.lightgbm           pip install "tune_async[lightgbm]"
    tune_async.integration.keras              pip install "tune_async[keras]"
    tune_async.integration.pytorch_lightning  pip install "tune_async[pytorch_lightning]"
    tune_async.integration.mlflow             pip install "tune_async[mlflow]"
    tune_async.integration.wandb              pip install "tune_async[wandb]"

Importing this package imports none of them; a submodule whose library is
missing raises an ImportError naming the extra to install.
"""
