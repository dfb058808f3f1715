"""What /proc says of memory: the one reader of the batch layer and the benchmarks.

    memory.read("VmRSS")                   # this process, in bytes
    memory.read("VmRSS", "/proc/PID/status")
    memory.available(), memory.total()     # MemAvailable, MemTotal (None without /proc)
    memory.resident(pid)                   # VmRSS of pid and all its descendants

Every file read is of "Field: N kB" lines; where /proc is missing (not Linux)
a reading is 0 or None, never an error.
"""

import os

GIB = 2**30
SELF = "/proc/self/status"
MEMINFO = "/proc/meminfo"


def read(field, status=SELF):
    """`field` (VmHWM, VmRSS, MemTotal...) of a "Field: N kB" file in bytes; 0 where
    it cannot be read.

    status: /proc/self/status (this process), /proc/PID/status or /proc/meminfo.
    """
    try:
        with open(status) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def available():
    """MemAvailable from /proc/meminfo in bytes, or None where there is none."""
    return read("MemAvailable", MEMINFO) or None


def total():
    """MemTotal from /proc/meminfo in bytes, or None where there is none."""
    return read("MemTotal", MEMINFO) or None


def reset_peak():
    """Starts a new high-water mark for this process's VmHWM (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def resident(pid):
    """VmRSS of the process `pid` and all its descendants, in bytes."""
    total_bytes, pending = 0, [pid]
    while pending:
        current = pending.pop()
        total_bytes += read("VmRSS", f"/proc/{current}/status")
        pending += _children(current)
    return total_bytes


def _children(pid):
    """The processes `pid`'s threads started (Linux: /proc/PID/task/TID/children)."""
    found = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children") as f:
                found += [int(child) for child in f.read().split()]
        except OSError:
            pass
    return found
