"""Small helpers shared across modules."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


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


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never half-written."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".part")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class SafeFallbackEncoder(json.JSONEncoder):
    """JSON encoder that never fails: numpy scalars become numbers, the rest ``repr``."""

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
        return repr(value)


def json_dumps(value: Any, **kwargs: Any) -> str:
    # allow_nan keeps NaN/inf readable by pandas, as 1.x's result.json did
    return json.dumps(value, cls=SafeFallbackEncoder, **kwargs)


def date_str() -> str:
    import datetime

    return datetime.datetime.today().strftime("%Y-%m-%d_%H-%M-%S")
