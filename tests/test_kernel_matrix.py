"""The kernel matrix's runner (scripts/kernel_matrix.py): its pure parts here, on the host, booting nothing.

``test_vm_smoke`` boots a real Debian kernel under qemu and runs a probe and a test in it; it is not part
of the default run (a minute or two, a download the first time): ``DYNBPF_VM_TESTS=1 pytest -m vm``
runs it (conftest.py deselects ``vm`` tests otherwise), on the kernel ``DYNBPF_VM_KERNEL`` names (7).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import lzma
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kernel_matrix", ROOT / "scripts" / "kernel_matrix.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernel_matrix"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


km = _load()

#: package names as Debian's registry had them (bookworm, its security suite, trixie, sid, experimental)
AVAILABLE = [
    "linux-image-6.1.0-47-amd64-unsigned",
    "linux-image-6.1.0-57-amd64-unsigned",
    "linux-image-6.1.0-57-cloud-amd64-unsigned",
    "linux-image-6.1.0-57-rt-amd64-unsigned",
    "linux-image-6.1.0-57-amd64",
    "linux-image-6.12.117+deb12-amd64-unsigned",
    "linux-image-6.12.117+deb13-amd64-unsigned",
    "linux-image-6.12.115+deb13-amd64-unsigned",
    "linux-image-6.12.117+deb13-cloud-amd64-unsigned",
    "linux-image-amd64",
    "linux-binary-7.2.13+deb14-amd64",
    "linux-binary-unsigned-7.2.13+deb14-amd64",
    "linux-binary-unsigned-7.2.13+deb14-rt-amd64",
    "linux-binary-unsigned-7.3-amd64",
    "linux-binary-unsigned-7.3-cloud-amd64",
]


# --- arguments ----------------------------------------------------------------------------------


def test_no_arguments_mean_the_default_kernels_and_the_whole_suite() -> None:
    args = km.parse_args([])
    assert args.kernels == ["6.1", "6.12", "7"]
    assert args.pytest_args == []
    assert (args.cpus, args.memory, args.refresh, args.probe_only, args.fetch_only) == (2, "4G", False, False, False)


def test_arguments_after_double_dash_go_to_pytest_untouched() -> None:
    args = km.parse_args(["7.2", "--cpus", "1", "--", "-k", "attach", "--refresh", "tests/test_kernel_attach.py"])
    assert args.kernels == ["7.2"]
    assert args.cpus == 1
    assert args.refresh is False  # after --: pytest's
    assert args.pytest_args == ["-k", "attach", "--refresh", "tests/test_kernel_attach.py"]


def test_guests_leave_out_the_tests_unsafe_under_emulation_unless_asked() -> None:
    """They can kill an emulated kernel (docs/kernels.md, "Why guests die"): a whole-suite run leaves them out
    and says so; ``--include-emulation-unsafe`` runs them. Each names a test that exists."""
    args = km.parse_args(["7", "--", "-q", "tests/test_kernel_stress.py"])
    assert km.guest_pytest_args(args) == [
        *(f"--deselect={node}" for node in km.EMULATION_UNSAFE),
        "-q",
        "tests/test_kernel_stress.py",
    ]
    unsafe_too = km.parse_args(["7", "--include-emulation-unsafe", "--", "-q"])
    assert km.guest_pytest_args(unsafe_too) == ["-q"]
    named = km.parse_args(["7", "--", km.EMULATION_UNSAFE[0]])  # asked for by name: run
    assert km.guest_pytest_args(named) == [f"--deselect={km.EMULATION_UNSAFE[1]}", km.EMULATION_UNSAFE[0]]
    for node in km.EMULATION_UNSAFE:
        path, test = node.split("::")
        assert f"def {test}(" in (km.ROOT / path).read_text(), node


@pytest.mark.parametrize("name", ["latest", "7.x", "v6.1", "6..1", ""])
def test_a_kernel_is_named_by_its_version(name: str) -> None:
    with pytest.raises(km.MatrixError, match="expected a version such as"):
        km.parse_args([name])


# --- version -> packages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "release", "packages"),
    [
        ("6.1", "6.1.0-57-amd64", ("linux-image-6.1.0-57-amd64-unsigned",)),
        ("6.12", "6.12.117+deb13-amd64", ("linux-image-6.12.117+deb13-amd64-unsigned",)),
        ("6", "6.12.117+deb13-amd64", ("linux-image-6.12.117+deb13-amd64-unsigned",)),
        (
            "7.2",
            "7.2.13+deb14-amd64",
            (
                "linux-binary-unsigned-7.2.13+deb14-amd64",
                "linux-modules-7.2.13+deb14-amd64",
                "linux-base-7.2.13+deb14-amd64",
            ),
        ),
        ("7", "7.3-amd64", ("linux-binary-unsigned-7.3-amd64", "linux-modules-7.3-amd64", "linux-base-7.3-amd64")),
    ],
)
def test_a_version_resolves_to_the_newest_generic_build(wanted: str, release: str, packages: tuple[str, ...]) -> None:
    assert km.resolve(wanted, AVAILABLE) == km.KernelBuild(release, packages)


def test_a_version_nobody_ships_is_an_error_naming_the_suites() -> None:
    with pytest.raises(km.MatrixError, match=r"no Debian amd64 kernel 5\.10 in bookworm"):
        km.resolve("5.10", AVAILABLE)


# --- the registry -------------------------------------------------------------------------------

DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
"""

ONE_LINE = """\
# deb http://old.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://other.example/apt nodistro main
deb http://line.example/debian bookworm main contrib
deb http://line.example/debian-security bookworm-security main
"""


def test_the_mirrors_are_the_hosts_own_in_either_sources_format() -> None:
    assert km.debian_mirrors([(DEB822, True)], "bookworm") == (
        "http://mirror.example/debian",
        "http://security.example/debian-security",
    )
    assert km.debian_mirrors([(ONE_LINE, False)], "bookworm") == (
        "http://line.example/debian",
        "http://line.example/debian-security",
    )


def test_no_mirror_for_the_hosts_release_is_an_error_naming_the_override() -> None:
    with pytest.raises(km.MatrixError, match="DYNBPF_DEBIAN_MIRROR"):
        km.debian_mirrors([(ONE_LINE, False)], "trixie")


def test_the_temporary_sources_list_names_every_suite_with_the_debian_keyring() -> None:
    lines = km.sources_list("http://a.example/debian", "http://s.example/debian-security").splitlines()
    assert all(line.startswith(f"deb [signed-by={km.KEYRING}] ") and line.endswith(" main") for line in lines)
    suites = [line.split()[3] for line in lines]
    assert suites == [*km.SUITES, *km.SECURITY_SUITES]
    assert {"bookworm", "trixie", "sid", "experimental", "bookworm-security"} <= set(suites)


def test_private_apt_keeps_its_state_in_its_own_directory(tmp_path: Path) -> None:
    apt = km.PrivateApt(tmp_path, "http://a.example/debian", "http://s.example/debian-security")
    assert (tmp_path / "sources.list").read_text() == km.sources_list(
        "http://a.example/debian", "http://s.example/debian-security"
    )
    for key in ("Dir::Etc::SourceList", "Dir::Etc::SourceParts", "Dir::State::Lists", "Dir::Cache"):
        (option,) = [o for o in apt.options if o.startswith(f"-o{key}=")]
        assert option.split("=", 1)[1].startswith(str(tmp_path)), option


# --- the cache ----------------------------------------------------------------------------------


def _unpacked(kernels: Path, release: str, split: bool) -> Path:
    """A cache entry shaped as unpack() leaves it, for a 6.x (split=False) or 7.x layout."""
    directory = km.build_dir(kernels, release)
    root = directory / "root"
    if split:
        modules = root / "usr" / "lib" / "modules" / release
        image = modules / "vmlinuz.unsigned"
        config = modules / "config"
    else:
        modules = root / "lib" / "modules" / release
        image = root / "boot" / f"vmlinuz-{release}"
        config = root / "boot" / f"config-{release}"
    modules.mkdir(parents=True)
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(b"image")
    config.write_text('CONFIG_BPF_LSM=y\nCONFIG_LSM="lockdown,yama"\n')
    meta = {
        "release": release,
        "image": str(image.relative_to(directory)),
        "modules": str(modules.relative_to(directory)),
        "packages": {"linux-image": "1"},
        "cmdline": list(km.lsm_cmdline(config.read_text())),
    }
    (directory / "kernel.json").write_text(json.dumps(meta))
    return directory


@pytest.mark.parametrize(
    ("release", "split", "image", "modules"),
    [
        ("6.1.0-57-amd64", False, "boot/vmlinuz-6.1.0-57-amd64", "lib/modules/6.1.0-57-amd64"),
        ("7.3-amd64", True, "usr/lib/modules/7.3-amd64/vmlinuz.unsigned", "usr/lib/modules/7.3-amd64"),
    ],
)
def test_cache_layout(tmp_path: Path, release: str, split: bool, image: str, modules: str) -> None:
    kernels = tmp_path / "kernels"
    directory = _unpacked(kernels, release, split)
    assert directory == kernels / release
    root = directory / "root"
    assert km.find_image(root, release) == root / image
    assert km.find_modules(root, release) == root / modules
    assert km.find_config(root, release).read_text().startswith("CONFIG_BPF_LSM=y")
    kernel = km.Kernel.load(directory)
    assert (kernel.release, kernel.image, kernel.modules) == (release, root / image, root / modules)
    assert kernel.btf == directory / "vmlinux.btf"
    assert kernel.cmdline == ("lsm=lockdown,yama,bpf",)


def test_a_version_reuses_what_it_resolved_to_last_time(tmp_path: Path) -> None:
    kernels = tmp_path / "kernels"
    assert km.cached(kernels, "6.1") is None
    _unpacked(kernels, "6.1.0-57-amd64", split=False)
    assert km.cached(kernels, "6.1") is None  # not linked yet: resolved against the registry
    km.alias_path(kernels, "6.1").symlink_to("6.1.0-57-amd64")
    kernel = km.cached(kernels, "6.1")
    assert kernel is not None
    assert kernel.release == "6.1.0-57-amd64"
    assert km.fetch(["6.1"], kernels, refresh=False, log=print) == {"6.1": kernel}  # no registry asked


def test_an_unpacking_cut_short_is_not_taken_for_a_kernel(tmp_path: Path) -> None:
    kernels = tmp_path / "kernels"
    directory = _unpacked(kernels, "7.3-amd64", split=True)
    km.alias_path(kernels, "7").symlink_to("7.3-amd64")
    (directory / "kernel.json").unlink()
    assert km.cached(kernels, "7") is None


def test_bpf_lsm_is_switched_on_only_where_built_in_and_not_listed() -> None:
    assert km.lsm_cmdline('CONFIG_BPF_LSM=y\nCONFIG_LSM="landlock,lockdown,yama"\n') == (
        "lsm=landlock,lockdown,yama,bpf",
    )
    assert km.lsm_cmdline('CONFIG_BPF_LSM=y\nCONFIG_LSM="lockdown,bpf,ipe"\n') == ()
    assert km.lsm_cmdline('# CONFIG_BPF_LSM is not set\nCONFIG_LSM="lockdown"\n') == ()


# --- BTF from an image --------------------------------------------------------------------------


def _elf(sections: dict[str, bytes]) -> bytes:
    """A minimal little-endian ELF64 file with these sections (and the section-name table)."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*sections, ".shstrtab"])
    blobs = [b"", *sections.values(), names]
    name_at = [0] + [names.index(n.encode() + b"\0") for n in [*sections, ".shstrtab"]]
    body, offsets, at = b"", [], 64
    for blob in blobs:
        offsets.append(at)
        body += blob
        at += len(blob)
    shoff = at
    header = (
        b"\x7fELF\x02\x01\x01"
        + b"\0" * 9
        + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(blobs), len(blobs) - 1)
    )
    table = b"".join(
        struct.pack("<IIQQQQIIQQ", name_at[i], 0 if i == 0 else 1, 0, 0, offsets[i], len(blob), 0, 0, 1, 0)
        for i, blob in enumerate(blobs)
    )
    return header + body + table


def _bzimage(payload: bytes) -> bytes:
    """An x86 boot image around a compressed payload, as the kernel's build lays one out."""
    setup = bytearray(3 * 512)
    setup[0x1F1] = 2  # setup sectors after the boot sector
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", setup, 0x248, 0x40, len(payload))
    return bytes(setup) + b"\0" * 0x40 + payload + b"trailer"


@pytest.mark.parametrize("compress", [lambda b: lzma.compress(b, format=lzma.FORMAT_XZ), gzip.compress])
def test_btf_is_read_from_the_image_on_the_host(tmp_path: Path, compress: object) -> None:
    btf = b"\x9f\xeb\x01\0" + bytes(range(200))
    vmlinux = _elf({".text": b"\x90" * 32, ".BTF": btf, ".BTF.ext": b"x"})
    assert km.elf_section(vmlinux, ".BTF") == btf
    assert callable(compress)
    packed = compress(vmlinux) + struct.pack("<I", len(vmlinux))  # the build appends the size
    image = tmp_path / "vmlinuz"
    image.write_bytes(_bzimage(packed))
    assert km.image_payload(image.read_bytes()) == packed
    assert km.image_btf(image) == btf


def test_an_image_without_btf_or_of_another_kind_is_refused() -> None:
    with pytest.raises(km.MatrixError, match=r"no \.BTF section"):
        km.elf_section(_elf({".text": b"\x90"}), ".BTF")
    with pytest.raises(km.MatrixError, match="not an x86 bzImage"):
        km.image_payload(b"\0" * 4096)
    with pytest.raises(km.MatrixError, match="unknown kernel compression"):
        km.decompress(b"LZ4?" + b"\0" * 16)


# --- the guest's command line -------------------------------------------------------------------


def _args(*extra: str) -> argparse.Namespace:
    args: argparse.Namespace = km.parse_args(["7", *extra])
    return args


def test_the_guest_boots_emulated_with_the_host_root_and_writable_caches(tmp_path: Path) -> None:
    kernel = km.Kernel.load(_unpacked(tmp_path / "kernels", "6.1.0-57-amd64", split=False))
    results = tmp_path / "results" / "6.1"
    command = km.vng_command(kernel, _args("--cpus", "1", "--", "-k", "attach and not tcx"), results)
    assert command[:3] == [str(km.VNG), "--run", str(kernel.image)]
    assert {"--disable-kvm", "--force-9p"} <= set(command)
    rwdirs = [command[i + 1] for i, word in enumerate(command) if word == "--rwdir"]
    assert str(km.CACHE) in rwdirs
    assert str(results) in rwdirs
    appended = [command[i + 1] for i, word in enumerate(command) if word == "--append"]
    assert "lsm=lockdown,yama,bpf" in appended
    assert any(a.startswith("modprobe.blacklist=") for a in appended)
    assert "--verbose" in command
    assert "loglevel=4" in appended
    assert "mitigations=off" not in appended  # guests died of an int3 oops with it (docs/kernels.md)
    assert command[command.index("--cpus") + 1] == "1"
    guest = command[command.index("--exec") + 1]
    # pytest's arguments go through a file: the kernel command line is too short for a long selection
    assert guest.endswith(f"--results {results} --pytest-args-from {km.pytest_args_file(results)}")
    assert "attach and not tcx" not in guest
    assert f" guest --kernel-dir {kernel.directory} " in guest


def test_results_under_the_cache_need_no_mount_of_their_own(tmp_path: Path) -> None:
    kernel = km.Kernel.load(_unpacked(tmp_path / "kernels", "7.3-amd64", split=True))
    command = km.vng_command(kernel, _args("--probe-only"), km.RESULTS / "run" / "7")
    rwdirs = [command[i + 1] for i, word in enumerate(command) if word == "--rwdir"]
    assert str(km.CACHE) in rwdirs
    assert not any(d.startswith(str(km.CACHE) + "/") for d in rwdirs)
    assert "--probe-only --pytest-args-from" in command[-1]


# --- results ------------------------------------------------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
<testcase classname="tests.test_a" name="test_ok" time="0.1"/>
<testcase classname="tests.test_a" name="test_bad" time="0.1"><failure message="assert 0">...</failure></testcase>
<testcase classname="tests.test_a" name="test_skip" time="0"><skipped message="no"/></testcase>
<testcase classname="tests.test_b" name="test_teardown" time="0.1"/>
<testcase classname="tests.test_b" name="test_teardown" time="0.1"><error message="teardown">...</error></testcase>
</testsuite></testsuites>
"""


def test_junit_outcomes_keep_the_worst_per_test() -> None:
    outcomes = km.junit_outcomes(JUNIT)
    assert outcomes == {
        "tests.test_a::test_ok": "passed",
        "tests.test_a::test_bad": "failed",
        "tests.test_a::test_skip": "skipped",
        "tests.test_b::test_teardown": "error",
    }
    assert km.counts(outcomes) == {"passed": 1, "skipped": 1, "failed": 1, "error": 1}


def test_the_summary_puts_kernels_side_by_side() -> None:
    bad = {"tests.test_a::test_bad": "failed", "tests.test_a::test_ok": "passed"}
    good = {"tests.test_a::test_bad": "passed", "tests.test_a::test_ok": "passed"}
    runs = {
        "6.1": {"release": "6.1.0-57-amd64", "outcomes": bad, "counts": km.counts(bad), "boot_s": 30.4, "status": "ok"},
        "7": {
            "release": "7.3-amd64",
            "outcomes": good,
            "counts": km.counts(good),
            "capabilities": {"struct_ops_assoc": True},
            "tests_s": 61,
            "status": "ok",
        },
    }
    lines = km.summary(runs).splitlines()
    assert lines[0].split()[:6] == ["kernel", "release", "passed", "failed", "errors", "skipped"]
    assert lines[2].split()[:7] == ["6.1", "6.1.0-57-amd64", "1", "1", "0", "0", "30s"]
    assert lines[3].split()[:6] == ["7", "7.3-amd64", "2", "0", "0", "0"]
    assert ["struct_ops_assoc", "-", "yes"] in [line.split() for line in lines]
    assert ["tests.test_a::test_bad", "failed", "passed"] in [line.split() for line in lines]
    assert not any("test_ok" in line for line in lines)


# --- a real boot, on demand ---------------------------------------------------------------------


@pytest.mark.vm
def test_vm_smoke(tmp_path: Path) -> None:
    """One kernel fetched (or taken from the cache), booted, probed, and one kernel test run inside."""
    kernel = os.environ.get("DYNBPF_VM_KERNEL", "7")
    results = tmp_path / "results"
    test = "tests/test_kernel_probes.py::test_every_answer_carries_evidence"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "kernel-matrix.sh"), kernel, "--results", str(results), "--", test],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    run = json.loads((results / "summary.json").read_text())[kernel]
    assert run["status"] == "ok"
    assert run["counts"] == {"passed": 1, "skipped": 0, "failed": 0, "error": 0}
    assert run["btf_as_on_host"] is True
    probe = json.loads((results / kernel / "probe.json").read_text())
    assert probe["kernel"]["release"] == run["release"] == run["uname"]
    assert set(run["capabilities"]) == set(km.CAPABILITIES)
    assert f"{kernel}  " in proc.stdout  # the summary table


# --- a guest that takes too long ----------------------------------------------------------------


def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """vng leaves qemu behind when killed alone: the deadline takes the command's whole group, a
    grandchild holding the output pipe included, and says it did."""
    pid_file = tmp_path / "grandchild"
    script = f"sleep 300 & echo $! > {pid_file}; echo started; wait"
    lines: list[str] = []
    started = time.monotonic()
    returncode, timed_out = km.run_bounded(["sh", "-c", script], dict(os.environ), 1.0, lines.append)
    assert timed_out is True
    assert returncode < 0  # killed by a signal
    assert time.monotonic() - started < 30
    assert lines == ["started\n"]
    grandchild = int(pid_file.read_text())
    assert not _alive_after(grandchild, 5.0)  # gone, not merely orphaned


def _alive_after(pid: int, seconds: float) -> bool:
    """Whether ``pid`` still exists after ``seconds`` (its reaper may take a moment)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True


def test_a_command_within_its_time_keeps_its_exit_status_and_output() -> None:
    lines: list[str] = []
    assert km.run_bounded(["sh", "-c", "echo one; echo two; exit 3"], dict(os.environ), 60, lines.append) == (3, False)
    assert lines == ["one\n", "two\n"]


def test_the_guest_imports_this_checkouts_source_first() -> None:
    env = km.checkout_env({"PYTHONPATH": "/elsewhere/src"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT / "src"), str(ROOT), "/elsewhere/src"]
    proc = subprocess.run(
        [str(km.PYTHON), "-c", "import dynbpf; print(dynbpf.__file__)"],
        env=km.checkout_env(dict(os.environ)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(proc.stdout.strip()).is_relative_to(ROOT / "src")


def test_a_terminated_runner_takes_its_guest_down(tmp_path: Path) -> None:
    """SIGTERM to the runner (a cancelled CI job) unwinds it through run_bounded's clean-up: the
    command's process group goes with it instead of emulating on, orphaned."""
    pid_file = tmp_path / "grandchild"
    runner = (
        "import os, sys, signal\n"
        f"sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
        "import kernel_matrix as km\n"
        "signal.signal(signal.SIGTERM, km._exit_on_sigterm)\n"
        f"script = 'sleep 300 & echo $! > {pid_file}; echo started; wait'\n"
        "km.run_bounded(['sh', '-c', script], dict(os.environ), 300, lambda line: print(line, end='', flush=True))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", runner], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    proc.terminate()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + 15, stderr
    assert not _alive_after(int(pid_file.read_text()), 5.0)


# --- the CI selection ---------------------------------------------------------------------------


def test_a_selection_file_holds_paths_node_ids_and_options_with_comments(tmp_path: Path) -> None:
    selection = tmp_path / "guest-tests"
    selection.write_text(
        "# comment\n\ntests/test_kernel_attach.py  # why\n"
        "tests/test_kernel_lifecycle.py::test_x\n--deselect 'tests/test_kernel_attach.py::test_y[a b]'\n"
    )
    assert km.read_selection(selection) == [
        "tests/test_kernel_attach.py",
        "tests/test_kernel_lifecycle.py::test_x",
        "--deselect",
        "tests/test_kernel_attach.py::test_y[a b]",
    ]
    args = km.parse_args(["7", "--tests-from", str(selection), "--", "-q"])
    assert args.pytest_args == [*km.read_selection(selection), "-q"]


def test_options_with_values_that_are_not_paths_pass_through_a_selection(tmp_path: Path) -> None:
    """An option's value is not a test path unless it looks like one: ``-k "not slow"`` and
    ``--timeout 30`` reach pytest as written, a ``--deselect`` of a gone file is still refused."""
    selection = tmp_path / "guest-tests"
    selection.write_text(
        "tests/test_kernel_attach.py -k 'not slow'\n--timeout 30\n-p no:randomly\n--junitxml=out/report.xml\n"
        "-m kernel\ntests\n"
    )
    assert km.read_selection(selection) == [
        "tests/test_kernel_attach.py",
        "-k",
        "not slow",
        "--timeout",
        "30",
        "-p",
        "no:randomly",
        "--junitxml=out/report.xml",
        "-m",
        "kernel",
        "tests",
    ]
    selection.write_text("tests/test_kernel_attach.py\n--deselect tests/test_gone.py::test_y\n")
    with pytest.raises(km.MatrixError, match=r":2: no such test file 'tests/test_gone.py'"):
        km.read_selection(selection)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("tests/test_kernel_attach.py\ntests/test_gone.py\n", r":2: no such test file 'tests/test_gone.py'"),
        ("tests/gone/\n", r":1: no such test file 'tests/gone/'"),
        ("elsewhere.py::test_x\n", r":1: no such test file 'elsewhere.py'"),
        ("# only a comment\n", "selects nothing"),
        ("tests/test_kernel_attach.py 'unclosed\n", ":1: No closing quotation"),
    ],
)
def test_a_selection_naming_no_real_test_is_refused_before_booting(tmp_path: Path, text: str, error: str) -> None:
    selection = tmp_path / "guest-tests"
    selection.write_text(text)
    with pytest.raises(km.MatrixError, match=error):
        km.parse_args(["7", "--tests-from", str(selection)])
    assert km.main(["7", "--fetch-only", "--tests-from", str(selection)]) == 2  # refused, nothing fetched


def test_the_ci_selection_names_real_tests_and_ci_runs_it_on_the_newest_7x() -> None:
    selection = km.read_selection(ROOT / ".ci" / "guest-tests")
    # what the host kernel cannot prove runs there: trampolines, LSM, kprobes, command 38
    assert {"tests/test_kernel_attach_tracing.py", "tests/test_kernel_struct_ops_assoc.py"} <= set(selection)
    run = (ROOT / ".ci" / "run").read_text()
    assert "./test.sh\n" in run
    assert "scripts/kernel-matrix.sh 7 " in run
    assert "--tests-from .ci/guest-tests" in run
