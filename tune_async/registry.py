"""The trainable registry (``tune.register_trainable``) and ``run`` resolution."""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any

import cloudpickle

from tune_async.error import TuneError, TuneValueError
from tune_async.trainable.function_trainable import wrap_function
from tune_async.trainable.trainable import Trainable

logger = logging.getLogger(__name__)

_registry: dict[str, type[Trainable]] = {}
_lock = threading.Lock()


def _to_trainable_cls(name: str, trainable: Any, warn: bool = True) -> type[Trainable]:
    if isinstance(trainable, type):
        if not issubclass(trainable, Trainable):
            raise TypeError(
                f"register_trainable({name!r}): a class must subclass tune.Trainable, "
                f"got {trainable.__name__}."
            )
        return trainable
    if callable(trainable):
        return wrap_function(trainable, warn=warn)
    raise TypeError(
        f"register_trainable({name!r}): expected a Trainable subclass or a function, "
        f"got {type(trainable).__name__}."
    )


def register_trainable(name: str, trainable: Any, warn: bool = True) -> None:
    """Register a trainable under ``name`` so ``tune.run(name)`` finds it.

    Args:
        name: Name to register under.
        trainable: A :class:`Trainable` subclass, or a function (wrapped with
            ``wrap_function``).
        warn: Log that a function was wrapped. Default True.
    """
    if not isinstance(name, str):
        raise TypeError(f"register_trainable: `name` must be a str, got {type(name).__name__}.")
    cls = _to_trainable_cls(name, trainable, warn)
    if warn and cls is not trainable:
        logger.debug("Detected function for trainable %r; wrapped it as a Trainable.", name)
    with _lock:
        _registry[name] = cls


_envs: dict[str, Any] = {}


def register_env(name: str, env_creator: Any) -> None:
    """Register an environment creator ``env_creator(env_config)`` under ``name`` (1.x API).

    Trainables look it up with :func:`get_env_creator`; a config's ``"env"`` key also
    names the trial (``<trainable>_<env>_<id>``), as in 1.x.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_env: name must be a non-empty str, got {name!r}")
    if not callable(env_creator):
        raise TypeError(f"register_env: env_creator must be callable, got {env_creator!r}")
    _envs[name] = env_creator


def get_env_creator(name: str) -> Any:
    """The creator registered with :func:`register_env` (unknown name: TuneError)."""
    try:
        return _envs[name]
    except KeyError:
        raise TuneError(f"Unknown env: {name!r}. Register it with tune.register_env().") from None


def has_trainable(name: str) -> bool:
    """Whether a trainable is registered under ``name``."""
    return name in _registry


def get_trainable_cls(name: str) -> type[Trainable]:
    """The Trainable class registered under ``name``.

    Raises:
        TuneError: No trainable has that name.
    """
    try:
        return _registry[name]
    except KeyError:
        raise TuneValueError(f"Unknown trainable: {name}") from None


def _name_of(run: Any) -> str:
    if hasattr(run, "_name"):
        return str(run._name)
    fn_name = getattr(run, "__name__", None)
    if fn_name is None:
        logger.warning("No name detected on trainable. Using DEFAULT.")
        return "DEFAULT"
    if fn_name == "<lambda>":
        return "lambda"
    if fn_name.startswith("<"):
        return "DEFAULT"
    return fn_name


def resolve_trainable(run: Any) -> tuple[str, type[Trainable]]:
    """Resolve an experiment's ``run`` into ``(name, Trainable class)``.

    A string is looked up in the registry; a :class:`Trainable` subclass or a function
    is registered under its name (``_name``, else ``__name__``; ``"lambda"`` for
    lambdas, ``"DEFAULT"`` for other unnamed callables).

    Raises:
        TuneError: ``run`` is an unknown name, or neither a string nor a trainable.
        TypeError: ``run`` is a class that does not subclass Trainable.
    """
    if isinstance(run, str):
        return run, get_trainable_cls(run)
    if isinstance(run, type) and issubclass(run, Trainable):
        name = _name_of(run)
        register_trainable(name, run, warn=False)
        return name, run
    if callable(run):
        name = _name_of(run)
        register_trainable(name, run)  # (1.x's "Function checkpointing is disabled")
        return name, _registry[name]
    raise TuneValueError("Improper 'run' - not string nor trainable.")


def _unpicklable_parts(obj: Any) -> list[str]:
    """Names of the globals, closure variables or class attributes that fail to pickle."""
    fn = getattr(obj, "_function", None) if isinstance(obj, type) else None
    target = fn if fn is not None else obj
    candidates: dict[str, Any] = {}
    if inspect.isfunction(target):
        code = target.__code__
        candidates.update(
            (name, target.__globals__[name]) for name in code.co_names if name in target.__globals__
        )
        for name, cell in zip(code.co_freevars, target.__closure__ or (), strict=False):
            try:
                candidates[name] = cell.cell_contents
            except ValueError:  # an empty cell
                continue
    elif isinstance(target, type):
        candidates.update(
            (k, v) for k, v in vars(target).items() if not (k.startswith("__") and k.endswith("__"))
        )
    bad = []
    for name, value in candidates.items():
        if inspect.ismodule(value):
            continue
        try:
            cloudpickle.dumps(value)
        except Exception:
            bad.append(f"{name!r} ({type(value).__name__})")
    return bad


def check_picklable(trainable: Any, name: str) -> None:
    """Raise a helpful TypeError if ``trainable`` cannot be sent to a Ray actor.

    Args:
        trainable: The Trainable class (or function) to check.
        name: The trainable's name, for the message.
    """
    try:
        cloudpickle.dumps(trainable)
    except Exception as exc:
        parts = _unpicklable_parts(trainable)
        culprit = f" It refers to {', '.join(parts)}, which could not be pickled." if parts else ""
        raise TypeError(
            f"The trainable {name!r} could not be pickled to send it to the trial actors: "
            f"{type(exc).__name__}: {exc}.{culprit} To fix this, create such objects "
            "inside the trainable function (or Trainable.setup), pass large or shared "
            "data with tune.with_parameters(trainable, data=...), and avoid capturing "
            "locks, open files, sockets or clients in the trainable's closure or globals."
        ) from exc
