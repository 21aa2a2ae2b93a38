"""One BPF_PROG_LOAD of a prepared program, with a verifier log only when it is worth its cost.

Asking for a log makes the verifier format text for every instruction it
walks, so like libbpf the first attempt asks for none; only a failure (or a
caller who wants the log of a success) pays for a second run with a log. The
log buffer grows on ENOSPC, to the size the kernel reports it needed when it
reports one (``log_true_size``, 6.4+), else fourfold, up to the kernel's
limit. Each call owns every buffer it passes, so any number of threads load
at once without sharing anything but the immutable ``PreparedProgram``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import time
from dataclasses import dataclass

from dynbpf._asm.slots import SlotMap
from dynbpf._btf import kernel as btf_kernel
from dynbpf._prepare.prepared import FUNC_INFO_REC_SIZE, LINE_INFO_REC_SIZE, PreparedProgram
from dynbpf._probes import kernel
from dynbpf._runtime.verifier_log import rejection
from dynbpf._sys.attrs import ProgLoadAttr, addr
from dynbpf._sys.commands import prog_load_raw
from dynbpf._sys.constants import OBJ_NAME_LEN, AttachType, Cmd, ProgType
from dynbpf._sys.fd import Fd
from dynbpf._sys.syscall import hint
from dynbpf.errors import OptionError, VerifierError

__all__ = ["DEFAULT_LOG_SIZE", "MAX_LOG_SIZE", "MIN_LOG_SIZE", "LoadOptions", "Loaded", "load_program", "prog_name"]

DEFAULT_LOG_SIZE = 64 * 1024
#: Kernels before 6.4 refuse a log buffer smaller than this with EINVAL.
MIN_LOG_SIZE = 128
#: The kernel refuses larger buffers (``UINT_MAX >> 2``) with EINVAL.
MAX_LOG_SIZE = 0xFFFFFFFF >> 2


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What a caller may change about one load (a subset of libbpf's ``bpf_prog_load_opts``).

    None takes the value from the ``PreparedProgram``. ``log_level`` 0 means
    no log on success; a failure fetches one at level 1 anyway, because an
    error without the verifier's reason is useless. ``attach_prog_fd``
    (freplace, fentry on a BPF program) and ``attach_btf_obj_fd`` share one
    field of the kernel's request: give at most one.
    """

    log_level: int = 0
    log_size: int = 0
    expected_attach_type: int | None = None
    attach_btf_id: int | None = None
    attach_btf_obj_fd: int | None = None
    attach_prog_fd: int = 0
    prog_flags: int | None = None
    ifindex: int = 0

    def __post_init__(self) -> None:
        # each lands in a 32-bit field of the kernel's request: a wrong type or size is the caller's error,
        # said here rather than truncated (2**40 became 0) or left to ctypes
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"load option {f.name} takes an int, not {type(value).__name__} {value!r}")
            if not 0 <= value < 1 << 32:
                raise OptionError(f"load option {f.name}={value} does not fit the kernel's 32-bit field")


@dataclass(frozen=True, slots=True)
class Loaded:
    """A loaded program: its fd (the caller owns it), the log if one was asked for, the time it took."""

    fd: Fd
    log: str
    seconds: float  # wall time of the successful BPF_PROG_LOAD: the verifier's work


def prog_name(name: str) -> bytes:
    """The name the kernel gets: libbpf's 15-byte truncation, b"" if the kernel takes no names.

    The kernel refuses the whole load (EINVAL) for a name with a byte other
    than ``[A-Za-z0-9_.]``. libbpf passes such a name through and fails; a
    C function name never has one, and for the rare symbol that does (asm,
    other front ends) dynbpf replaces the byte with ``_`` rather than fail a
    load over a label.
    """
    if not kernel.prog_name():
        return b""
    raw = name.encode("utf-8", "replace")[: OBJ_NAME_LEN - 1]
    return bytes(c if chr(c).isascii() and (chr(c).isalnum() or c in b"_.") else ord("_") for c in raw)


def load_program(p: PreparedProgram, *, btf_fd: int = 0, options: LoadOptions = LoadOptions()) -> Loaded:
    """Load ``p`` once; a rejection raises :class:`VerifierError` naming the instruction and source line.

    ``btf_fd`` is the object's BTF in the kernel: with it, func_info and
    line_info go along, so the verifier checks the functions' BTF signatures
    and prints source lines in its log.
    """
    if options.attach_prog_fd and options.attach_btf_obj_fd:
        raise OptionError("attach_prog_fd and attach_btf_obj_fd share one field of BPF_PROG_LOAD: give one")
    request = _Request(p, btf_fd, options)
    level = options.log_level
    size = _clamp(options.log_size or DEFAULT_LOG_SIZE)
    if level == 0:
        fd, err, seconds, _ = request.attempt(0, None)
        if fd is not None:
            return Loaded(fd, "", seconds)
        level = 1
    while True:
        buf = ctypes.create_string_buffer(size)
        fd, err, seconds, true_size = request.attempt(level, buf)
        log = buf.value.decode("utf-8", "replace")
        if fd is not None:
            return Loaded(fd, log, seconds)
        if err == errno.ENOSPC and size < MAX_LOG_SIZE:
            size = _clamp(true_size if true_size > size else size * 4)
            continue
        raise verifier_error(p, err, log)


def verifier_error(p: PreparedProgram, err: int, log: str) -> VerifierError:
    """The error for a rejected load of ``p``: the log read, the instruction shown, its source found."""
    r = rejection(log)
    disassembly = source = core = None
    slot = r.instruction
    if slot is not None:
        position = SlotMap.of(p.instructions).index(slot)
        if position is not None:
            from dynbpf._asm.disasm import text  # only a rejected load shows its instruction

            disassembly = text(p.instructions[position])
        line = p.source_line(slot)
        source = str(line) if line is not None else None
        failure = p.core_failure(slot)
        if failure is not None:
            core = failure.description
        elif r.core_poisoned:
            core = f"instruction {slot} was poisoned by CO-RE, but no relocation of this program is recorded there"
    # The verifier's own words beat a generic reading of the errno (EINVAL is not an old kernel here).
    # Only these come from the verifier; EBADF, EMFILE, ENOMEM... are the request's or the process's
    why = _REJECTED if r.message and err in _VERIFIER_ERRNOS else hint(Cmd.PROG_LOAD, err)
    absent = p.absent_map(slot) if slot is not None else None
    if absent is not None:
        why = (
            f"map {absent!r} is not created (MapEdit(create=False)) but this program reaches a use of it; "
            "create the map, or make that code unreachable (a .rodata constant the verifier sees)"
        )
    if err == errno.EPERM and os.geteuid() == 0:
        if _uses_trampoline(p):
            why = _NO_TRAMPOLINES
        elif p.prog_type == ProgType.TRACING and p.expected_attach_type == AttachType.TRACE_ITER:
            why = _refused_iterator(p.attach_btf_id) or why
    return VerifierError(
        p.name,
        err,
        log,
        why,
        message=r.message,
        instruction=slot,
        disassembly=disassembly,
        source=source,
        core=core,
    )


_REJECTED = "the verifier rejected the program"
_VERIFIER_ERRNOS = frozenset({errno.EACCES, errno.EINVAL, errno.E2BIG, errno.ENOSPC, errno.EFAULT})
_TRAMPOLINE_ATTACH = frozenset(
    {AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN, AttachType.LSM_MAC}
)
_NO_TRAMPOLINES = (
    "this kernel refuses programs that run on a BPF trampoline (fentry, fexit, fmod_ret, lsm, freplace) "
    "even for root: it is built or configured without them, or a security module forbids them. "
    "Load a variant that hooks the same event another way (kprobe, tracepoint, tp_btf)"
)


def _refused_iterator(btf_id: int) -> str | None:
    """Why the kernel refused an iterator program over the target ``btf_id`` names, if a probe confirms it."""
    vmlinux = btf_kernel.vmlinux()
    if vmlinux is None or not btf_id:
        return None
    target = str(getattr(vmlinux[btf_id], "name", "")).removeprefix("bpf_iter_")
    if not target:
        return None
    from dynbpf._probes import attach as attach_features

    probe = attach_features.iterator_target(target)
    if probe.supported:
        return None
    return (
        f"this kernel refuses iterator programs over {target} even for root ({probe.name}: {probe.how}); "
        "other iterator targets may load"
    )


def _uses_trampoline(p: PreparedProgram) -> bool:
    return p.prog_type == ProgType.EXT or (
        p.prog_type in (ProgType.TRACING, ProgType.LSM) and p.expected_attach_type in _TRAMPOLINE_ATTACH
    )


def _clamp(size: int) -> int:
    return max(MIN_LOG_SIZE, min(size, MAX_LOG_SIZE))


class _Request:
    """The attr and every buffer it points to, alive together for as long as the request is."""

    def __init__(self, p: PreparedProgram, btf_fd: int, o: LoadOptions) -> None:
        self._code = ctypes.create_string_buffer(p.code, len(p.code))
        self._license = ctypes.create_string_buffer(p.license.encode())
        attr = ProgLoadAttr(
            prog_type=p.prog_type,
            insn_cnt=p.insn_count,
            insns=addr(self._code),
            license=addr(self._license),
            kern_version=p.kernel_version,
            prog_flags=p.prog_flags if o.prog_flags is None else o.prog_flags,
            prog_name=prog_name(p.name),
            prog_ifindex=o.ifindex,
            expected_attach_type=p.expected_attach_type if o.expected_attach_type is None else o.expected_attach_type,
            attach_btf_id=p.attach_btf_id if o.attach_btf_id is None else o.attach_btf_id,
        )
        if o.attach_prog_fd:
            attr.attach_prog_fd = o.attach_prog_fd
        else:
            attr.attach_btf_obj_fd = p.attach_btf_obj_fd if o.attach_btf_obj_fd is None else o.attach_btf_obj_fd
        self._func_info: ctypes.Array[ctypes.c_char] | None = None
        self._line_info: ctypes.Array[ctypes.c_char] | None = None
        self._fd_array: ctypes.Array[ctypes.c_int32] | None = None
        if btf_fd and (p.func_info or p.line_info):
            attr.prog_btf_fd = btf_fd
            if p.func_info:
                self._func_info = ctypes.create_string_buffer(p.func_info, len(p.func_info))
                attr.func_info_rec_size = FUNC_INFO_REC_SIZE
                attr.func_info = addr(self._func_info)
                attr.func_info_cnt = p.func_info_count
            if p.line_info:
                self._line_info = ctypes.create_string_buffer(p.line_info, len(p.line_info))
                attr.line_info_rec_size = LINE_INFO_REC_SIZE
                attr.line_info = addr(self._line_info)
                attr.line_info_cnt = p.line_info_count
        if p.fd_array:
            self._fd_array = (ctypes.c_int32 * len(p.fd_array))(*p.fd_array)
            attr.fd_array = addr(self._fd_array)
        self._attr = attr

    def attempt(self, level: int, buf: ctypes.Array[ctypes.c_char] | None) -> tuple[Fd | None, int, float, int]:
        """One PROG_LOAD: ``(fd or None, errno, seconds, log_true_size)``."""
        attr = self._attr
        attr.log_level = level if buf is not None else 0
        attr.log_size = ctypes.sizeof(buf) if buf is not None else 0
        attr.log_buf = addr(buf)
        attr.log_true_size = 0
        start = time.perf_counter()
        fd, err = prog_load_raw(attr)
        seconds = time.perf_counter() - start
        return fd, err, seconds, int(attr.log_true_size)
