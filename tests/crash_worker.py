"""Run workers for tests/test_reliability.py (the in-process executor: this process is the run worker).

`python tests/crash_worker.py [ASSET]` runs `cli run` and, given ASSET, SIGKILLs itself halfway through writing that
asset's version: in the middle of its second file (half its bytes written), or just before publishing when the
version has a single file.
`python tests/crash_worker.py --raw-slowly LOG` materializes raw[web] only, each file write taking a second, and
appends the window of each write (`_publish`: start, end, pid) to LOG as a JSON line.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

from resources import storage


def die_while_writing(asset: str) -> None:
    write, commit = storage._Version.write, storage._Version.commit

    def ours(version) -> bool:
        return Path(version.final).parts[-3] == asset

    def dying_write(self, name: str, data: bytes) -> str:
        if ours(self) and len(self.written) == 1:
            target = os.path.join(self.staging, name) if self.staging else None
            if target:
                with open(target, "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return write(self, name, data)

    def dying_commit(self) -> None:
        if ours(self):
            os.kill(os.getpid(), signal.SIGKILL)
        commit(self)

    storage._Version.write = dying_write
    storage._Version.commit = dying_commit


def raw_slowly(log: str) -> int:
    import dagster as dg

    from curation_assets.defs import INGEST_SOURCE, defs

    write, publish = storage._Version.write, storage.ParquetIOManager._publish

    def slow_write(self, name: str, data: bytes) -> str:
        time.sleep(1.0)
        return write(self, name, data)

    def logged_publish(self, context, obj, partition):
        start = time.time()
        publish(self, context, obj, partition)
        with open(log, "a") as f:
            f.write(json.dumps({"asset": context.asset_key.to_user_string(), "start": start, "end": time.time()}))
            f.write("\n")

    storage._Version.write, storage.ParquetIOManager._publish = slow_write, logged_publish
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("source", ["web"])
        job = defs().resolve_job_def(INGEST_SOURCE)
        result = job.execute_in_process(partition_key="web", instance=instance, asset_selection=[dg.AssetKey("raw")])
    return 0 if result.success else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--raw-slowly"]:
        sys.exit(raw_slowly(sys.argv[2]))
    if len(sys.argv) > 1:
        die_while_writing(sys.argv[1])
    from curation_assets.cli import main

    sys.exit(main(["run"]))
