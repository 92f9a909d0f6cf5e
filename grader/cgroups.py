"""A control group per child, where the system lets the grader make one: memory that counts
shared memory (`memfd_create`, tmpfs, /dev/shm), a process count, and a way to kill every
process of a case at once, however it was started.

    group = CaseGroup.make("fusion", memory_mb=8192, tasks=256)  # None where no cgroup can be made
    # the child's launcher writes its own pid into each of group.procs_files before it execs
    group.kill_all(); group.remove()

Both cgroup versions: v1 (a `memory` and a `pids` hierarchy) and v2 (one unified hierarchy,
where the grader's own cgroup must delegate the `memory` and `pids` controllers). A child is
made below the grader's own cgroup, so that a grader in a container stays inside its limits.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, super options) of every cgroup mount."""
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, tail = left.split(), right.split()
                if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2") and fields[3] == "/":
                    found.append((fields[4].replace("\\040", " "), tail[0], tail[2]))
    except OSError:
        pass
    return found


def _own_groups() -> dict[str, str]:
    """controller ('' for v2) -> this process's cgroup path in it."""
    groups = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in (controllers.split(",") if controllers else [""]):
                    groups[c] = path
    except (OSError, ValueError):
        pass
    return groups


@dataclass
class CaseGroup:
    dirs: list[Path]  # the case's cgroup folders (v1: memory, pids; v2: one)
    version: int
    memory_mb: int
    tasks: int

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs]

    def describe(self) -> str:
        return (f"a cgroup (v{self.version}): {self.memory_mb} MB of memory, shared memory included, "
                f"and {self.tasks} processes and threads")

    @classmethod
    def make(cls, name: str, memory_mb: int, tasks: int) -> CaseGroup | None:
        """A fresh cgroup below the grader's own, limited; None where the system does not allow it."""
        own, mounts = _own_groups(), _mounts()
        tag = f"grader-{os.getpid()}-{name}-{uuid.uuid4().hex[:6]}"
        made: list[Path] = []
        try:
            v1 = {}
            for point, kind, options in mounts:
                if kind == "cgroup":
                    for controller in ("memory", "pids"):
                        if controller in options.split(",") and controller in own:
                            v1[controller] = Path(point + own[controller]) / tag
            if set(v1) == {"memory", "pids"}:
                for d in v1.values():
                    d.mkdir()
                    made.append(d)
                (v1["memory"] / "memory.limit_in_bytes").write_text(str(memory_mb * 2**20))
                swap = v1["memory"] / "memory.memsw.limit_in_bytes"
                if swap.exists():  # no swapping past the limit either, where swap is accounted
                    try:
                        swap.write_text(str(memory_mb * 2**20))
                    except OSError:
                        pass
                (v1["pids"] / "pids.max").write_text(str(tasks))
                return cls(made, 1, memory_mb, tasks)
            for point, kind, _ in mounts:
                if kind == "cgroup2" and "" in own:
                    parent = Path(point + own[""])
                    controllers = (parent / "cgroup.subtree_control").read_text().split()
                    if {"memory", "pids"} <= set(controllers):
                        d = parent / tag
                        d.mkdir()
                        made.append(d)
                        (d / "memory.max").write_text(str(memory_mb * 2**20))
                        if (d / "memory.swap.max").exists():
                            (d / "memory.swap.max").write_text("0")
                        (d / "pids.max").write_text(str(tasks))
                        return cls(made, 2, memory_mb, tasks)
        except OSError:
            pass
        for d in made:
            try:
                d.rmdir()
            except OSError:
                pass
        return None

    def pids(self) -> set[int]:
        found = set()
        for f in self.procs_files:
            try:
                found |= {int(p) for p in f.read_text().split()}
            except (OSError, ValueError):
                pass
        return found

    def kill_all(self, patience_s: float = 5.0) -> bool:
        """SIGKILL every process in the group until none is left; whether it emptied in time."""
        deadline = time.time() + patience_s
        while time.time() < deadline:
            left = self.pids()
            if not left:
                return True
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.02)
        return not self.pids()

    def peak_mb(self) -> float | None:
        """The most memory the group used, shared memory included, if the system says."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int((self.dirs[0] / name).read_text()) / 2**20
        except (OSError, ValueError):
            return None

    def oom_killed(self) -> bool:
        """Whether the kernel killed something of the group for its memory limit."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            lines = (self.dirs[0] / name).read_text().splitlines()
            counts = {k: int(v) for k, v in (line.split() for line in lines if len(line.split()) == 2)}
        except (OSError, ValueError):
            return False
        return counts.get("oom_kill", 0) > 0

    def remove(self) -> None:
        self.kill_all()
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
