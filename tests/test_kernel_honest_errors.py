"""Messages that say what is true (issue 13 item 12): map, program, attach and link types by name.

Each test fails on the code before its fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import dynbpf
from tests.bpfbuild import build

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]


def agent() -> Path:
    return build("docs_agent")


# --- item 12: types by name ------------------------------------------------------------------------


def test_a_reader_of_the_wrong_map_names_both_types(no_fd_leak: None) -> None:
    """The message was "map 'exec_count' (type 1) is not a ring buffer": the type was a number."""
    from dynbpf._maps.errors import MapTypeError

    with dynbpf.open(agent()) as coll:
        with pytest.raises(MapTypeError, match=r"map 'exec_count' is a hash, not a ringbuf"):
            coll.ring_buffer("exec_count")
        with pytest.raises(MapTypeError, match=r"map 'events' is a ringbuf, not a perf_event_array"):
            coll.perf_buffer("events")


def test_type_names_fall_back_to_the_number_only_for_unknown_values() -> None:
    from dynbpf._sys.constants import AttachType, Cmd, LinkType, MapType, ProgType, type_name

    assert type_name(MapType, 27) == "ringbuf"
    assert type_name(MapType, MapType.PERCPU_ARRAY) == "percpu_array"
    assert type_name(ProgType, 26) == "tracing"
    assert type_name(AttachType, AttachType.TRACE_FENTRY) == "trace_fentry"
    assert type_name(LinkType, 2) == "tracing"
    assert type_name(MapType, 9999) == "map type 9999"
    assert type_name(ProgType, 9999) == "program type 9999"
    assert type_name(AttachType, 9999) == "attach type 9999"
    assert type_name(LinkType, 9999) == "link type 9999"
    assert type_name(Cmd, 9999) == "command 9999"


def test_probe_output_names_commands_and_types() -> None:
    """``dynbpf probe`` said "command 38"; map, program and attach types print by name."""
    import re

    from click.testing import CliRunner

    from dynbpf._cli.main import cli

    result = CliRunner().invoke(cli, ["probe", "--no-helpers"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.replace("│", " ").split())  # the table wraps long cells
    assert "command 38" not in out
    assert "BPF_PROG_ASSOC_STRUCT_OPS" in out
    for name in ("ringbuf", "percpu_array", "perf_event_array", "array_of_maps", "cgroup_inet_ingress"):
        assert name in out
    assert not re.search(r"\b(map|program|attach|link) type \d", out)
