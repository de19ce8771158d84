"""Small helpers shared across modules."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import inspect
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import orjson

logger = logging.getLogger(__name__)


def flatten_dict(dt: dict, delimiter: str = "/", prevent_delimiter: bool = False) -> dict:
    """Flatten nested dicts: ``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (1.x semantics)."""
    out: dict = {}
    _flatten_into(out, dt, "", delimiter, prevent_delimiter)
    return out


def _flatten_into(out: dict, dt: dict, prefix: str, delimiter: str, prevent: bool) -> None:
    for key, value in dt.items():
        if prevent and delimiter in str(key):
            raise ValueError(f"Found delimiter {delimiter!r} in key {key!r}")
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            _flatten_into(out, value, name + delimiter, delimiter, prevent)
        else:
            out[name] = value


def unflatten_dict(dt: dict, delimiter: str = "/") -> dict:
    """Inverse of :func:`flatten_dict`."""
    out: dict = {}
    for key, value in dt.items():
        parts = str(key).split(delimiter)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def atomic_write_text(path: str, text: str | Iterable[str]) -> None:
    """Write ``text`` (or its parts, in order) to ``path`` via a temporary file and a
    rename: never half-written, and a large text given in parts is never joined."""
    parts = (text,) if isinstance(text, str) else text
    _atomic_write(path, (part.encode("utf-8") for part in parts))


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename: never half-written."""
    _atomic_write(path, (data,))


def env_number(name: str, default: float) -> float:
    """The environment variable ``name`` as a number >= 0 (``default`` when unset); a
    bad value is a ValueError naming the variable."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if not value >= 0:  # (NaN too)
        raise ValueError(f"{name} must be >= 0, got {text!r}")
    return value


def in_made_dir(directory: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, which creates something in ``directory``; where the directory is
    missing, it is made and ``fn`` called once more. No stat first: the directory
    usually exists, and each system call off the loop is a GIL handoff with it."""
    try:
        return fn(*args)
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        return fn(*args)


# A piece of work on the loop (a large batch, many trials starting at once, a snapshot,
# a large web response) yields after this long: the loop never stalls. 1 ms, not 2:
# beside 8 x 2,000 results a 5 ms heartbeat was more than 3 ms late 7 times in ~80 (30
# with 2 ms), in the same wall time.
LOOP_TURN_S = 0.001
_AFTER_DUE_TIMERS_S = 1e-9  # a sleep this short yields after the timers already due


class _LoopTurn(threading.local):
    """The event loop's current turn, shared by every piece of paced work on it.

    A turn opens when paced work first runs and closes when the loop next runs its
    due timers (a 1 ns timer set at the opening). Each task used to count its own
    1 ms, and asyncio runs every ready task before the timers that came due: at a
    run's start the consumer, the search lane and the trial launches took their turns
    back to back, 3 to 6 ms between two heartbeats. Per thread (one loop each); a
    turn left open by a loop that ended is not the next loop's.
    """

    began = 0.0
    loop: Any = None  # the loop whose turn is open; None: none is

    def elapsed(self) -> float:
        """Seconds since the turn opened (one opens now if none is)."""
        now = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop: nothing to share the turn with
            return 0.0
        if self.loop is loop:
            return now - self.began
        self.loop, self.began = loop, now
        loop.call_later(_AFTER_DUE_TIMERS_S, self._close, loop)
        return 0.0

    def spent(self, every_s: float) -> bool:
        """Whether the open turn has lasted ``every_s`` (none open: no; opens none)."""
        if self.loop is None:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return self.loop is loop and time.perf_counter() - self.began >= every_s

    def _close(self, loop: Any) -> None:
        if self.loop is loop:
            self.loop = None


_loop_turn = _LoopTurn()


def loop_turn_spent(every_s: float = LOOP_TURN_S) -> bool:
    """Whether paced work has held the loop's current turn for ``every_s``. Asking
    opens no turn (a timer each): the consumer asks before every event."""
    return _loop_turn.spent(every_s)


async def after_due_timers_if_spent() -> None:
    """Wait for the loop's next turn if paced work has spent this one, else go on at
    once: for a task that starts work while others' queued callbacks still run."""
    if loop_turn_spent():
        await anyio.sleep(_AFTER_DUE_TIMERS_S)


def yield_to_loop() -> Awaitable[None]:
    """To await: a yield after the timers already due when the loop's turn is spent,
    else at once (``sleep(0)``: the tasks already queued run first, then this one).
    A plain function: the inbox awaits it before every event (no coroutine of its own)."""
    return asyncio.sleep(_AFTER_DUE_TIMERS_S if loop_turn_spent() else 0)


class Pacer:
    """Yields to the event loop once paced work has held it for ``every_s``.

    The time counts from the opening of the loop's turn, which every pacer shares: a
    piece of work that starts after another used up the turn yields after its first
    step. The yield is a timer (a sleep of 1 ns), not ``sleep(0)``: asyncio runs a
    timer that came due during the piece only after the callbacks already queued, and
    a task that yields with ``sleep(0)`` is one of them, so a heartbeat waited for two
    pieces. Timers run in the order they came due: this one after any that fell due
    before it, and after the one that closes the turn.
    """

    def __init__(self, every_s: float = LOOP_TURN_S) -> None:
        self.every_s = every_s
        self.restart()

    def restart(self) -> None:
        """A new piece of work begins: it counts in the loop's current turn."""
        _loop_turn.elapsed()

    async def now_and_then(self) -> None:
        if _loop_turn.elapsed() >= self.every_s:
            await anyio.sleep(_AFTER_DUE_TIMERS_S)


_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
_WRITE_CHUNK = 1 << 18  # parts are gathered up to this size per write call


def _atomic_write(path: str, parts: Iterable[bytes]) -> None:
    # The temporary name is unique to this process and thread (concurrent writers never
    # share one) and costs no random name per write; hidden, and unlike any file the
    # readers look for (experiment_state-*.json ...). Plain descriptors: a Python file
    # object costs five more system calls (stat, seek, tty check), and each call lets
    # another thread take the GIL, which the writer's thread then waits to get back.
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".tmp_{name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        _write_new(tmp, parts)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` in place (created or truncated), not atomically: for a
    file written once before anything reads it (1.x's params files), where a temporary
    file and a rename would be two system calls and a metadata operation more."""
    _write_new(path, (data,))


def _write_new(path: str, parts: Iterable[bytes]) -> None:
    fd = os.open(path, _NEW_FILE_FLAGS, 0o666)
    try:
        _write_parts(fd, parts)
    finally:
        os.close(fd)


def _write_parts(fd: int, parts: Iterable[bytes]) -> None:
    """Write ``parts`` in order, many small ones gathered into one call."""
    pending: list[bytes] = []
    size = 0
    for part in parts:
        pending.append(part)
        size += len(part)
        if size >= _WRITE_CHUNK:
            write_all(fd, b"".join(pending))
            pending, size = [], 0
    if pending:
        write_all(fd, pending[0] if len(pending) == 1 else b"".join(pending))


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may take only part)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class SafeFallbackEncoder(json.JSONEncoder):
    """JSON encoder that never fails: numpy scalars become numbers, the rest ``str(value)``
    (1.x's fallback: a ``Path`` is ``"/data/x"``), or its ``repr`` if ``str`` fails."""

    def default(self, value: Any) -> Any:
        try:
            import numpy as np

            if isinstance(value, np.integer):
                return int(value)
            if isinstance(value, np.floating):
                return float(value)
            if isinstance(value, np.ndarray):
                return value.tolist()
            if isinstance(value, np.bool_):
                return bool(value)
        except ImportError:  # pragma: no cover - numpy is a dependency
            pass
        if isinstance(value, (set, tuple)):
            return list(value)
        try:
            return str(value)
        except Exception:  # noqa: BLE001 - never fail on a value a log cannot show
            return repr(value)


_ENCODER = SafeFallbackEncoder()  # stateless: one instance serves every plain call


def json_dumps(value: Any, **kwargs: Any) -> str:
    # allow_nan keeps NaN/inf readable by pandas, as 1.x's result.json did. Plain calls
    # (several per trial) reuse one encoder rather than build one each.
    if kwargs:
        return json.dumps(value, cls=SafeFallbackEncoder, **kwargs)
    return _ENCODER.encode(value)


def json_line(value: Any) -> bytes:
    """``json_dumps(value) + "\\n"`` as UTF-8 bytes, the same values in compact form.

    A result line is written per result, so the common case (dicts, lists and tuples
    of str, int, finite float, bool and None) goes through orjson, about 15 times
    faster than json's C encoder. Anything else takes ``json_dumps`` and keeps its
    output: NaN and Infinity as 1.x wrote them (orjson writes null), numpy values,
    enums, subclasses and other objects through ``SafeFallbackEncoder``.
    """
    if type(value) is dict and _is_plain(value):
        try:
            # orjson's bytes keep the capacity of its working buffer (about 8 KiB per
            # line, ten times the text): lines waiting for the writer would hold it.
            # An exact-size copy frees the buffer at once, for the next line to reuse.
            return bytes(memoryview(orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)))
        except TypeError:  # e.g. a non-str key, an int beyond 64 bits
            pass
    return (json_dumps(value) + "\n").encode("utf-8")


_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


def _is_plain(values: dict | list | tuple) -> bool:
    """Whether ``values`` holds only plain JSON values (finite floats), nested too."""
    for value in values.values() if type(values) is dict else values:
        cls = value.__class__
        if cls is float:
            if value - value:  # nan for NaN and +-inf, 0.0 otherwise
                return False
        elif cls is dict or cls is list or cls is tuple:
            if not _is_plain(value):
                return False
        elif cls not in _PLAIN_SCALARS:
            return False
    return True


_date = (-1, "")  # (second, its date string): trial names ask many times a second


def date_str(now: float | None = None) -> str:
    """``now`` (default: the time) as ``YYYY-MM-DD_HH-MM-SS``, formatted once a second."""
    global _date
    if now is None:
        now = time.time()
    second = int(now)
    if _date[0] != second:
        _date = (second, time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now)))
    return _date[1]


# ---- 1.x ``ray.tune.utils`` helpers ----------------------------------------------------------


def merge_dicts(d1: dict, d2: dict) -> dict:
    """A deep copy of ``d1`` updated recursively with ``d2`` (new keys allowed)."""
    merged = copy.deepcopy(d1)
    deep_update(merged, d2, new_keys_allowed=True)
    return merged


def deep_update(
    original: dict,
    new_dict: dict,
    new_keys_allowed: bool = False,
    allow_new_subkey_list: list | None = None,
    override_all_if_type_changes: list | None = None,
) -> dict:
    """Update ``original`` in place with ``new_dict``, recursing into dicts; returns it.

    Args:
        original: The dict to update.
        new_dict: The values to put into it.
        new_keys_allowed: Whether ``new_dict`` may add keys ``original`` lacks
            (else ValueError naming the key).
        allow_new_subkey_list: Top-level keys whose sub-dicts may gain new keys.
        override_all_if_type_changes: Top-level keys whose dict value is replaced
            whole when its ``"type"`` entry changes.
    """
    allow_new = allow_new_subkey_list or []
    override = override_all_if_type_changes or []
    for key, value in new_dict.items():
        if key not in original and not new_keys_allowed:
            raise ValueError(f"Unknown config parameter `{key}`")
        old = original.get(key)
        if not (isinstance(old, dict) and isinstance(value, dict)):
            original[key] = value
        elif key in override and "type" in old and "type" in value and (
            old["type"] != value["type"]
        ):
            original[key] = value
        else:
            deep_update(old, value, new_keys_allowed or key in allow_new)
    return original


_NO_DEFAULT = object()


def unflattened_lookup(flat_key: str, lookup: Any, delimiter: str = "/",
                       default: Any = _NO_DEFAULT) -> Any:
    """``lookup["a"][0]["b"]`` for ``flat_key="a/0/b"`` (the flat key itself first).

    Raises KeyError for a missing path unless ``default`` is given.
    """
    if isinstance(lookup, dict) and flat_key in lookup:
        return lookup[flat_key]
    node = lookup
    for key in flat_key.split(delimiter):
        try:
            node = node[key] if isinstance(node, dict) else node[int(key)]
        except (KeyError, IndexError, ValueError, TypeError):
            if default is _NO_DEFAULT:
                raise KeyError(flat_key) from None
            return default
    return node


class warn_if_slow:  # noqa: N801 - the 1.x name
    """Context manager logging a warning when its block takes longer than ``threshold`` s.

    Args:
        name: What the block does (shown in the warning).
        threshold: Seconds; default ``TUNE_WARN_THRESHOLD_S`` or 0.5.
        disable: Never warn.
    """

    def __init__(self, name: str, threshold: float | None = None, disable: bool = False):
        self.name = name
        self.threshold = threshold or float(os.environ.get("TUNE_WARN_THRESHOLD_S", 0.5))
        self.disable = disable
        self.too_slow = False

    def __enter__(self) -> warn_if_slow:
        self._start = time.monotonic()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        elapsed = time.monotonic() - self._start
        if elapsed > self.threshold and not self.disable:
            self.too_slow = True
            logger.warning("The `%s` operation took %.3f s, which may be a performance "
                           "bottleneck.", self.name, elapsed)


def _binds(func: Callable, *args: Any, **kwargs: Any) -> bool:
    try:
        inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return False
    return True


def detect_checkpoint_function(train_func: Callable, abort: bool = False) -> bool:
    """Whether ``train_func`` is ``f(config, checkpoint_dir=None)`` (checkpoints itself).

    With ``abort=True`` a function that is not raises ValueError instead.
    """
    found = _binds(train_func, {}, checkpoint_dir="tmp/path")
    if abort and not found:
        raise ValueError(
            "Provided training function must have 2 args in the signature, and the latter "
            f"arg must contain `checkpoint_dir`, got {inspect.signature(train_func)}"
        )
    return found


def detect_reporter(func: Callable) -> bool:
    """Whether ``func`` is the legacy ``f(config, reporter)``."""
    return _binds(func, {}, reporter=None)


def detect_config_single(func: Callable) -> bool:
    """Whether ``func`` can be called as ``f(config)``."""
    return _binds(func, {})


def find_free_port() -> int:
    """A TCP port that is free on this host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def force_on_current_node(task_or_actor: Any) -> Any:
    """``task_or_actor`` (a Ray remote function or actor class) pinned to this node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    return task_or_actor.options(scheduling_strategy=strategy)


# ---- pinned objects ---------------------------------------------------------------------------

PINNED_OBJECT_PREFIX = "tune_async.PinnedObject:"
# Our references keep the pinned values alive in the object store while this process lives.
_pinned_objects: list = []


def pin_in_object_store(obj: Any) -> str:
    """Put ``obj`` into Ray's object store; returns an id for :func:`get_pinned_object`.

    The value stays available while this (the driver's) process lives. The id is a
    plain string, so it can go into a config or a closure; trials fetch the value
    with ``get_pinned_object(id)`` inside their actors. Starts Ray if needed.
    """
    import ray
    from ray import cloudpickle

    from tune_async.execution.ray_executor import ensure_ray_initialized

    ensure_ray_initialized()
    ref = ray.put(obj)
    _pinned_objects.append(ref)
    # cloudpickle records the ref's owner, so any worker of the cluster can fetch it.
    return PINNED_OBJECT_PREFIX + base64.b64encode(cloudpickle.dumps(ref)).decode("ascii")


def get_pinned_object(pinned_id: str) -> Any:
    """The value :func:`pin_in_object_store` returned ``pinned_id`` for."""
    import ray
    from ray import cloudpickle

    if not isinstance(pinned_id, str) or not pinned_id.startswith(PINNED_OBJECT_PREFIX):
        raise ValueError(
            f"get_pinned_object: `pinned_id` must be an id from pin_in_object_store, "
            f"got {pinned_id!r}"
        )
    ref = cloudpickle.loads(base64.b64decode(pinned_id[len(PINNED_OBJECT_PREFIX):]))
    return ray.get(ref)


# ---- validate_save_restore --------------------------------------------------------------------


def validate_save_restore(
    trainable_cls: Any, config: dict | None = None, num_gpus: float = 0,
    use_object_store: bool = False,
) -> bool:
    """Check that a trainable resumes correctly from its own checkpoint (1.x helper).

    Trains one instance for 3 iterations, saves it, restores a second instance from
    that checkpoint and trains it twice: its iterations must be 4 and 5. Both run as
    Ray actors (Ray is started if needed); their files go to a temporary directory
    that is removed afterwards.

    Args:
        trainable_cls: A ``tune.Trainable`` subclass or a training function.
        config: The config both instances get. Default ``{}``.
        num_gpus: GPUs each instance requests.
        use_object_store: Save and restore through Ray's object store
            (``save_to_object``/``restore_from_object``, what pausing schedulers
            use) instead of a checkpoint path.

    Returns:
        True.

    Raises:
        AssertionError: a check failed (as in 1.x), with what was expected.
    """
    import sys

    import ray

    from tune_async.execution.ray_executor import ensure_ray_initialized

    cls = _as_trainable_cls(trainable_cls)
    ensure_ray_initialized()
    logdir = tempfile.mkdtemp(prefix="validate_save_restore_")
    host = ray.remote(num_gpus=num_gpus)(_TrainableHost)
    cls_box = [ray.put(cls)]  # in a list: fetched only once the actor extended sys.path
    actors = [host.remote(list(sys.path), cls_box, config or {}, logdir) for _ in range(2)]
    try:
        _check_save_restore(ray, *actors, use_object_store)
    finally:
        for actor in actors:
            ray.kill(actor)
        shutil.rmtree(logdir, ignore_errors=True)
    return True


class _TrainableHost:
    """An actor running one trainable whose module only the driver's sys.path may reach."""

    def __init__(self, driver_sys_path: list, cls_box: list, config: dict, logdir: str):
        import sys

        import ray

        from tune_async.trainable.trainable import TrialInfo

        sys.path.extend(p for p in driver_sys_path if p not in sys.path)
        cls = ray.get(cls_box[0])
        self.trainable = cls(config=config, trial_info=TrialInfo(logdir=logdir))

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.trainable, method)(*args)


def _as_trainable_cls(trainable: Any) -> type:
    from tune_async.trainable.function_trainable import wrap_function
    from tune_async.trainable.trainable import Trainable

    if isinstance(trainable, type) and issubclass(trainable, Trainable):
        return trainable
    if callable(trainable) and not isinstance(trainable, type):
        return wrap_function(trainable)
    raise TypeError(
        "validate_save_restore: `trainable_cls` must be a tune.Trainable subclass or a "
        f"training function, got {trainable!r}"
    )


def _check_save_restore(ray: Any, first: Any, second: Any, use_object_store: bool) -> None:
    for _ in range(3):
        result = ray.get(first.call.remote("train"))
    if not result.get("training_iteration"):
        raise AssertionError(
            "Validation will not pass because it requires `training_iteration` to be returned."
        )
    if use_object_store:
        ray.get(second.call.remote("restore_from_object", first.call.remote("save_to_object")))
    else:
        ray.get(second.call.remote("restore", first.call.remote("save")))
    for expected in (4, 5):
        iteration = ray.get(second.call.remote("train")).get("training_iteration")
        if iteration != expected:
            raise AssertionError(
                f"After restoring from iteration 3, training_iteration should be {expected}, "
                f"got {iteration}: the checkpoint did not carry the trainable's progress."
            )


# ---- diagnose_serialization -------------------------------------------------------------------


def diagnose_serialization(trainable: Callable) -> bool | set[str]:
    """Find the variables that keep a trainable from being sent to its trial actors.

    Trials run in other processes, so the trainable is pickled (cloudpickle) with
    everything its code captures. When that fails, this checks each global and
    nonlocal variable the trainable refers to, and prints which ones fail::

        lock = threading.Lock()

        def train(config):
            with lock:  # captured: cannot be pickled
                ...

        tune.utils.diagnose_serialization(train)  # -> {"lock"}

    Move what fails into the function (create it there), or pass it with
    ``tune.with_parameters``.

    Args:
        trainable: A training function (or a ``Trainable`` class: the functions
            defined in its body are inspected).

    Returns:
        True if the trainable serializes; else the set of the names of the variables
        that failed (empty when no captured variable is to blame).
    """
    print(f"Trying to serialize {trainable}...")
    try:
        _pickle(trainable)
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the finding
        print(f"Serialization failed: {exc}")
    else:
        print("Serialization succeeded!")
        return True
    print("Inspecting the scope of the trainable by running "
          f"`inspect.getclosurevars({trainable})`...")
    failures: set[str] = set()
    for kind, variables in _captured_variables(trainable):
        if variables:
            print(f"Detected {len(variables)} {kind} variables. Checking serializability...")
            failures |= _unpicklable(variables)
    if failures:
        print(f"Variable(s) {failures} was found to be non-serializable. Consider either "
              "removing the instantiation/imports of these objects or moving them into the "
              "scope of the trainable. ")
    else:
        print("Nothing was found to have failed the diagnostic test, though serialization "
              "did not succeed.")
    return failures


def _pickle(value: Any) -> bytes:
    from ray import cloudpickle  # what Ray uses to ship the trainable to its actors

    return cloudpickle.dumps(value)


def _captured_variables(trainable: Any) -> list[tuple[str, dict]]:
    """``[("global", {...}), ("nonlocal", {...})]`` over the trainable's functions."""
    functions = ([f for f in vars(trainable).values() if inspect.isfunction(f)]
                 if isinstance(trainable, type) else [getattr(trainable, "func", trainable)])
    globals_: dict = {}
    nonlocals: dict = {}
    for function in functions:
        closure = inspect.getclosurevars(function)
        globals_.update(closure.globals)
        nonlocals.update(closure.nonlocals)
    return [("global", globals_), ("nonlocal", nonlocals)]


def _unpicklable(variables: dict) -> set[str]:
    failed = set()
    for name, value in variables.items():
        try:
            _pickle(value)
            status, reason = "PASSED", None
        except Exception as exc:  # noqa: BLE001
            status, reason = "FAILED", f"{type(exc).__name__}: {exc}"
            failed.add(name)
        print(f"   {value}[name='{name}']... {status}")
        if reason:
            print(f"   {reason}")
    return failed


# ---- wait_for_gpu -----------------------------------------------------------------------------


def wait_for_gpu(gpu_id: int | str | None = None, target_util: float = 0.01, retry: int = 20,
                 delay_s: float = 5, gpu_memory_limit: float | None = None) -> bool:
    """Block until a GPU's memory utilization is at most ``target_util`` (1.x helper).

    Call it at the start of a trainable so a trial does not start on a GPU the previous
    trial has not released yet. Needs ``GPUtil`` (``pip install gputil``).

    Args:
        gpu_id: The GPU's index (int or digit string) or UUID ("GPU-..."), as GPUtil
            lists them. Default: the first GPU Ray assigned to this trial.
        target_util: Memory utilization (0-1) to wait for; 0 waits until it is free.
        retry: How many times to check.
        delay_s: Seconds between checks.
        gpu_memory_limit: Removed in 1.x (ValueError): use ``target_util``.

    Returns:
        True once the GPU's utilization is at most ``target_util``.

    Raises:
        RuntimeError: GPUtil is missing, Ray assigned no GPU, or the memory was not freed
            after ``retry`` checks.
        ValueError: ``gpu_id`` names no GPU GPUtil lists, or has a wrong type.
    """
    if gpu_memory_limit:
        raise ValueError("'gpu_memory_limit' is deprecated. Use 'target_util' instead.")
    gputil = _import_gputil()
    if gputil is None:
        raise RuntimeError("GPUtil must be installed if calling `wait_for_gpu`.")
    gpu_id = _assigned_gpu() if gpu_id is None else gpu_id
    attr, gpu_id = _gpu_key(gpu_id)
    known = {getattr(g, attr) for g in gputil.getGPUs()}
    if gpu_id not in known:
        raise ValueError(
            f"{gpu_id} not found in set of available GPUs: {known}. `wait_for_gpu` takes "
            "either a GPU ordinal ID (e.g., '0') or a UUID (e.g., 'GPU-04546190-...').")
    for attempt in range(int(retry)):
        gpu = next(g for g in gputil.getGPUs() if getattr(g, attr) == gpu_id)
        util = gpu.memoryUtil
        if util <= target_util:
            return True
        logger.info("Waiting for GPU util to reach %s. Util: %.3f", target_util, util)
        if attempt < int(retry) - 1:
            time.sleep(delay_s)
    raise RuntimeError("GPU memory was not freed.")


def _import_gputil() -> Any:
    try:
        import GPUtil
    except ImportError:
        return None
    return GPUtil


def _assigned_gpu() -> Any:
    import ray

    ids = ray.get_gpu_ids()
    if not ids:
        raise RuntimeError("No GPU ids found from `ray.get_gpu_ids()`. Did you set Tune "
                           "resources correctly (resources_per_trial={'gpu': 1})?")
    return ids[0]


def _gpu_key(gpu_id: Any) -> tuple[str, Any]:
    """Which GPUtil attribute ``gpu_id`` names (``id`` or ``uuid``), and its value."""
    if isinstance(gpu_id, str):
        return ("id", int(gpu_id)) if gpu_id.isdigit() else ("uuid", gpu_id)
    if isinstance(gpu_id, int) and not isinstance(gpu_id, bool):
        return "id", gpu_id
    raise ValueError(f"gpu_id ({type(gpu_id)}) must be type str/int.")
