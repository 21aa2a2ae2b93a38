"""Reserved map fd numbers: install, vacate and re-install keep the number; instructions stay valid."""

from __future__ import annotations

import os

import pytest

from dynbpf._sys import commands
from dynbpf._sys.constants import MapType, ProgType
from dynbpf._sys.fd import Fd
from dynbpf._sys.placeholder import FdSlot
from dynbpf.errors import StateError
from tests.helpers import counter_prog, load_ok, new_map, read_u64

pytestmark = pytest.mark.kernel


def test_number_is_stable_and_the_map_is_freed_on_vacate(no_fd_leak: None) -> None:
    with FdSlot("events") as slot:
        number = slot.number
        assert os.readlink(f"/proc/self/fd/{number}").startswith("/memfd:events")
        slot.install(new_map(MapType.ARRAY))
        assert slot.number == number
        assert slot.installed
        map_id = commands.map_info(number).id
        assert map_id in commands.ids(commands.ObjKind.MAP)
        with pytest.raises(StateError):
            slot.install(new_map())
        slot.vacate()
        assert not slot.installed
        assert os.readlink(f"/proc/self/fd/{number}").startswith("/memfd:events")
        assert map_id not in commands.ids(commands.ObjKind.MAP)
        slot.install(new_map(MapType.ARRAY))  # a new map at the same number
        assert commands.map_info(number).id != map_id
    with pytest.raises(StateError):
        _ = slot.number


def test_instructions_written_before_the_map_existed_use_it(no_fd_leak: None) -> None:
    """A program assembled against the reserved number works with whichever map is installed."""
    with FdSlot("counter") as slot:
        prog = counter_prog(slot.number)
        for round_ in range(2):
            fresh = new_map(MapType.ARRAY)
            slot.install(fresh)
            with load_ok(ProgType.SOCKET_FILTER, prog) as p:
                commands.prog_test_run(p.raw, data_in=b"\0" * 64, repeat=3)
            view = Fd(os.dup(slot.number), "map")
            with view:
                assert read_u64(view) == 3, f"round {round_}"
            slot.vacate()


def test_an_interrupt_inside_vacate_leaves_the_slot_usable(monkeypatch: pytest.MonkeyPatch, no_fd_leak: None) -> None:
    """Ctrl-C inside vacate left the slot marked installed while it held a placeholder (issue 13 item 9)."""
    from dynbpf._sys import placeholder

    with FdSlot("interrupted") as slot:
        slot.install(new_map(MapType.ARRAY))
        real = os.dup2

        def interrupted(*args: object, **kwargs: object) -> int:
            monkeypatch.setattr(placeholder.os, "dup2", real)
            raise KeyboardInterrupt

        monkeypatch.setattr(placeholder.os, "dup2", interrupted)
        with pytest.raises(KeyboardInterrupt):
            slot.vacate()
        assert not slot.installed  # views made before now fail; nothing claims a map is there
        slot.install(new_map(MapType.ARRAY))  # the next load's map goes in, and replaces what was left
        assert commands.map_info(slot.number).type == MapType.ARRAY
        slot.vacate()
        assert os.readlink(f"/proc/self/fd/{slot.number}").startswith("/memfd:interrupted")
