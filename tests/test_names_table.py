"""README's "1.x names and where they live" table is generated from the package (issue #12)."""

from __future__ import annotations

import importlib
import subprocess
import sys

from tune_async import _names_table as nt


def test_readme_tables_are_what_the_package_holds_now():
    with open(nt.readme_path(), encoding="utf-8") as f:
        readme = f.read()
    assert nt.render(readme) == readme, (
        f"README.md's tables are out of date; regenerate them with: {nt.REGENERATE}")


def test_names_shown_available_import_from_their_module():
    for module in nt.MODULES_1X:
        if module.extra or module.replaced_by:
            continue
        available = nt.available_names(module) or set()
        imported = importlib.import_module(module.target) if available else None
        for name in available:
            assert getattr(imported, name) is not None, f"{module.target}.{name}"


def test_the_status_column():
    present = nt.Module1x("ray.tune.stopper", ("Stopper", "TimeoutStopper"))
    assert nt.status(present, nt.available_names(present)) == "✓"
    partial = nt.Module1x("ray.tune.stopper", ("Stopper", "NoSuchStopper"))
    assert nt.status(partial, nt.available_names(partial)) == "not yet: `NoSuchStopper`"
    missing = nt.Module1x("ray.tune.no_such_module", ("Thing",))
    assert nt.available_names(missing) is None
    assert nt.status(missing, None) == "not yet"
    optional = nt.Module1x("ray.tune.suggest.optuna", ("OptunaSearch",), extra="optuna")
    assert nt.status(optional, nt.available_names(optional)) == (
        "✓ (extra `tune_async[optuna]`)")
    gone = nt.Module1x("ray.tune.suggest.hebo", ("HEBOSearch",), extra="hebo")
    assert nt.status(gone, nt.available_names(gone)).startswith("unavailable")
    replaced = nt.Module1x("ray.tune.trial_runner", ("TrialRunner",), replaced_by="x")
    assert nt.status(replaced, None) == "replaced by x"


def test_optional_libraries_are_read_not_imported():
    code = (
        "import sys\n"
        "from tune_async import _names_table as nt\n"
        "nt.names_table()\n"
        "heavy = ['optuna', 'hyperopt', 'xgboost', 'lightgbm', 'mlflow', 'wandb', 'ax',\n"
        "         'nevergrad', 'skopt', 'zoopt', 'flaml', 'bayes_opt', 'sklearn', 'GPy']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_documented_loggers_are_the_modules_loggers():
    assert nt.check_logger_names() == []
    documented = {ours for _, ours, _ in nt.LOGGERS_1X}
    assert {"tune_async.controller", "tune_async.checkpoint",
            "tune_async.execution.ray_executor", "tune_async.api"} <= documented


def test_check_fails_on_a_stale_readme_and_the_command_rewrites_it(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{nt.NAMES_START}\nold\n{nt.NAMES_END}\n\n"
                      f"{nt.LOGGERS_START}\n{nt.LOGGERS_END}\ntail\n")
    assert nt.main(["--check", "--readme", str(readme)]) == 1
    assert nt.REGENERATE in capsys.readouterr().err
    assert nt.main(["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "| `ray.tune.schedulers` | `tune_async.schedulers` |" in text
    assert "| `ray.tune.trial_runner` | `tune_async.controller` |" in text
    assert text.startswith("# x\n") and text.endswith("tail\n") and "old" not in text
    assert nt.main(["--check", "--readme", str(readme)]) == 0
