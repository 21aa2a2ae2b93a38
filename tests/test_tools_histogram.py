"""Histograms: buckets and the C tools' text from counts, and from the maps a real program counted into."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

import dynbpf
from dynbpf import Histogram
from tests.bpfbuild import build

#: getpgid(arg) of these: the fixture counts log2(arg) and arg // 10 (its last bucket takes the rest)
ARGS = (0, 1, 2, 3, 5, 9, 100, 1000)


def test_log2_buckets_are_libbpf_tools_slots() -> None:
    h = Histogram.log2([1, 0, 2, 0, 3])
    assert [(b.low, b.high, b.count) for b in h.buckets] == [(0, 1, 1), (2, 3, 0), (4, 7, 2), (8, 15, 0), (16, 31, 3)]
    assert h.total == 6


def test_linear_buckets_start_at_base_in_steps() -> None:
    h = Histogram.linear([0, 4, 1, 0, 0], step=10, base=100, unit="ms")
    assert [(b.low, b.high, b.count) for b in h.buckets] == [(100, 109, 0), (110, 119, 4), (120, 129, 1)]


def test_render_is_the_c_tools_layout_within_the_width() -> None:
    text = Histogram.log2([0, 0, 3, 10, 25, 4, 1], unit="usecs").render()
    lines = text.splitlines()
    assert lines[0] == "     usecs               : count    distribution"
    assert lines[6] == "        32 -> 63         : 4        |******                                  |"
    assert lines[5].endswith("|" + "*" * 40 + "|")  # the largest count fills the bar
    assert max(len(line) for line in lines) <= 80
    assert max(len(line) for line in Histogram.log2([1] * 32).render(width=60).splitlines()) <= 60


@pytest.mark.parametrize("width", [80, 120])
def test_64_bit_ranges_and_large_counts_still_fit(width: int) -> None:
    text = Histogram.log2([0] * 63 + [12345678901]).render(width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "9223372036854775808 -> 18446744073709551615 : 12345678901" in text


def test_a_linear_histogram_of_step_one_shows_single_values() -> None:
    lines = Histogram.linear([2, 1], unit="cpu").render().splitlines()
    assert lines[1] == "         0 : 2        |****************************************|"


def test_nothing_counted_says_so() -> None:
    assert Histogram.log2([0, 0, 0], unit="usecs").render() == "usecs: no counts"
    assert Histogram.log2([0, 0]).buckets == ()


def test_as_dict_is_json_data() -> None:
    d = Histogram.linear([1, 2], step=5, unit="ms").as_dict()
    assert d == {
        "kind": "linear",
        "unit": "ms",
        "step": 5,
        "base": 0,
        "section": None,
        "section_name": "",
        "total": 3,
        "buckets": [{"low": 0, "high": 4, "count": 1}, {"low": 5, "high": 9, "count": 2}],
    }


def test_bad_histograms_are_refused() -> None:
    with pytest.raises(ValueError, match="'log2' or 'linear'"):
        Histogram("log10", (1,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="slot 1 has -2"):
        Histogram.log2([1, -2])
    with pytest.raises(ValueError, match="step"):
        Histogram.linear([1], step=0)


# --- from the maps a program counted into ---------------------------------------------------------


@pytest.fixture(scope="module")
def counted() -> Iterator[dynbpf.Collection]:
    """tests/bpf/cli_tool.bpf.c after getpgid(arg) of each of ARGS and two getppid() (this process only)."""
    with dynbpf.open(build("cli_tool"), constants={"target_tgid": os.getpid()}) as coll:
        assert coll.load() == {}
        for name in ("on_getppid", "on_getpgid"):
            coll.programs[name].attach()
        for arg in ARGS:
            with contextlib.suppress(OSError):  # no such process: the tracepoint saw the call all the same
                os.getpgid(arg)
        os.getppid()
        os.getppid()
        yield coll


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_an_array_keyed_by_slot(counted: dynbpf.Collection) -> None:
    h = Histogram.from_map(counted.maps["arg_log2"])
    expected = [0] * 10
    for arg in ARGS:
        expected[max(arg, 1).bit_length() - 1] += 1
    assert list(h.counts[:10]) == expected
    assert h.total == len(ARGS)


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_per_cpu_values_are_summed(counted: dynbpf.Collection) -> None:
    arg_linear = counted.maps["arg_linear"]
    assert arg_linear.per_cpu
    h = Histogram.from_map(arg_linear, kind="linear", step=10)
    assert (h.counts[0], h.counts[10], h.counts[15]) == (6, 1, 1)  # 1000 lands in the last bucket
    assert [b.low for b in h.buckets][:2] == [0, 10]


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_a_struct_key_gives_one_histogram_per_section(counted: dynbpf.Collection) -> None:
    sections = Histogram.sections_from_map(counted.maps["by_syscall"])
    assert list(sections) == [1, 2]  # getppid, then getpgid
    assert sections[2].section_name == "syscall"
    assert sections[2].counts == Histogram.from_map(counted.maps["arg_log2"]).counts[: len(sections[2].counts)]
    assert sections[1].total == 2
    assert sections[2].render().startswith("syscall = 2\n")
    merged = Histogram.from_map(counted.maps["by_syscall"])
    assert merged.total == len(ARGS) + 2


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_values_holding_whole_histograms(counted: dynbpf.Collection) -> None:
    sections = Histogram.sections_from_map(counted.maps["hists"], kind="linear", step=10)
    assert list(sections) == [2]  # only getpgid fills one
    assert sections[2].counts == Histogram.from_map(counted.maps["arg_linear"], kind="linear", step=10).counts


@pytest.mark.kernel
@pytest.mark.needs_clang
def test_a_map_that_is_not_a_histogram_is_refused(counted: dynbpf.Collection) -> None:
    counted.maps["settings"].set(1, {"level": 1, "on": True, "name": "x"})
    with pytest.raises(ValueError, match=r"settings.*neither one count nor one array"):
        Histogram.from_map(counted.maps["settings"])
    with pytest.raises(ValueError, match="no field 'bucket'"):
        Histogram.from_map(counted.maps["by_syscall"], slot="bucket")
