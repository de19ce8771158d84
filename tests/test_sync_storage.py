"""The storage layer: fsspec URLs (memory, file, S3 on a local server), command
templates and functions; incremental uploads."""

from __future__ import annotations

import os
import sys

import fsspec
import pytest

from tests import s3_server
from tests.s3_server import bucket_files, local_files, s3  # noqa: F401 - the fixture
from tune_async.sync.storage import (
    CommandStorage,
    FsspecStorage,
    FunctionStorage,
    SyncError,
    get_storage,
)


def make_tree(root):
    os.makedirs(os.path.join(root, "trial_1", "checkpoint_000001"))
    with open(os.path.join(root, "experiment_state-x.json"), "w") as f:
        f.write("{}")
    with open(os.path.join(root, "trial_1", "result.json"), "w") as f:
        f.write('{"a": 1}\n')
    with open(os.path.join(root, "trial_1", "checkpoint_000001", "state.bin"), "wb") as f:
        f.write(os.urandom(4096))
    return str(root)


def remote_files(url):
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    return {p[len(root) + 1:]: info["size"] for p, info in fs.find(root, detail=True).items()}


class CountingFs:
    """Counts files each upload sends (wraps fsspec's put)."""

    def __init__(self, monkeypatch):
        self.sent: list[str] = []
        original = fsspec.AbstractFileSystem.put

        def put(fs, lpath, rpath, *args, **kwargs):
            self.sent.extend(lpath if isinstance(lpath, list) else [lpath])
            return original(fs, lpath, rpath, *args, **kwargs)

        monkeypatch.setattr(fsspec.AbstractFileSystem, "put", put)


@pytest.fixture(params=["memory", "file"])
def url(request, tmp_path):
    if request.param == "memory":
        name = f"memory://bucket/{tmp_path.name}/exp"
        yield name
        fsspec.filesystem("memory").rm(f"/bucket/{tmp_path.name}", recursive=True)
    else:
        yield f"file://{tmp_path}/remote/exp"


def test_get_storage_picks_the_kind(tmp_path):
    assert isinstance(get_storage("memory://x/y"), FsspecStorage)
    assert isinstance(get_storage(f"file://{tmp_path}"), FsspecStorage)
    assert isinstance(get_storage("cp -r {source} {target}"), CommandStorage)
    assert isinstance(get_storage(lambda source, target: None), FunctionStorage)
    with pytest.raises(ValueError, match="both {source} and {target}"):
        get_storage("cp {source} /tmp")


def test_a_missing_backend_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if not installed
    with pytest.raises(ImportError, match=r"tune_async\[gs\]"):
        get_storage("gs://bucket/exp")


def test_upload_then_download_round_trips(url, tmp_path):
    local = make_tree(tmp_path / "local")
    storage = get_storage(url)
    assert not storage.exists(url)
    storage.upload_dir(local, url)
    assert storage.exists(url)
    assert remote_files(url) == local_files(local)
    back = tmp_path / "back"
    storage.download_dir(url, str(back))
    assert local_files(str(back)) == local_files(local)
    storage.delete(url)
    assert not storage.exists(url)


def test_uploads_send_only_what_changed_and_mirror_deletions(url, tmp_path, monkeypatch):
    local = make_tree(tmp_path / "local")
    storage = get_storage(url)
    counting = CountingFs(monkeypatch)
    storage.upload_dir(local, url)
    assert len(counting.sent) == 3
    counting.sent.clear()
    storage.upload_dir(local, url)
    assert counting.sent == []  # nothing changed: nothing sent
    with open(os.path.join(local, "trial_1", "result.json"), "a") as f:
        f.write('{"a": 2}\n')
    import shutil

    shutil.rmtree(os.path.join(local, "trial_1", "checkpoint_000001"))  # pruned locally
    storage.upload_dir(local, url)
    assert [os.path.basename(p) for p in counting.sent] == ["result.json"]
    assert remote_files(url) == local_files(local)  # the pruned checkpoint went remotely too


def test_files_it_did_not_upload_are_never_deleted(url, tmp_path):
    local = make_tree(tmp_path / "local")
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root + "/other", exist_ok=True)
    fs.pipe_file(root + "/other/keep.txt", b"theirs")
    storage = get_storage(url)
    storage.upload_dir(local, url)
    assert "other/keep.txt" in remote_files(url)


def test_a_missing_local_directory_is_an_error_not_an_empty_mirror(url, tmp_path):
    local = make_tree(tmp_path / "local")
    storage = get_storage(url)
    storage.upload_dir(local, url)
    with pytest.raises(FileNotFoundError):
        storage.upload_dir(str(tmp_path / "gone"), url)
    assert len(remote_files(url)) == 3


def test_command_template_copies_and_reports_stderr(tmp_path):
    local = make_tree(tmp_path / "local")
    target = tmp_path / "remote"
    storage = get_storage("mkdir -p {target} && cp -r {source}/. {target}")
    storage.upload_dir(local, str(target))
    assert local_files(str(target)) == local_files(local)
    back = tmp_path / "back"
    storage.download_dir(str(target), str(back))
    assert local_files(str(back)) == local_files(local)
    failing = get_storage("ls {source} /no/such/dir {target}")
    with pytest.raises(SyncError, match=r"exit \d+.*\n.*/no/such/dir"):
        failing.upload_dir(local, str(target))


def test_command_template_quotes_paths_with_spaces(tmp_path):
    local = make_tree(tmp_path / "my local")
    target = tmp_path / "the remote"
    get_storage("cp -r {source} {target}").upload_dir(local, str(target))
    assert local_files(str(target)) == local_files(local)


def test_function_gets_source_and_target(tmp_path):
    calls = []
    storage = get_storage(lambda source, target: calls.append((source, target)))
    storage.upload_dir("/local/exp", "scheme://remote/exp")
    storage.download_dir("scheme://remote/exp", str(tmp_path / "down"))
    assert calls == [("/local/exp", "scheme://remote/exp"),
                     ("scheme://remote/exp", str(tmp_path / "down"))]


def test_s3_round_trip_on_a_local_server(s3, tmp_path):  # noqa: F811 - the fixture
    local = make_tree(tmp_path / "local")
    url = f"s3://{s3}/exp/name"
    storage = get_storage(url)
    storage.upload_dir(local, url)
    assert bucket_files(url) == local_files(local)
    back = tmp_path / "back"
    storage.download_dir(url, str(back))
    assert local_files(str(back)) == local_files(local)


def test_s3_upload_to_a_stopped_server_fails_then_completes(s3, tmp_path):  # noqa: F811
    local = make_tree(tmp_path / "local")
    url = f"s3://{s3}/exp/name"
    storage = get_storage(url)
    storage.upload_dir(local, url)
    with open(os.path.join(local, "new.txt"), "w") as f:
        f.write("new")
    s3_server.stop()
    with pytest.raises(Exception, match="connect|Connect"):
        storage.upload_dir(local, url)
    s3_server.start()
    storage.upload_dir(local, url)
    assert bucket_files(url) == local_files(local)


def test_s3_in_a_worker_process_keeps_its_manifest_and_reports_errors(s3, tmp_path):  # noqa: F811
    from tune_async.sync.storage import ProcessStorage, in_worker_process

    local = make_tree(tmp_path / "local")
    url = f"s3://{s3}/exp/name"
    storage = in_worker_process(get_storage(url), url)
    assert isinstance(storage, ProcessStorage)
    assert in_worker_process(get_storage("memory://x"), "memory://x").__class__ is FsspecStorage
    try:
        storage.upload_dir(local, url)
        assert bucket_files(url) == local_files(local)
        assert storage.pending(local, url) == []  # the worker remembers what it sent
        with open(os.path.join(local, "new.txt"), "w") as f:
            f.write("new")
        assert storage.pending(local, url) == ["new.txt"]
        s3_server.stop()
        with pytest.raises(SyncError, match="EndpointConnectionError: Could not connect"):
            storage.upload_dir(local, url)
        s3_server.start()
        storage.upload_dir(local, url)
        assert bucket_files(url) == local_files(local)
    finally:
        storage.close()
