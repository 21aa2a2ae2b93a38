"""perf_event_open(2) and the perf-event ioctls BPF attachment needs.

Tracepoints, kprobes, uprobes and perf_event programs all attach through a
perf event: open it here, then hand its fd to BPF_LINK_CREATE (or to the
legacy PERF_EVENT_IOC_SET_BPF ioctl on kernels without perf links).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
from ctypes import c_int32, c_uint16, c_uint32, c_uint64

from dynbpf._sys.attrs import Attr
from dynbpf._sys.fd import Fd
from dynbpf._sys.syscall import NR_PERF_EVENT_OPEN, good_fd, raw_syscall
from dynbpf.errors import SyscallError

PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_FLAG_FD_CLOEXEC = 0x8
PERF_SAMPLE_RAW = 1 << 10

# perf_event_header.type of the records a ring holds
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9

PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_BPF = 0x40042408

# bits of perf_event_attr's flag word
FLAG_DISABLED = 1 << 0
FLAG_FREQ = 1 << 10
FLAG_WATERMARK = 1 << 14

PMU_ROOT = "/sys/bus/event_source/devices"


class PerfEventAttr(Attr):
    _fields_ = [
        ("type", c_uint32),
        ("size", c_uint32),
        ("config", c_uint64),
        ("sample_period", c_uint64),  # union with sample_freq
        ("sample_type", c_uint64),
        ("read_format", c_uint64),
        ("flags", c_uint64),
        ("wakeup_events", c_uint32),  # union with wakeup_watermark
        ("bp_type", c_uint32),
        ("config1", c_uint64),  # kprobe_func / uprobe_path
        ("config2", c_uint64),  # kprobe_addr / probe_offset
        ("branch_sample_type", c_uint64),
        ("sample_regs_user", c_uint64),
        ("sample_stack_user", c_uint32),
        ("clockid", c_int32),
        ("sample_regs_intr", c_uint64),
        ("aux_watermark", c_uint32),
        ("sample_max_stack", c_uint16),
        ("_reserved_2", c_uint16),
        ("aux_sample_size", c_uint32),
        ("_reserved_3", c_uint32),
        ("sig_data", c_uint64),
        ("config3", c_uint64),
    ]


def perf_event_open(attr: PerfEventAttr, pid: int = -1, cpu: int = 0, group_fd: int = -1, *, what: str = "") -> Fd:
    attr.size = ctypes.sizeof(attr)
    ret, err = raw_syscall(
        NR_PERF_EVENT_OPEN,
        ctypes.byref(attr),
        ctypes.c_int(pid),
        ctypes.c_int(cpu),
        ctypes.c_int(group_fd),
        ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC),
    )
    if ret < 0:
        raise SyscallError("perf_event_open", err, _hint(err), what)
    return Fd(good_fd(ret), "perf_event")


def _hint(err: int) -> str:
    return {
        errno.ENOENT: "no such event (tracepoint, function or PMU) on this kernel",
        errno.EINVAL: "the kernel rejected the event description (unknown PMU type, symbol or offset)",
        errno.EACCES: "perf events are restricted (kernel.perf_event_paranoid) or need CAP_PERFMON",
        errno.EPERM: "perf events are restricted (kernel.perf_event_paranoid) or need CAP_PERFMON",
        errno.EOPNOTSUPP: "this PMU does not support the requested mode",
    }.get(err, "")


def ioctl(fd: int, request: int, arg: int = 0) -> None:
    try:
        fcntl.ioctl(fd, request, arg)
    except OSError as e:
        raise SyscallError(f"ioctl({request:#x})", e.errno or 0, "", "perf event") from None


def pmu_type(name: str) -> int | None:
    """Dynamic PMU type number (kprobe, uprobe, ...) or None if the PMU is absent."""
    try:
        with open(f"{PMU_ROOT}/{name}/type") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def pmu_retprobe_bit(name: str) -> int | None:
    """Bit in ``config`` that makes a kprobe/uprobe PMU event a return probe."""
    try:
        with open(f"{PMU_ROOT}/{name}/format/retprobe") as f:
            text = f.read().strip()  # "config:0"
        return int(text.split(":", 1)[1])
    except (OSError, ValueError, IndexError):
        return None


def tracepoint_attr(tp_id: int) -> PerfEventAttr:
    return PerfEventAttr(type=PERF_TYPE_TRACEPOINT, config=tp_id, sample_period=1, wakeup_events=1)


def bpf_output_attr(*, wakeup_events: int = 1) -> PerfEventAttr:
    """The event ``bpf_perf_event_output`` writes to: raw samples, one wake-up per ``wakeup_events`` samples."""
    return PerfEventAttr(
        type=PERF_TYPE_SOFTWARE,
        config=PERF_COUNT_SW_BPF_OUTPUT,
        sample_type=PERF_SAMPLE_RAW,
        sample_period=1,
        wakeup_events=wakeup_events,
    )


def probe_attr(pmu: int, *, target: bytes, offset: int, retprobe_bit: int | None) -> tuple[PerfEventAttr, object]:
    """kprobe/uprobe PMU event: ``target`` is the function name (kprobe) or file path (uprobe)."""
    keep = ctypes.create_string_buffer(target)
    attr = PerfEventAttr(type=pmu, config1=ctypes.addressof(keep), config2=offset, sample_period=1, wakeup_events=1)
    if retprobe_bit is not None:
        attr.config |= 1 << retprobe_bit
    return attr, keep
