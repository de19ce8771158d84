"""tune_async.integration.keras with Keras 3 on its PyTorch backend (TensorFlow is too heavy
for CI). Skipped where keras or torch is not installed; both are optional extras."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tune_async as tune  # noqa: E402

pytest.importorskip("torch", reason="needs torch (a Keras backend)")
keras = pytest.importorskip("keras", reason="needs the keras extra")
if keras.backend.backend() != "torch":
    pytest.skip("Keras was already set up with another backend", allow_module_level=True)

from tune_async.integration.keras import (  # noqa: E402
    TuneReportCallback,
    TuneReportCheckpointCallback,
    as_trigger_list,
    checkpoint_file_name,
)

EPOCHS, BATCH = 3, 16
# Keras 3 on torch with NumPy 2 warns on every array conversion: noise, not a finding.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def make_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], dtype="float32"))[:, None]
    return (x[:64], y[:64]), (x[64:], y[64:])


def make_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    return model


def train_fn(config, data=None):
    (x, y), validation = data
    if config["kind"] == "checkpoint":
        callback = TuneReportCheckpointCallback({"loss": "val_loss", "mae": "val_mae"})
    else:
        callback = TuneReportCallback(on="batch_end")
    make_model().fit(x, y, batch_size=BATCH, epochs=EPOCHS, validation_data=validation,
                     verbose=0, callbacks=[callback])


def test_callbacks_report_logs_and_checkpoint_the_model(results_dir):
    data = make_data()
    analysis = tune.run(tune.with_parameters(train_fn, data=data),
                        config={"kind": tune.grid_search(["checkpoint", "batches"])},
                        local_dir=results_dir, verbose=0, trial_executor="local")
    by_kind = {t.config["kind"]: t for t in analysis.trials}

    # on="batch_end", no mapping: one result per training batch, Keras' own log names.
    batches = by_kind["batches"]
    assert batches.last_result["training_iteration"] == EPOCHS * (64 // BATCH)
    assert {"loss", "mae"} <= set(batches.last_result)

    trial = by_kind["checkpoint"]
    history = analysis.trial_dataframes[trial.logdir]
    assert len(history) == EPOCHS and "val_loss" not in history
    paths = analysis.get_trial_checkpoints_paths(trial, "loss")
    assert len(paths) == EPOCHS  # frequency 1: each epoch, with that epoch's result
    last_path, last_loss = paths[-1]
    model = keras.models.load_model(os.path.join(last_path, "checkpoint.keras"))
    (_, _), (x_val, y_val) = data
    val_loss, _val_mae = model.evaluate(x_val, y_val, verbose=0)
    assert val_loss == pytest.approx(last_loss, rel=1e-4)


def test_trigger_and_file_name_rules():
    assert as_trigger_list("epoch_end") == ["epoch_end"]
    with pytest.raises(ValueError, match="Invalid trigger time selected"):
        TuneReportCallback(on="validation_end")
    with pytest.raises(ValueError, match="list with the same length"):
        TuneReportCheckpointCallback(frequency=[1, 2], on="epoch_end")
    assert checkpoint_file_name("checkpoint") == "checkpoint.keras"
    assert checkpoint_file_name("model.h5") == "model.h5"
