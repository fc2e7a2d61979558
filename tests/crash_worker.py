"""The CLI pipeline as a run worker that dies: `python tests/crash_worker.py [ASSET]` runs `cli run` in this process
(the in-process executor: this process is the run worker) and, given ASSET, SIGKILLs itself halfway through writing
that asset's version: in the middle of its second file (half its bytes written), or just before publishing when the
version has a single file. Used by tests/test_reliability.py."""

import os
import signal
import sys
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


if __name__ == "__main__":
    if len(sys.argv) > 1:
        die_while_writing(sys.argv[1])
    from curation_assets.cli import main

    sys.exit(main(["run"]))
