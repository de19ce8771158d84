"""Per-trial resource requests (the ray.tune 1.x ``Resources`` record)."""

from __future__ import annotations

from typing import Any

import attrs

from tune_async.error import TuneValueError

RESOURCE_KEYS = (
    "cpu",
    "gpu",
    "memory",
    "object_store_memory",
    "extra_cpu",
    "extra_gpu",
    "extra_memory",
    "extra_object_store_memory",
    "custom_resources",
    "extra_custom_resources",
)


@attrs.frozen
class Resources:
    """What one trial asks for. ``extra_*`` amounts are added on top (1.x semantics)."""

    cpu: float = 1
    gpu: float = 0
    memory: float = 0
    object_store_memory: float = 0
    extra_cpu: float = 0
    extra_gpu: float = 0
    extra_memory: float = 0
    extra_object_store_memory: float = 0
    custom_resources: dict = attrs.field(factory=dict)
    extra_custom_resources: dict = attrs.field(factory=dict)

    def __hash__(self) -> int:
        return hash(self.key())

    def key(self) -> tuple:
        return (
            self.cpu_total(),
            self.gpu_total(),
            self.memory + self.extra_memory,
            self.object_store_memory + self.extra_object_store_memory,
            tuple(sorted(self.custom_total().items())),
        )

    def cpu_total(self) -> float:
        return self.cpu + self.extra_cpu

    def gpu_total(self) -> float:
        return self.gpu + self.extra_gpu

    def custom_total(self) -> dict[str, float]:
        total = dict(self.custom_resources)
        for name, amount in self.extra_custom_resources.items():
            total[name] = total.get(name, 0) + amount
        return total

    def as_ray_dict(self) -> dict[str, float]:
        """The request in Ray's resource names (CPU, GPU, memory, custom...)."""
        out: dict[str, float] = {"CPU": self.cpu_total(), "GPU": self.gpu_total()}
        mem = self.memory + self.extra_memory
        if mem:
            out["memory"] = mem
        obj = self.object_store_memory + self.extra_object_store_memory
        if obj:
            out["object_store_memory"] = obj
        out.update(self.custom_total())
        return {k: v for k, v in out.items() if v}

    def summary(self) -> str:
        parts = [f"{self.cpu_total():g} CPUs", f"{self.gpu_total():g} GPUs"]
        parts += [f"{v:g} {k}" for k, v in sorted(self.custom_total().items())]
        return ", ".join(parts)

    @classmethod
    def from_dict(cls, spec: dict[str, Any] | None) -> Resources:
        """Parse ``resources_per_trial``; unknown keys or negative amounts raise."""
        if spec is None:
            return cls()
        if not isinstance(spec, dict):
            raise TuneValueError(
                f"resources_per_trial must be a dict or a PlacementGroupFactory, got {spec!r}"
            )
        unknown = sorted(set(spec) - set(RESOURCE_KEYS))
        if unknown:
            raise TuneValueError(
                f"Error parsing resources_per_trial: unknown key(s) {unknown}; "
                f"expected some of {list(RESOURCE_KEYS)}"
            )
        for key, value in spec.items():
            if key.endswith("custom_resources"):
                if not isinstance(value, dict) or any(
                    not isinstance(v, (int, float)) or v < 0 for v in value.values()
                ):
                    raise TuneValueError(
                        f"resources_per_trial[{key!r}] must be a dict of non-negative numbers, "
                        f"got {value!r}"
                    )
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise TuneValueError(
                    f"resources_per_trial[{key!r}] must be a non-negative number, got {value!r}"
                )
        return cls(**spec)
