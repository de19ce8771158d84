"""Expand an unresolved spec (grid searches, Domains, ``sample_from``) into variants.

Semantics follow ray.tune 1.x ``variant_generator.py``:

* every ``grid_search`` is expanded into the full Cartesian product; the first
  grid variable, sorted by path, varies fastest;
* random Domains are re-sampled for every grid point;
* ``sample_from`` functions get ``spec`` with attribute access
  (``spec.config.a``); values that depend on other unresolved values are
  retried, up to ``_MAX_RESOLUTION_PASSES`` passes;
* a value may itself resolve to a grid search or a Domain, which is expanded
  in turn.

Paths are tuples of keys (``("config", "lr")``); list elements are addressed
by their integer index. Everything here is lazy: a grid is never materialised.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Iterator
from typing import Any

import numpy

from tune_async.error import TuneValueError
from tune_async.search.sample import Categorical, Domain, Function, RandomState, grid_search

logger = logging.getLogger(__name__)

_MAX_RESOLUTION_PASSES = 20

# Names available to the ``{"eval": "..."}`` JSON form (as in 1.x).
_STANDARD_IMPORTS = {"random": random, "np": numpy}

Path = tuple


class RecursiveDependencyError(Exception):
    """A ``sample_from`` function read a value that is not resolved yet."""


def generate_variants(
    unresolved_spec: dict, random_state: RandomState = None
) -> Iterator[tuple[dict, dict]]:
    """Generate ``(resolved_vars, spec)`` pairs from an unresolved spec.

    Arguments:
        unresolved_spec: A dict, usually ``{"config": {...}}`` (or a whole
            experiment spec), possibly holding grid searches, Domains and
            ``sample_from`` functions at any depth.
        random_state: Where random Domains draw from (see
            :mod:`tune_async.search.sample`); ``None`` is numpy's global state.

    Yields:
        ``(resolved_vars, spec)``: ``resolved_vars`` maps each path that was
        not a constant (a tuple like ``("config", "lr")``) to its value, and
        ``spec`` is a fresh copy of the spec with every value resolved.
    """
    yield from _generate_variants(unresolved_spec, random_state)


def _generate_variants(spec: dict, random_state: RandomState) -> Iterator[tuple[dict, dict]]:
    spec = _copy_spec(spec)
    _, domain_vars, grid_vars = parse_spec_vars(spec)

    if not domain_vars and not grid_vars:
        yield {}, spec
        return

    nested_grid = any(_contains_unresolved(domain.categories) for _, domain in grid_vars)
    for grid_spec in _grid_search_generator(spec, grid_vars):
        outer_vars = _resolve_domain_vars(grid_spec, domain_vars, random_state)
        if not nested_grid and not any(_contains_unresolved(v) for v in outer_vars.values()):
            for path, _ in grid_vars:
                outer_vars[path] = _get_value(grid_spec, path)
            yield outer_vars, grid_spec
            continue
        # A resolved value holds new grid searches or Domains: expand those too.
        for resolved, variant in _generate_variants(grid_spec, random_state):
            resolved_vars = {
                path: _get_value(variant, path) if _contains_unresolved(value) else value
                for path, value in outer_vars.items()
            }
            for path, _ in grid_vars:
                resolved_vars[path] = _get_value(variant, path)
            for path, value in resolved.items():
                if (
                    path in resolved_vars
                    and value != resolved_vars[path]
                    and _is_resolved(resolved_vars[path])
                ):
                    raise ValueError(
                        f"The variable `{path}` could not be unambiguously "
                        "resolved to a single value. Consider simplifying your "
                        "configuration."
                    )
                resolved_vars[path] = value
            yield resolved_vars, variant


def get_preset_variants(
    spec: dict, preset: dict, random_state: RandomState = None
) -> Iterator[tuple[dict, dict]]:
    """Variants of ``spec`` with the values of ``preset`` (a point to evaluate) fixed.

    ``preset`` is deep-merged into ``spec["config"]``; a key that is not in the
    search space raises ``ValueError``, a value outside its Domain only warns.
    Preset values that replaced a Domain or grid search appear in
    ``resolved_vars`` (so they show in tags and progress columns).
    """
    spec = _copy_spec(spec)
    preset_vars: dict = {}
    _merge_preset(spec.setdefault("config", {}), preset, ("config",), preset_vars)
    for resolved_vars, variant in _generate_variants(spec, random_state):
        yield {**preset_vars, **resolved_vars}, variant


def _merge_preset(space: dict, preset: dict, path: Path, preset_vars: dict) -> None:
    for key, value in preset.items():
        if not isinstance(space, dict) or key not in space:
            full = "/".join(str(p) for p in path[1:] + (key,))
            raise ValueError(
                f"Pre-set config key `{full}` does not correspond to a valid key "
                "in the search space definition. Please add this path to the "
                "`config` variable passed to `tune.run()`."
            )
        target = space[key]
        resolved, domain = _try_resolve(target)
        if resolved and isinstance(value, dict) and isinstance(target, dict):
            _merge_preset(target, value, path + (key,), preset_vars)
            continue
        if not resolved:
            _warn_if_invalid(domain, value, path + (key,))
            preset_vars[path + (key,)] = value
        space[key] = value


def _warn_if_invalid(domain: Domain, value: Any, path: Path) -> None:
    try:
        valid = domain.is_valid(value)
    except Exception:  # a comparison the domain can't make: just don't judge
        valid = True
    if not valid:
        logger.warning(
            "Pre-set value `%s` is not within valid values of parameter `%s`: %s",
            value,
            "/".join(str(p) for p in path[1:]),
            domain.domain_str,
        )


# ---------------------------------------------------------------------------
# Counting


def count_spec_samples(spec: dict, num_samples: int = 1) -> int:
    """Number of variants ``num_samples`` passes over ``spec`` yield (grid size × samples)."""
    _, _, grid_vars = parse_spec_vars(spec)
    grid_count = 1
    for _, domain in grid_vars:
        grid_count *= len(domain.categories)
    return num_samples * grid_count


def count_variants(spec: dict, presets: list[dict] | None = None) -> int:
    """Total trials for an experiment spec (``spec["num_samples"]``, default 1).

    Each preset (point to evaluate) replaces one sample and contributes the grid
    size of the spec with the preset applied.
    """
    total = 0
    samples_left = spec.get("num_samples", 1)
    for preset in presets or []:
        preset_spec = copy.deepcopy(spec)
        _merge_preset(preset_spec.setdefault("config", {}), preset, ("config",), {})
        total += count_spec_samples(preset_spec, 1)
        samples_left -= 1
    if samples_left > 0:
        total += count_spec_samples(spec, samples_left)
    return total


def has_unresolved_values(spec: dict) -> bool:
    """True if ``spec`` (e.g. a config) holds a Domain, grid search or ``{"eval": ...}``."""
    _, domain_vars, grid_vars = parse_spec_vars(spec)
    return bool(domain_vars or grid_vars)


# ---------------------------------------------------------------------------
# Formatting


def format_vars(resolved_vars: dict) -> str:
    """Format resolved variables for the experiment tag: ``"a=1,b=0.001"``.

    Each key is the last string piece of its path (plus any list indices after
    it); floats are formatted ``{:.5}``; ``/`` becomes ``_``.
    """
    out = []
    for path, value in sorted(resolved_vars.items(), key=lambda item: _path_sort_key(item[0])):
        if path[0] in ("run", "env", "resources_per_trial"):
            continue  # already part of the trial name
        pieces = []
        last_string = True
        for key in path[::-1]:
            if isinstance(key, int):
                pieces.append(str(key))
            elif last_string:
                last_string = False
                pieces.append(key)
        pieces.reverse()
        out.append(_clean_value("_".join(pieces)) + "=" + _clean_value(value))
    return ",".join(out)


def _path_sort_key(path: Path) -> tuple:
    # Ints before strings, so mixed paths sort instead of raising TypeError.
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in path)


def _clean_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5}"
    return str(value).replace("/", "_")


def flatten_resolved_vars(resolved_vars: dict) -> dict:
    """``{("config", "a", "b"): v}`` -> ``{"a/b": v}`` (the trial's evaluated_params)."""
    flat = {}
    for pieces, value in resolved_vars.items():
        if pieces and pieces[0] == "config":
            pieces = pieces[1:]
        flat["/".join(str(piece) for piece in pieces)] = value
    return flat


# ---------------------------------------------------------------------------
# Parsing


def parse_spec_vars(spec: dict) -> tuple[list, list, list]:
    """Split ``spec`` into ``(resolved, domain_vars, grid_vars)`` lists of ``(path, value)``.

    ``grid_vars`` is sorted by path (the expansion order).
    """
    resolved, unresolved = _split_resolved_unresolved_values(spec)
    resolved_vars = list(resolved.items())
    if not unresolved:
        return resolved_vars, [], []
    grid_vars = []
    domain_vars = []
    for path, value in unresolved.items():
        if value.is_grid():
            _check_grid_not_empty(path, value)
            grid_vars.append((path, value))
        else:
            domain_vars.append((path, value))
    grid_vars.sort(key=lambda item: _path_sort_key(item[0]))
    return resolved_vars, domain_vars, grid_vars


def _check_grid_not_empty(path: Path, domain: Categorical) -> None:
    # An empty grid would silently make zero trials (1.x ran nothing and said nothing).
    if not domain.categories:
        (key,) = flatten_resolved_vars({path: None})
        raise TuneValueError(
            f"grid_search for config key {key!r}: `values` must be a non-empty list, got []"
        )


def _try_resolve(value: Any) -> tuple[bool, Any]:
    if isinstance(value, Domain):
        return False, value
    if isinstance(value, dict) and len(value) == 1 and "eval" in value:
        return False, Function(_eval_function(value["eval"]))
    if isinstance(value, dict) and len(value) == 1 and "grid_search" in value:
        grid_values = value["grid_search"]
        if not isinstance(grid_values, list):
            raise TuneValueError(f"Grid search expected list of values, got: {grid_values!r}")
        return False, Categorical(grid_values).grid()
    return True, value


def _eval_function(expression: str):
    def evaluate(spec):
        return eval(expression, dict(_STANDARD_IMPORTS), {"spec": spec})  # noqa: S307

    return evaluate


def _is_resolved(value: Any) -> bool:
    resolved, _ = _try_resolve(value)
    return resolved


def _split_resolved_unresolved_values(spec: dict) -> tuple[dict, dict]:
    resolved_vars: dict = {}
    unresolved_vars: dict = {}
    for key, value in spec.items():
        resolved, value = _try_resolve(value)
        if not resolved:
            unresolved_vars[(key,)] = value
        elif isinstance(value, dict):
            _add_children(key, value, resolved_vars, unresolved_vars)
        elif isinstance(value, list):
            for index, element in enumerate(value):
                _add_children(key, {index: element}, resolved_vars, unresolved_vars)
        else:
            resolved_vars[(key,)] = value
    return resolved_vars, unresolved_vars


def _add_children(key: Any, child: dict, resolved_vars: dict, unresolved_vars: dict) -> None:
    child_resolved, child_unresolved = _split_resolved_unresolved_values(child)
    for path, value in child_resolved.items():
        resolved_vars[(key,) + path] = value
    for path, value in child_unresolved.items():
        unresolved_vars[(key,) + path] = value


# ---------------------------------------------------------------------------
# Expansion


def _grid_search_generator(spec: dict, grid_vars: list) -> Iterator[dict]:
    if not grid_vars:
        yield spec
        return
    sizes = [len(domain.categories) for _, domain in grid_vars]
    if 0 in sizes:
        return  # an empty grid_search yields no variants
    # Copy a template without the (possibly long) grid value lists each time.
    template = _copy_spec(spec)
    for path, _ in grid_vars:
        _assign_value(template, path, None)
    indices = [0] * len(grid_vars)
    while True:
        variant = _copy_spec(template)
        for index, (path, domain) in zip(indices, grid_vars, strict=True):
            _assign_value(variant, path, _copy_spec(domain.categories[index]))
        yield variant
        if not _increment(indices, sizes):
            return


def _increment(indices: list, sizes: list) -> bool:
    """Odometer step, first position fastest; False once every combination was made."""
    for position, size in enumerate(sizes):
        indices[position] += 1
        if indices[position] < size:
            return True
        indices[position] = 0
    return False


def _resolve_domain_vars(spec: dict, domain_vars: list, random_state: RandomState) -> dict:
    resolved: dict = {}
    error: Exception | None = None
    for _ in range(_MAX_RESOLUTION_PASSES):
        error = None
        for path, domain in domain_vars:
            if path in resolved:
                continue
            try:
                value = domain.sample(_UnresolvedAccessGuard(spec), random_state=random_state)
            except RecursiveDependencyError as exc:
                error = exc
            except Exception as exc:
                raise ValueError(f"Failed to evaluate expression: {path}: {domain}") from exc
            else:
                value = _copy_spec(value)  # trials never share a mutable value
                _assign_value(spec, path, value)
                resolved[path] = value
        if error is None:
            break
    if error is not None:
        raise error
    return resolved


_ATOMIC = (int, float, str, bool, type(None), bytes, complex)


def _copy_spec(value: Any) -> Any:
    """Deep copy of plain dicts/lists; Domains are shared (they are never mutated)."""
    kind = type(value)
    if kind is dict:
        return {key: _copy_spec(item) for key, item in value.items()}
    if kind is list:
        return [_copy_spec(item) for item in value]
    if kind in _ATOMIC or isinstance(value, Domain):
        return value
    return copy.deepcopy(value)


def _contains_unresolved(value: Any) -> bool:
    if not _is_resolved(value):
        return True
    if isinstance(value, dict):
        return any(_contains_unresolved(item) for item in value.values())
    if isinstance(value, list):
        return any(_contains_unresolved(item) for item in value)
    return False


def _get_value(spec: Any, path: Path) -> Any:
    for key in path:
        spec = spec[key]
    return spec


def _assign_value(spec: Any, path: Path, value: Any) -> None:
    for key in path[:-1]:
        spec = spec[key]
    spec[path[-1]] = value


class _UnresolvedAccessGuard(dict):
    """The ``spec`` given to ``sample_from`` functions: a dict with attribute access.

    Reading a value that is not resolved yet raises RecursiveDependencyError,
    so the resolver retries it in a later pass.
    """

    def __getattr__(self, item: str) -> Any:
        try:
            value = dict.__getitem__(self, item)
        except KeyError:
            raise AttributeError(item) from None
        return self._guard(item, value)

    def __getitem__(self, item: Any) -> Any:
        return self._guard(item, dict.__getitem__(self, item))

    def get(self, item: Any, default: Any = None) -> Any:
        return self[item] if item in self else default

    @staticmethod
    def _guard(item: Any, value: Any) -> Any:
        if not _is_resolved(value):
            raise RecursiveDependencyError(f"`{item}` recursively depends on {value}")
        if isinstance(value, dict):
            return _UnresolvedAccessGuard(value)
        return value


__all__ = [
    "RecursiveDependencyError",
    "count_spec_samples",
    "count_variants",
    "flatten_resolved_vars",
    "format_vars",
    "generate_variants",
    "get_preset_variants",
    "grid_search",  # 1.x path: ray.tune.suggest.variant_generator.grid_search
    "has_unresolved_values",
    "parse_spec_vars",
]
