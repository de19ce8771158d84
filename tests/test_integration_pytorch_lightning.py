"""tune_async.integration.pytorch_lightning with a real Lightning Trainer on CPU.

Skipped where lightning (an optional extra, not in ``test``: it needs torch) is not
installed."""

from __future__ import annotations

import os

import pytest

import tune_async as tune

torch = pytest.importorskip("torch", reason="needs torch")
pl = pytest.importorskip("lightning.pytorch", reason="needs the pytorch_lightning extra")

from tune_async.integration.pytorch_lightning import (  # noqa: E402 - after the importorskip
    TuneCallback,
    TuneReportCallback,
    TuneReportCheckpointCallback,
    as_trigger_list,
)

EPOCHS = 3
# Lightning's advice on DataLoader workers and on logging: noise for a 96-row dataset.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


class Regression(pl.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def _loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def make_loaders():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])
    train = torch.utils.data.TensorDataset(x[:64], y[:64])
    val = torch.utils.data.TensorDataset(x[64:], y[64:])
    return (torch.utils.data.DataLoader(train, batch_size=16),
            torch.utils.data.DataLoader(val, batch_size=32))  # one batch: exact mean


def train_fn(config):
    torch.manual_seed(0)
    if config["kind"] == "checkpoint":
        callback = TuneReportCheckpointCallback({"loss": "val_loss"})
    else:
        callback = TuneReportCallback(on="batch_end")
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=1,
                         callbacks=[callback])
    trainer.fit(Regression(config["lr"]), *make_loaders())


def test_callbacks_report_metrics_and_checkpoint_the_module(results_dir):
    analysis = tune.run(train_fn,
                        config={"lr": 0.05, "kind": tune.grid_search(["checkpoint", "batches"])},
                        local_dir=results_dir, verbose=0, trial_executor="local")
    by_kind = {t.config["kind"]: t for t in analysis.trials}

    # on="batch_end", all metrics: one result per training batch (4 per epoch).
    batches = by_kind["batches"]
    assert batches.last_result["training_iteration"] == EPOCHS * 4
    assert "train_loss" in batches.last_result

    # validation_end: the sanity check's validation reports nothing; one result per epoch.
    trial = by_kind["checkpoint"]
    history = analysis.trial_dataframes[trial.logdir]
    assert len(history) == EPOCHS and "val_loss" not in history
    paths = analysis.get_trial_checkpoints_paths(trial, "loss")
    assert len(paths) == EPOCHS
    assert [os.path.basename(p) for p, _ in paths] == [
        "checkpoint_000004", "checkpoint_000008", "checkpoint_000012"]  # the global steps
    last_path, last_loss = paths[-1]
    module = Regression.load_from_checkpoint(os.path.join(last_path, "checkpoint"))
    _, val_loader = make_loaders()
    with torch.no_grad():
        assert module._loss(next(iter(val_loader))).item() == pytest.approx(last_loss, rel=1e-5)


def test_trigger_rules():
    assert as_trigger_list(["epoch_end", "validation_end"]) == ["epoch_end", "validation_end"]
    with pytest.raises(ValueError, match="no Lightning 2 hook"):
        TuneReportCallback(on="init_start")
    with pytest.raises(ValueError, match="Invalid trigger time selected"):
        TuneReportCheckpointCallback(on="val_end")
    assert isinstance(TuneReportCallback(), (TuneCallback, pl.Callback))
