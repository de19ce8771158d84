"""Several experiments at once on one Ray instance: they share it, none starves."""

from __future__ import annotations

import asyncio
import time

import pytest

import tune_async as tune

pytestmark = pytest.mark.ray


def steps(config):
    for i in range(3):
        time.sleep(0.2)
        tune.report(score=i)


class Occupancy(tune.Callback):
    """Records (time, experiment, +1/-1) as trials of one experiment start and end."""

    def __init__(self, name: str, log: list) -> None:
        self.name = name
        self.log = log

    def on_trial_start(self, iteration, trials, trial, **info):
        self.log.append((time.monotonic(), self.name, +1))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.log.append((time.monotonic(), self.name, -1))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.log.append((time.monotonic(), self.name, -1))


async def _run_side_by_side(names: list[str], results_dir: str, trials: int = 3,
                            reuse_actors: bool = False) -> tuple[list, list]:
    log: list = []
    analyses = await asyncio.gather(*(
        tune.arun(steps, name=name, num_samples=trials, local_dir=results_dir,
                  resources_per_trial={"cpu": 1}, callbacks=[Occupancy(name, log)],
                  reuse_actors=reuse_actors, verbose=0)
        for name in names
    ))
    return analyses, sorted(log)


def _most_running(log: list) -> int:
    running = most = 0
    for _, _, delta in log:
        running += delta
        most = max(most, running)
    return most


def _first_start(log: list, name: str) -> float:
    return min(t for t, n, d in log if n == name and d > 0)


def _last_start(log: list, name: str) -> float:
    return max(t for t, n, d in log if n == name and d > 0)


async def test_two_experiments_share_the_cluster_and_both_finish(results_dir):
    analyses, log = await _run_side_by_side(["a", "b"], results_dir)
    for analysis in analyses:
        assert [t.status for t in analysis.trials] == ["TERMINATED"] * 3
        assert all(t.last_result["training_iteration"] == 3 for t in analysis.trials)
    # Together they never reserved more than the cluster's 2 CPUs ...
    assert _most_running(log) == 2
    # ... and each got its share from the start: b did not wait for a to finish.
    assert _first_start(log, "b") < _last_start(log, "a")
    assert _first_start(log, "a") < _last_start(log, "b")


async def test_three_experiments_on_two_cpus_none_starves(results_dir):
    analyses, log = await _run_side_by_side(["a", "b", "c"], results_dir)
    assert all(t.status == "TERMINATED" for analysis in analyses for t in analysis.trials)
    assert _most_running(log) == 2
    # The one that got no slot at first runs as soon as a slot frees, before the others
    # run all of theirs.
    for name in ("a", "b", "c"):
        others_last = min(_last_start(log, other) for other in ("a", "b", "c") if other != name)
        assert _first_start(log, name) < others_last


async def test_idle_workers_kept_for_reuse_make_room_for_the_other_experiment(results_dir):
    analyses, log = await _run_side_by_side(["a", "b"], results_dir, reuse_actors=True)
    for analysis in analyses:
        assert [t.status for t in analysis.trials] == ["TERMINATED"] * 3
    assert _most_running(log) == 2


# ---- the ledger's rules, with stand-in tenants (no Ray) --------------------------------
class _Tenant:
    def __init__(self) -> None:
        self.used: dict[str, float] = {}
        self.idle: list[dict[str, float]] = []
        self.woken = 0

    def reserved_resources(self):
        return self.used

    def idle_resources(self):
        return {"CPU": sum(r.get("CPU", 0) for r in self.idle)}

    def has_idle_workers(self):
        return bool(self.idle)

    def give_up_idle_worker(self):
        return self.idle.pop(0)

    def take(self, ledger, cpus: float) -> bool:
        if not ledger.grants(self, {"CPU": cpus}, TOTAL):
            return False
        self.used["CPU"] = self.used.get("CPU", 0) + cpus
        ledger.reserved(self)
        return True

    def free(self, ledger, cpus: float) -> None:
        self.used["CPU"] -= cpus
        ledger.freed(self)


TOTAL = {"CPU": 2.0}


def _ledger_with(*tenants):
    from tune_async.execution.ledger import ResourceLedger

    ledger = ResourceLedger()
    for tenant in tenants:
        ledger.join(tenant)
        ledger.set_wakeup(tenant, lambda t=tenant: setattr(t, "woken", t.woken + 1),
                          lambda: True)
    return ledger


def test_ledger_never_grants_more_than_the_cluster_has():
    a, b = _Tenant(), _Tenant()
    ledger = _ledger_with(a, b)
    assert a.take(ledger, 1) and a.take(ledger, 1)
    assert not b.take(ledger, 1)
    assert not a.take(ledger, 1)


def test_ledger_freed_room_goes_to_the_poorer_waiter_and_wakes_it():
    a, b = _Tenant(), _Tenant()
    ledger = _ledger_with(a, b)
    a.take(ledger, 1), a.take(ledger, 1)
    assert not b.take(ledger, 1)  # b waits
    assert not a.take(ledger, 1)  # a waits too (its third trial)
    a.free(ledger, 1)
    assert b.woken == 1
    assert not a.take(ledger, 1)  # a frees a slot: it cannot take it straight back
    assert b.take(ledger, 1)
    assert a.woken == 1  # b took its turn: a is told to look again
    b.free(ledger, 1)
    assert a.take(ledger, 1)


def test_ledger_a_tenant_that_stopped_waiting_holds_nobody_back():
    from tune_async.execution.ledger import ResourceLedger

    a, b = _Tenant(), _Tenant()
    ledger = ResourceLedger()
    for tenant, waiting in ((a, True), (b, False)):
        ledger.join(tenant)
        ledger.set_wakeup(tenant, lambda: None, lambda w=waiting: w)
    assert a.take(ledger, 2)
    assert not b.take(ledger, 1)  # b waits, then its trials go away (still_waiting False)
    a.free(ledger, 1)
    assert a.take(ledger, 1)


def test_ledger_idle_workers_of_others_are_taken_over_when_room_is_needed():
    a, b = _Tenant(), _Tenant()
    ledger = _ledger_with(a, b)
    b.idle = [{"CPU": 1.0}, {"CPU": 1.0}]
    assert a.take(ledger, 1)  # idle workers do not count as reserved
    taken = ledger.take_idle_from_others(
        a, lambda: sum(r["CPU"] for r in b.idle) + a.used["CPU"] > TOTAL["CPU"])
    assert taken == [{"CPU": 1.0}] and len(b.idle) == 1
