"""A driver that started Ray first: what does its first run do on the loop's thread?

Prints one JSON line: the modules imported while the run lasted, the threads the
loop's thread started (each start blocks the loop until the new thread runs), the
calls of Ray's synchronous API the loop's thread made, and when the trial actor's class
was exported to the job (and whether Ray disassembled it).
"""

from __future__ import annotations

import asyncio
import dis
import json
import os
import sys
import threading
import traceback

import ray
import ray.util

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
    # Ray's calls that block, or whose cost grows with the cluster (ray.remote inspects
    # every method of a class): made from the loop's thread, they stall it.
    ray_calls: list[str] = []
    originals = [(module, name, getattr(module, name)) for module, names in (
        (ray, ("remote", "get", "wait", "kill", "nodes", "cluster_resources",
               "available_resources")),
        (ray.util, ("remove_placement_group",)),
    ) for name in names]

    def recording(name, call):
        def wrapper(*args, **kwargs):
            if threading.get_ident() == loop_thread:
                ray_calls.append(f"{name}:\n" + "".join(traceback.format_stack(limit=6)))
            return call(*args, **kwargs)
        return wrapper

    for module, name, call in originals:
        setattr(module, name, recording(name, call))
    # When the trial actor's class is exported to this job, relative to the creations.
    from ray._private.function_manager import FunctionActorManager

    from tune_async.execution import ray_executor

    ray_events: list[str] = []
    export, create = FunctionActorManager.export_actor_class, ray_executor._create_and_locate

    def recording_export(self, cls, *args, **kwargs):
        ray_events.append(f"export {cls.__name__} in {threading.current_thread().name}")
        return export(self, cls, *args, **kwargs)

    def recording_create(*args, **kwargs):
        ray_events.append("create")
        return create(*args, **kwargs)

    disassemble = dis.dis  # (Ray's label for an export: 10 ms of Python for our actor)

    def recording_disassemble(x=None, **kwargs):
        ray_events.append(f"disassemble {getattr(x, '__name__', x)}")
        return disassemble(x, **kwargs)

    FunctionActorManager.export_actor_class = recording_export
    ray_executor._create_and_locate = recording_create
    dis.dis = recording_disassemble
    await tune.arun(trainable, num_samples=8, resources_per_trial={"cpu": 0.25},
                    local_dir=sys.argv[1], name="quiet")
    threading.Thread.start = start
    for module, name, call in originals:
        setattr(module, name, call)
    FunctionActorManager.export_actor_class = export
    ray_executor._create_and_locate = create
    dis.dis = disassemble
    print("OUTCOME " + json.dumps({"imported": sorted(set(sys.modules) - before),
                                   "first_import": first_import[:1],
                                   "threads_started": started,
                                   "ray_calls_on_loop": ray_calls,
                                   "ray_events": ray_events}), flush=True)


asyncio.run(main())
