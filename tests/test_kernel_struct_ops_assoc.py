"""BPF_PROG_ASSOC_STRUCT_OPS (command 38, Linux 7.0): a program tied to a struct_ops map, on the real kernel.

Probe-driven: where the running kernel has the command, the tests prove the
kernel's contract and that dynbpf ties programs again at each load; where it
has not (6.1, 6.12, 6.18), they prove the clean ``KernelUnsupported`` with the
probe's evidence. Run the supported side in the 7.x guest:
``flock /tmp/guest.lock scripts/kernel-matrix.sh 7 -- tests/test_kernel_struct_ops_assoc.py``.

The kernel shows no association (no field of bpf_prog_info), but its
contract does: the same map again answers 0, another map EBUSY. So "tied to
A" is checked as "tying it to B is EBUSY".
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import dynbpf
from dynbpf import Feature, FeatureMap, Hook, Variant
from dynbpf._probes import attach as attach_probes
from dynbpf._sys import commands
from dynbpf._sys.attrs import ProgAssocStructOpsAttr
from dynbpf._sys.constants import Cmd
from dynbpf._sys.fd import Fd
from dynbpf._sys.syscall import bpf_raw
from dynbpf.errors import KernelUnsupported, NotFound, OptionError, SyscallError
from tests.bpfbuild import build
from tests.helpers import kernel_lacks, new_map

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]


@contextmanager
def opened(**options: object) -> Iterator[dynbpf.Collection]:
    with dynbpf.open(build("ops_assoc"), **options) as coll:  # type: ignore[arg-type]
        yield coll


def map_fd(coll: dynbpf.Collection, name: str) -> Fd:
    """A new fd of struct_ops ``name``'s kernel map (it must exist)."""
    map_id = coll.struct_ops[name].map_id
    assert map_id is not None
    return commands.fd_by_id(commands.ObjKind.MAP, map_id)


def assoc(prog_fd: int, map_fd: int, flags: int = 0) -> int:
    """The command's raw answer: 0 or the errno."""
    _, err = bpf_raw(Cmd.PROG_ASSOC_STRUCT_OPS, ProgAssocStructOpsAttr(map_fd=map_fd, prog_fd=prog_fd, flags=flags))
    return err


def tied_to(coll: dynbpf.Collection, program: str, name: str, other: str) -> bool:
    """Whether loaded ``program`` is tied to struct_ops ``name``: again → 0, to ``other`` → EBUSY."""
    fd = coll.programs[program].fd
    with map_fd(coll, name) as mine, map_fd(coll, other) as theirs:
        return assoc(fd, mine.raw) == 0 and assoc(fd, theirs.raw) == errno.EBUSY


def test_without_the_command_association_is_refused_with_the_probes_evidence(no_fd_leak: None) -> None:
    support = attach_probes.struct_ops_assoc()
    with opened() as coll:
        program = coll.programs["count_getppid"]
        program.load()
        if not kernel_lacks(support, lambda: program.associate_struct_ops("assoc_a")):
            return  # the kernel has it: the tests below prove it works
        with pytest.raises(KernelUnsupported) as refused:
            program.associate_struct_ops(coll.struct_ops["assoc_a"])
        assert refused.value.how == support.how
        assert "'count_getppid'" in str(refused.value)
        assert "'assoc_a'" in str(refused.value)
        assert program.associated_struct_ops is None  # nothing remembered
        assert coll.struct_ops["assoc_a"].map_id is None  # nothing created
        with new_map() as array:  # the kernel answers EINVAL to the command it does not know, whatever its attr
            assert assoc(program.fd, array.raw) == errno.EINVAL
    with pytest.raises(KernelUnsupported) as refused:
        opened(associate_struct_ops="assoc_a").__enter__()
    assert refused.value.how == support.how


def test_open_option_names_one_struct_ops_map(no_fd_leak: None) -> None:
    """Checked before the kernel is asked anything, on every kernel."""
    with pytest.raises(OptionError, match=r"2 struct_ops maps \(assoc_a, assoc_b\)"):
        opened(associate_struct_ops=True).__enter__()
    with pytest.raises(NotFound, match="did you mean 'assoc_a'"):
        opened(associate_struct_ops="assoc_c").__enter__()
    with pytest.raises(TypeError, match="associate_struct_ops"):
        opened(associate_struct_ops=3).__enter__()


def test_kernel_contract(no_fd_leak: None) -> None:
    support = attach_probes.struct_ops_assoc()
    with opened() as coll:
        program = coll.programs["count_getppid"]
        program.load()
        if kernel_lacks(support, lambda: program.associate_struct_ops("assoc_a")):
            return
        program.associate_struct_ops("assoc_a")  # creates assoc_a's map (not registered)
        assert program.associated_struct_ops == "assoc_a"
        assert coll.struct_ops["assoc_a"].map_id is not None
        assert not coll.struct_ops["assoc_a"].attached
        program.associate_struct_ops("assoc_a")  # the same map again: 0
        with pytest.raises(SyscallError) as busy:
            program.associate_struct_ops("assoc_b")  # another map: EBUSY, the tie is for the program's life
        assert busy.value.errno == errno.EBUSY
        assert "'count_getppid'" in str(busy.value)
        assert "'assoc_b'" in str(busy.value)
        assert program.associated_struct_ops == "assoc_a"  # unchanged
        assert tied_to(coll, "count_getppid", "assoc_a", "assoc_b")

        member = coll.programs["a_ssthresh"]
        member.load()
        with pytest.raises(SyscallError) as invalid:
            member.associate_struct_ops("assoc_b")  # a struct_ops program: EINVAL
        assert invalid.value.errno == errno.EINVAL
        assert "'a_ssthresh'" in str(invalid.value)

        other = coll.programs["assoc_filter"]
        other.load()
        with map_fd(coll, "assoc_a") as ops_map, new_map() as array:
            assert assoc(other.fd, array.raw) == errno.EINVAL  # not a struct_ops map
            assert assoc(other.fd, ops_map.raw, flags=1) == errno.EINVAL  # flags must be 0
            assert assoc(other.fd, ops_map.raw) == 0


def test_association_is_made_again_at_every_load(no_fd_leak: None) -> None:
    support = attach_probes.struct_ops_assoc()
    with opened() as coll:
        program = coll.programs["count_getppid"]
        if kernel_lacks(support, lambda: program.associate_struct_ops("assoc_a")):
            return
        coll.struct_ops["assoc_b"].attach()  # so that assoc_b has a map to compare with
        coll.struct_ops["assoc_b"].detach()
        program.associate_struct_ops("assoc_a")  # not loaded: remembered, made at load
        program.load()
        assert tied_to(coll, "count_getppid", "assoc_a", "assoc_b")
        before = program.id
        program.reload()
        assert program.id != before
        assert tied_to(coll, "count_getppid", "assoc_a", "assoc_b")
        program.attach()
        calls = coll.bss.getppid_calls
        os.getppid()
        assert coll.bss.getppid_calls > calls

        # assoc_a registers by map update: its map takes one value, so registering it after an
        # unregistration takes a fresh map; the programs tied to it are loaded anew and tied to that one
        ops = coll.struct_ops["assoc_a"]
        ops.name = f"dyn_{os.getpid() % 100000}_a"
        first = ops.map_id
        ops.attach()
        assert ops.map_id == first  # the association's map is the one registered
        ops.detach()
        before = program.id
        ops.attach()
        assert ops.map_id != first
        assert program.id != before  # reloaded, links kept
        assert tied_to(coll, "count_getppid", "assoc_a", "assoc_b")
        calls = coll.bss.getppid_calls
        os.getppid()
        assert coll.bss.getppid_calls > calls
        ops.detach()


def test_open_option_ties_every_other_program_and_follows_variant_switches(no_fd_leak: None) -> None:
    support = attach_probes.struct_ops_assoc()
    if not support:
        with pytest.raises(KernelUnsupported) as refused:
            opened(associate_struct_ops="assoc_a").__enter__()
        assert refused.value.how == support.how
        return
    with opened(associate_struct_ops="assoc_a") as coll:
        assert coll.programs["count_getppid"].associated_struct_ops == "assoc_a"
        assert coll.programs["a_ssthresh"].associated_struct_ops is None  # struct_ops programs are not tied
        coll.load(["count_getppid", "assoc_filter", "a_ssthresh", "b_ssthresh"])
        coll.struct_ops["assoc_b"].attach()  # (assoc_b gets a map to compare with)
        coll.struct_ops["assoc_b"].detach()
        assert tied_to(coll, "count_getppid", "assoc_a", "assoc_b")
        assert tied_to(coll, "assoc_filter", "assoc_a", "assoc_b")

        features = FeatureMap.of(
            [Feature("count", hooks=["getppid"])],
            [Hook("getppid", [Variant(["count_getppid"], name="a"), Variant(["count_getppid_b"], name="b")])],
        )
        with dynbpf.Application(coll, features) as app:
            app.apply({"count": "enabled"}, use={"getppid": "b"})  # the variant switch loads count_getppid_b
            assert coll.programs["count_getppid_b"].links
            assert tied_to(coll, "count_getppid_b", "assoc_a", "assoc_b")


def test_programs_follow_a_fresh_map_even_when_its_registration_fails(no_fd_leak: None) -> None:
    support = attach_probes.struct_ops_assoc()
    with opened() as coll:
        program = coll.programs["count_getppid"]
        if kernel_lacks(support, lambda: program.associate_struct_ops("assoc_a")):
            return
        coll.struct_ops["assoc_b"].attach()  # (assoc_b gets a map to compare with)
        coll.struct_ops["assoc_b"].detach()
        program.associate_struct_ops("assoc_a")
        program.load()
        ops = coll.struct_ops["assoc_a"]
        ops.name = f"dyn_{os.getpid() % 100000}_f"
        ops.attach()
        ops.detach()  # its map takes no value again: the next registration makes a fresh one
        ops.name = "reno"  # the kernel's own: registering the fresh map is refused (EEXIST)
        first = ops.map_id
        with pytest.raises(dynbpf.AttachError, match="same identity"):
            ops.attach()
        assert ops.map_id != first  # the fresh map stays, for the association
        assert tied_to(coll, "count_getppid", "assoc_a", "assoc_b")  # followed it, though registration failed


def test_set_constants_reloads_tied_programs_only_after_its_switch(no_fd_leak: None) -> None:
    """A build that makes a struct_ops' map anew leaves the programs tied to the old one to follow afterwards."""
    support = attach_probes.struct_ops_assoc()
    with opened() as coll:
        reader, other = coll.programs["count_getppid"], coll.programs["assoc_filter"]
        if kernel_lacks(support, lambda: reader.associate_struct_ops("assoc_a")):
            return
        coll.struct_ops["assoc_b"].attach()  # (assoc_b gets a map to compare with)
        coll.struct_ops["assoc_b"].detach()
        reader.associate_struct_ops("assoc_a")
        other.associate_struct_ops("assoc_a")
        coll.load(["count_getppid", "assoc_filter"])
        ops = coll.struct_ops["assoc_a"]
        ops.name = f"dyn_{os.getpid() % 100000}_c"
        ops.attach()
        ops.detach()  # the map is dead: the reader's new load makes a fresh one
        reader_before = reader.id
        seen_at_follow: list[int] = []
        real_reload = other.reload

        def reload_spied(**options: int) -> None:  # when the follower reloads, the reader has switched already
            seen_at_follow.append(reader.id)
            real_reload(**options)

        other.reload = reload_spied  # type: ignore[method-assign]
        assert coll.set_constants({"getppid_step": 2}) == ("count_getppid",)
        assert reader.id != reader_before
        assert seen_at_follow == [reader.id]  # one reload, after the switch (not inside the build)
        assert tied_to(coll, "count_getppid", "assoc_a", "assoc_b")
        assert tied_to(coll, "assoc_filter", "assoc_a", "assoc_b")


def test_busy_hint_sequence_ties_a_program_elsewhere(no_fd_leak: None) -> None:
    """What the EBUSY hint says works: unload, associate with the other map, load."""
    support = attach_probes.struct_ops_assoc()
    with opened() as coll:
        program = coll.programs["count_getppid"]
        if kernel_lacks(support, lambda: program.associate_struct_ops("assoc_a")):
            return
        program.associate_struct_ops("assoc_a")
        program.load()
        with pytest.raises(SyscallError, match=r"unload\(\) it, associate_struct_ops\(\) the other map, load\(\) it"):
            program.associate_struct_ops("assoc_b")
        program.unload()
        program.associate_struct_ops("assoc_b")
        program.load()
        assert program.associated_struct_ops == "assoc_b"
        assert tied_to(coll, "count_getppid", "assoc_b", "assoc_a")
