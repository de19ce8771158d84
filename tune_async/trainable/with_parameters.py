"""``tune.with_parameters``: pass large objects to trainables through Ray's object store."""

from __future__ import annotations

import inspect
import itertools
import threading
import weakref
from collections.abc import Callable
from typing import Any

from tune_async.trainable.aio import is_async_callable
from tune_async.trainable.trainable import Trainable

_UNSET = object()

# Parameters created before ``ray.init``: put into the object store on first use on
# the driver (pickling), or by ``flush_parameter_registry`` once Ray is up.
_pending: weakref.WeakValueDictionary[int, _ParameterRef] = weakref.WeakValueDictionary()
_pending_lock = threading.Lock()
_keys = itertools.count()


def _ray_ready() -> bool:
    import ray

    return ray.is_initialized()


class _ParameterRef:
    """One ``with_parameters`` value: an ObjectRef once put, the value until then.

    Pickles as the ObjectRef only, so the value never travels inside the trainable.
    """

    def __init__(self, value: Any) -> None:
        self._value = value
        self._ref: Any = None
        self._fetched: Any = _UNSET
        self._key = next(_keys)
        if _ray_ready():
            self.put()
        else:
            with _pending_lock:
                _pending[self._key] = self
            _install_post_init_hook()

    def put(self) -> None:
        """Put the value into the object store (once)."""
        if self._ref is None:
            import ray

            self._ref = ray.put(self._value)
            self._value = _UNSET
            with _pending_lock:
                _pending.pop(self._key, None)

    def get(self) -> Any:
        """The value: local if still held, else fetched (once) from the object store."""
        if self._value is not _UNSET:
            return self._value
        if self._fetched is _UNSET:
            import ray

            self._fetched = ray.get(self._ref)
        return self._fetched

    def __reduce__(self) -> tuple:
        if self._ref is None:
            if not _ray_ready():
                # Pickled on the driver before ray.init (e.g. a picklability check):
                # only a key, which resolves in this process.
                return (_lookup_pending, (self._key,))
            self.put()
        return (_restore_ref, (self._ref,))


def _lookup_pending(key: int) -> _ParameterRef:
    with _pending_lock:
        param = _pending.get(key)
    if param is None:
        raise RuntimeError(
            "tune.with_parameters: this trainable was pickled before Ray was initialised, "
            "so its parameters are not in the object store. Call ray.init() first."
        )
    return param


def _restore_ref(ref: Any) -> _ParameterRef:
    obj = _ParameterRef.__new__(_ParameterRef)
    obj._value = _UNSET
    obj._ref = ref
    obj._fetched = _UNSET
    return obj


def flush_parameter_registry() -> None:
    """Put every deferred ``with_parameters`` value into the object store (Ray must be up)."""
    with _pending_lock:
        pending = list(_pending.values())
    for param in pending:
        param.put()


def _fetch(params: dict[str, _ParameterRef]) -> dict[str, Any]:
    return {name: ref.get() for name, ref in params.items()}


def with_parameters(trainable: Callable[..., Any] | type[Trainable], **kwargs: Any) -> Any:
    """Wrap a trainable so it receives large objects from Ray's object store.

    Each keyword argument is put into the object store once; trials fetch it inside
    their actor instead of carrying it in their config or in the pickled trainable::

        def train(config, checkpoint_dir=None, data=None):
            ...

        tune.run(tune.with_parameters(train, data=data))

    Args:
        trainable: A training function (``f(config[, checkpoint_dir], **params)``; its
            return value is passed through) or a :class:`Trainable` subclass whose
            ``setup(config, **params)`` receives the parameters.
        **kwargs: The parameters.

    Returns:
        A function or Trainable subclass to pass to ``tune.run``.
    """
    if isinstance(trainable, type):
        if not issubclass(trainable, Trainable):
            raise ValueError(
                "tune.with_parameters() only works with function trainables or classes "
                f"that inherit from tune.Trainable; got the class {trainable.__name__}."
            )
    elif not callable(trainable):
        raise ValueError(
            "tune.with_parameters() only works with function trainables or Trainable "
            f"subclasses; got {type(trainable).__name__}."
        )
    params = {name: _ParameterRef(value) for name, value in kwargs.items()}
    if isinstance(trainable, type):
        return _wrap_class(trainable, params)
    return _wrap_function(trainable, params)


def _takes_checkpoint_dir(fn: Callable[..., Any]) -> bool:
    try:
        return "checkpoint_dir" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _wrap_class(cls: type[Trainable], params: dict[str, _ParameterRef]) -> type[Trainable]:
    class _Inner(cls):  # type: ignore[misc, valid-type]
        def setup(self, config: dict) -> Any:
            return super().setup(config, **_fetch(params))  # a coroutine if async

    _Inner.__name__ = cls.__name__
    _Inner.__qualname__ = cls.__qualname__
    return _Inner


def _wrap_function(fn: Callable[..., Any], params: dict[str, _ParameterRef]) -> Callable:
    name = getattr(fn, "__name__", "tune_with_parameters")
    if _takes_checkpoint_dir(fn):

        def inner(config: dict, checkpoint_dir: str | None = None) -> Any:
            return fn(config, checkpoint_dir=checkpoint_dir, **_fetch(params))

    else:

        def inner(config: dict) -> Any:  # type: ignore[misc]
            return fn(config, **_fetch(params))

    # Not functools.wraps: its __wrapped__ would make inspect see fn's signature.
    inner.__doc__ = getattr(fn, "__doc__", None)
    inner.__name__ = name
    if hasattr(fn, "__mixins__"):
        inner.__mixins__ = fn.__mixins__  # type: ignore[attr-defined]
    if is_async_callable(fn):  # inner returns fn's coroutine / async generator
        inner._tune_async_trainable = True  # type: ignore[attr-defined]
    return inner


def _install_post_init_hook() -> None:
    """Flush deferred parameters as soon as ``ray.init`` runs (best effort)."""
    try:
        from ray._private import worker
    except Exception:  # pragma: no cover - Ray internals moved
        return
    hooks = getattr(worker, "_post_init_hooks", None)
    if isinstance(hooks, list) and flush_parameter_registry not in hooks:
        hooks.append(flush_parameter_registry)
