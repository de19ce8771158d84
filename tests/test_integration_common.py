"""tune_async.integration without its libraries: lazy imports, clear errors, metric selection."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tune_async.integration._common import is_due, normalize_metrics, select_metrics

# submodule -> (the libraries it can use, the extra that installs them)
INTEGRATIONS = {
    "xgboost": (["xgboost"], "xgboost"),
    "lightgbm": (["lightgbm"], "lightgbm"),
    "mlflow": (["mlflow"], "mlflow"),
    "wandb": (["wandb"], "wandb"),
    "keras": (["keras", "tensorflow"], "keras"),
    "pytorch_lightning": (["lightning", "pytorch_lightning"], "pytorch_lightning"),
}


@pytest.mark.parametrize("name", sorted(INTEGRATIONS))
def test_missing_library_names_the_extra_to_install(name, monkeypatch):
    libraries, extra = INTEGRATIONS[name]
    for library in libraries:
        # None in sys.modules: not importable; an imported submodule would still be found.
        for loaded in [m for m in sys.modules if m.startswith(f"{library}.")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, library, None)
    monkeypatch.delitem(sys.modules, f"tune_async.integration.{name}", raising=False)
    with pytest.raises(ImportError, match=rf'pip install "tune_async\[{extra}\]"'):
        importlib.import_module(f"tune_async.integration.{name}")


def test_importing_tune_async_and_the_package_loads_no_integration_library():
    code = (
        "import sys, tune_async, tune_async.integration\n"
        "heavy = ('xgboost', 'lightgbm', 'mlflow', 'wandb', 'keras', 'lightning', 'torch')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_metric_selection_follows_1x_rules():
    logged = {"eval-logloss": 0.3, "eval-error": 0.1}
    assert select_metrics(logged, None) == logged
    assert select_metrics(logged, normalize_metrics("eval-error")) == {"eval-error": 0.1}
    assert select_metrics(logged, normalize_metrics(["eval-error", "eval-logloss"])) == logged
    assert select_metrics(logged, {"loss": "eval-logloss"}) == {"loss": 0.3}
    with pytest.raises(KeyError, match="'val_loss' was not logged"):
        select_metrics(logged, ["val_loss"])
    with pytest.raises(TypeError, match="metrics must be"):
        normalize_metrics(3)
    assert normalize_metrics([]) is None


def test_checkpoint_frequency():
    assert [i for i in range(12) if is_due(i, 5)] == [0, 5, 10]
    assert not any(is_due(i, 0) for i in range(5))  # 0: never
