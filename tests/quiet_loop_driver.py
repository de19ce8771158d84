"""A driver that started Ray first: what does its first run do on the loop's thread?

Prints one JSON line: the modules imported while the run lasted, and the threads the
loop's thread started (each start blocks the loop until the new thread runs).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import traceback

import ray

ray.init(address=os.environ["RAY_ADDRESS"], configure_logging=False)

import tune_async as tune  # noqa: E402 - after ray.init, as a service would do


def trainable(config):
    for i in range(3):
        tune.report(loss=i)


async def main() -> None:
    loop_thread = threading.get_ident()
    started: list[str] = []
    start = threading.Thread.start

    def recording_start(self: threading.Thread) -> None:
        if threading.get_ident() == loop_thread:
            started.append(self.name)
        start(self)

    threading.Thread.start = recording_start
    before = set(sys.modules)
    first_import: list[str] = []  # where the first import during the run came from

    class RecordFirstImport:
        def find_spec(self, name, path=None, target=None):
            if not first_import and name not in sys.modules:
                first_import.append(f"{name} in {threading.current_thread().name}:\n"
                                    + "".join(traceback.format_stack(limit=25)))
            return None

    sys.meta_path.insert(0, RecordFirstImport())
    await tune.arun(trainable, num_samples=8, resources_per_trial={"cpu": 0.25},
                    local_dir=sys.argv[1], name="quiet")
    threading.Thread.start = start
    print("OUTCOME " + json.dumps({"imported": sorted(set(sys.modules) - before),
                                   "first_import": first_import[:1],
                                   "threads_started": started}), flush=True)


asyncio.run(main())
