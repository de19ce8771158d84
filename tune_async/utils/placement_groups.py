"""PlacementGroupFactory (mirrors ``ray.tune.utils.placement_groups``)."""

from __future__ import annotations

from typing import Any

from tune_async.error import TuneValueError

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroupFactory:
    """Resources for one trial as placement-group bundles.

    Args:
        bundles: A list of resource dicts, e.g. ``[{"CPU": 1}, {"CPU": 2}]``.
            Bundle 0 is for the trainable actor itself; further bundles are
            for the workers it starts.
        strategy: One of ``PACK`` (default), ``SPREAD``, ``STRICT_PACK``,
            ``STRICT_SPREAD``.
    """

    def __init__(self, bundles: list[dict[str, float]], strategy: str = "PACK", *args: Any,
                 **kwargs: Any) -> None:
        if not isinstance(bundles, list) or not bundles:
            raise TuneValueError(
                f"PlacementGroupFactory bundles must be a non-empty list of dicts, got {bundles!r}"
            )
        for bundle in bundles:
            if not isinstance(bundle, dict) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                for v in bundle.values()
            ):
                raise TuneValueError(
                    f"Each placement group bundle must be a dict of non-negative numbers, "
                    f"got {bundle!r}"
                )
        if strategy not in STRATEGIES:
            raise TuneValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        # An all-zero head bundle is invalid in Ray; 1.x adds a tiny CPU share.
        self._bundles = [{k: float(v) for k, v in b.items() if v} for b in bundles]
        self._strategy = strategy
        self._args = args
        self._kwargs = kwargs

    @property
    def bundles(self) -> list[dict[str, float]]:
        return [dict(b) for b in self._bundles]

    @property
    def strategy(self) -> str:
        return self._strategy

    @property
    def head_cpus(self) -> float:
        return self._bundles[0].get("CPU", 0.0)

    def required_resources(self) -> dict[str, float]:
        """The sum over all bundles (what one trial takes from the cluster)."""
        total: dict[str, float] = {}
        for bundle in self._bundles:
            for name, amount in bundle.items():
                total[name] = total.get(name, 0.0) + amount
        return total

    def key(self) -> tuple:
        return (
            tuple(tuple(sorted(b.items())) for b in self._bundles),
            self._strategy,
        )

    def summary(self) -> str:
        req = self.required_resources()
        return ", ".join(f"{v:g} {k}" for k, v in sorted(req.items())) + f" ({self._strategy})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroupFactory) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        return f"PlacementGroupFactory({self._bundles!r}, strategy={self._strategy!r})"

    def __call__(self) -> Any:
        from ray.util.placement_group import placement_group

        return placement_group(self.bundles, self._strategy, *self._args, **self._kwargs)
