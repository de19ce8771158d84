"""``ExperimentAnalysis("s3://bucket/exp/name")``: an experiment read straight from storage."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from tune_async.sync.storage import filesystem_for, get_storage

_downloads: list[str] = []


def local_copy(url: str) -> str:
    """A local path holding what ``url`` names (an experiment directory or a state file).

    ``file://`` URLs are read in place; any other fsspec URL is downloaded to a
    temporary directory named like the experiment, removed when the interpreter
    exits (checkpoint paths the analysis returns stay valid until then).

    Raises:
        ValueError: nothing is stored at ``url``.
    """
    fs, path = filesystem_for(url)
    if "file" in _protocols(fs):
        return path
    if not fs.exists(path):
        raise ValueError(f"{url} is not a valid file or directory.")
    is_file = fs.isfile(path)
    experiment_url = url.rstrip("/").rsplit("/", 1)[0] if is_file else url.rstrip("/")
    name = experiment_url.rsplit("/", 1)[-1]
    root = tempfile.mkdtemp(prefix="tune_async_analysis_")
    if not _downloads:
        atexit.register(_remove_downloads)
    _downloads.append(root)
    local = os.path.join(root, name)
    get_storage(url).download_dir(experiment_url, local)
    return os.path.join(local, url.rstrip("/").rsplit("/", 1)[-1]) if is_file else local


def _protocols(fs: object) -> tuple:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _remove_downloads() -> None:
    for root in _downloads:
        shutil.rmtree(root, ignore_errors=True)
