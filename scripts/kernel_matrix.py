"""The kernel matrix: the test suite on Debian's own kernels, booted under qemu (docs/kernels.md).

Run it through ``scripts/kernel-matrix.sh`` (or ``./test.sh --kernel VERSION``), which installs what it
needs first. For each kernel named on the command line (``6.1``, ``6.12``, ``7.2``, ``7`` for the
newest 7.x, ...) this

1. finds the newest matching Debian kernel build in the registry's stable, testing, unstable and
   experimental suites, through a private apt configuration in a temporary directory (the host's own
   apt sources and lists are never touched), and downloads and unpacks its packages into
   ``.cache/kernels/<release>/`` once; ``.cache/kernels/<version>`` links to the build it chose, so a
   second run asks no registry (``--refresh`` asks again);
2. compiles the BPF fixtures on the host against that kernel's BTF, taken from its image, since
   clang is ~15x slower under qemu's emulation (the guest finds them in the shared cache);
3. boots the kernel with virtme-ng under qemu (TCG: no KVM needed), the host's root shared read-only,
   the repository's ``.cache`` and the results directory writable;
4. inside, mounts bpffs, tracefs, debugfs and cgroup2, runs ``dynbpf probe --json`` and pytest
   (``CI=true``) with the arguments given after ``--``;

and prints the kernels side by side: capabilities, counts, time, and every test that did not pass
everywhere. ``main`` is the host side; ``guest`` runs inside the VM.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import lzma
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
KERNELS = CACHE / "kernels"
RESULTS = CACHE / "kernel-matrix"
VNG = ROOT / ".tools" / "matrix" / "bin" / "vng"
PYTHON = ROOT / ".venv" / "bin" / "python"
#: ``dynbpf`` run from this checkout's source (the venv's console script imports whichever checkout the
#: venv was installed from, which need not be this one)
DYNBPF = (str(PYTHON), "-c", "from dynbpf._cli.main import main; main()")
#: what a bare run boots: the oldest kernel the suite supports, Debian stable's, the newest 7.x
DEFAULT_KERNELS = ("6.1", "6.12", "7")
#: Tests a guest leaves out unless ``--include-emulation-unsafe``: they switch tracepoints on and off from
#: several threads while others make system calls, and under qemu's emulation that has killed the guest
#: kernel on an int3 oops in its own code patching (6.12 and 7.3: docs/kernels.md, "Why guests die"). The
#: host runs them.
EMULATION_UNSAFE = (
    "tests/test_kernel_stress.py::test_concurrent_lifecycle_keeps_runtime_and_kernel_in_agreement",
    "tests/test_kernel_features_app.py::test_switching_variants_under_load_loses_no_event",
)
#: Debian suites searched for kernel builds, on the host's Debian mirror
SUITES = ("bookworm", "bookworm-updates", "trixie", "trixie-updates", "sid", "experimental")
SECURITY_SUITES = ("bookworm-security", "trixie-security")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
#: Drivers for qemu's emulated PC hardware that udev would load at boot and no test uses: loading them
#: (xz-compressed modules, udev rules) under emulation costs ~20 s a boot.
BOOT_BLACKLIST = (
    "kvm,kvm_amd,kvm_intel,ccp,sr_mod,cdrom,ahci,libahci,libata,pcspkr,psmouse,serio_raw,evdev,"
    "i2c_i801,iTCO_wdt,lpc_ich,intel_pmc_bxt,sg,aesni_intel,i6300esb,button,powernow_k8"
)
#: the probe answers summarised per kernel (the rest are in each kernel's probe.json)
CAPABILITIES = ("trampolines", "lsm", "kprobe", "kprobe_multi", "uprobe_multi", "struct_ops", "struct_ops_assoc")
#: pseudo-filesystems the suite uses, mounted in the guest where virtme-ng did not
GUEST_MOUNTS = (
    ("bpf", "/sys/fs/bpf"),
    ("tracefs", "/sys/kernel/tracing"),
    ("debugfs", "/sys/kernel/debug"),
    ("cgroup2", "/sys/fs/cgroup"),
)


class MatrixError(Exception):
    """A kernel cannot be fetched or run, with the reason a user can act on."""


# --- which packages hold a kernel ---------------------------------------------------------------

#: a Debian kernel release (``uname -r``) of the generic amd64 flavour: 6.1.0-57-amd64 (ABI number),
#: 6.12.117+deb13-amd64 (release it was built for), 7.3-amd64 (experimental)
_RELEASE = r"(?P<release>(?P<version>\d+(?:\.\d+)+)(?:-(?P<abi>\d+))?(?:\+deb(?P<deb>\d+))?-amd64)"
#: up to 6.x, image and modules in one package; from 7.x the kernel is split in three
_IMAGE = re.compile(rf"linux-image-{_RELEASE}-unsigned")
_BINARY = re.compile(rf"linux-binary-unsigned-{_RELEASE}")


@dataclasses.dataclass(frozen=True)
class KernelBuild:
    """One Debian kernel build: its release (``uname -r``) and the packages holding image and modules."""

    release: str
    packages: tuple[str, ...]


def parse_version(text: str) -> tuple[int, ...]:
    """``"6.12"`` -> ``(6, 12)``; a user's kernel name must be dotted numbers."""
    if not re.fullmatch(r"\d+(?:\.\d+)*", text):
        raise MatrixError(f"kernel {text!r}: expected a version such as 6.1, 6.12, 7.2 or 7")
    return tuple(int(part) for part in text.split("."))


def resolve(wanted: str, available: Iterable[str]) -> KernelBuild:
    """The newest build among the package names ``available`` whose version starts with ``wanted``.

    ``6.1`` matches 6.1.0-57 but not 6.12.117; ``7`` matches every 7.x. Builds of one version are
    ordered by ABI number, then by the Debian release they were built for (6.12.117+deb13 over the
    bookworm backport 6.12.117+deb12).
    """
    prefix = parse_version(wanted)
    found: list[tuple[tuple[tuple[int, ...], int, int], KernelBuild]] = []
    for name in available:
        for pattern, split in ((_IMAGE, False), (_BINARY, True)):
            m = pattern.fullmatch(name)
            if m is None:
                continue
            version = tuple(int(p) for p in m["version"].split("."))
            if version[: len(prefix)] != prefix:
                continue
            release = m["release"]
            packages = (
                (f"linux-binary-unsigned-{release}", f"linux-modules-{release}", f"linux-base-{release}")
                if split
                else (name,)
            )
            found.append(((version, int(m["abi"] or 0), int(m["deb"] or 0)), KernelBuild(release, packages)))
    if not found:
        raise MatrixError(f"no Debian amd64 kernel {wanted} in {', '.join(SUITES + SECURITY_SUITES)}")
    return max(found, key=lambda item: item[0])[1]


# --- the cache ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Kernel:
    """An unpacked kernel in the cache: ``<directory>/kernel.json`` describes ``<directory>/root``."""

    directory: Path
    release: str
    image: Path
    modules: Path
    packages: dict[str, str]
    cmdline: tuple[str, ...]

    @property
    def btf(self) -> Path:
        """The kernel's BTF (what its /sys/kernel/btf/vmlinux will hold), taken from the image."""
        return self.directory / "vmlinux.btf"

    @classmethod
    def load(cls, directory: Path) -> Kernel:
        meta = json.loads((directory / "kernel.json").read_text())
        return cls(
            directory=directory,
            release=meta["release"],
            image=directory / meta["image"],
            modules=directory / meta["modules"],
            packages=meta["packages"],
            cmdline=tuple(meta["cmdline"]),
        )


def build_dir(kernels: Path, release: str) -> Path:
    """Where a release is unpacked: ``kernels/<release>``."""
    return kernels / release


def alias_path(kernels: Path, wanted: str) -> Path:
    """The link from a user's name for a kernel (``6.12``) to the build it resolved to."""
    parse_version(wanted)
    return kernels / wanted


def cached(kernels: Path, wanted: str) -> Kernel | None:
    """The build ``wanted`` resolved to last time, if it is still complete in the cache."""
    link = alias_path(kernels, wanted)
    if link.is_symlink() and (link / "kernel.json").is_file():
        return Kernel.load(link.resolve())
    return None


def find_image(root: Path, release: str) -> Path:
    """The kernel image in an unpacked tree: /boot/vmlinuz-<release> up to 6.x, in the modules
    directory from 7.x on."""
    for candidate in (
        root / "boot" / f"vmlinuz-{release}",
        root / "usr" / "lib" / "modules" / release / "vmlinuz.unsigned",
        root / "usr" / "lib" / "modules" / release / "vmlinuz",
    ):
        if candidate.is_file():
            return candidate
    raise MatrixError(f"no kernel image for {release} under {root}")


def find_modules(root: Path, release: str) -> Path:
    """The modules directory in an unpacked tree (/lib/modules or, from trixie on, /usr/lib/modules)."""
    for base in (root, root / "usr"):
        if (base / "lib" / "modules" / release).is_dir():
            return base / "lib" / "modules" / release
    raise MatrixError(f"no modules for {release} under {root}")


def find_config(root: Path, release: str) -> Path:
    """The kernel's build configuration: /boot/config-<release>, or ``config`` beside the modules (7.x)."""
    for candidate in (root / "boot" / f"config-{release}", find_modules(root, release) / "config"):
        if candidate.is_file():
            return candidate
    raise MatrixError(f"no config for {release} under {root}")


def lsm_cmdline(config: str) -> tuple[str, ...]:
    """``lsm=...,bpf`` when the kernel has BPF LSM built in but not in its default list of LSMs, so
    that lsm programs can attach; nothing where it is already active (Debian's 6.1, 6.12 and 7.x
    list it in CONFIG_LSM) or absent."""
    options = dict(re.findall(r"^(CONFIG_\w+)=(.*)$", config, re.MULTILINE))
    if options.get("CONFIG_BPF_LSM") != "y":
        return ()
    lsms = [name for name in options.get("CONFIG_LSM", '""').strip('"').split(",") if name]
    if "bpf" in lsms:
        return ()
    return (f"lsm={','.join([*lsms, 'bpf'])}",)


# --- BTF from a kernel image --------------------------------------------------------------------


def image_payload(image: bytes) -> bytes:
    """The compressed vmlinux inside an x86 bzImage (boot protocol 2.08+: payload_offset/length)."""
    if image[0x202:0x206] != b"HdrS":
        raise MatrixError("not an x86 bzImage")
    setup_sectors = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    return image[start : start + length]


def decompress(payload: bytes) -> bytes:
    """Decompress a bzImage payload by its magic (Debian: xz up to 6.1, zstd since)."""
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor().decompress(payload)
    if payload.startswith(b"\x1f\x8b"):
        return zlib.decompressobj(wbits=31).decompress(payload)
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        # the build appends the uncompressed size (4 bytes), which zstd would take for a broken frame
        return subprocess.run(["zstd", "-dcq"], input=payload[:-4], capture_output=True, check=True).stdout
    raise MatrixError(f"unknown kernel compression (payload starts {payload[:4].hex()})")


def elf_section(elf: bytes, name: str) -> bytes:
    """One section of a little-endian ELF64 file (the .BTF of vmlinux)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise MatrixError("vmlinux is not a little-endian ELF64 file")
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def header(index: int) -> tuple[int, int, int]:
        sh_name = struct.unpack_from("<I", elf, shoff + index * shentsize)[0]
        sh_offset, sh_size = struct.unpack_from("<QQ", elf, shoff + index * shentsize + 0x18)
        return sh_name, sh_offset, sh_size

    _, strings_at, _ = header(shstrndx)
    for index in range(shnum):
        sh_name, offset, size = header(index)
        end = elf.index(b"\0", strings_at + sh_name)
        if elf[strings_at + sh_name : end].decode() == name:
            return elf[offset : offset + size]
    raise MatrixError(f"vmlinux has no {name} section")


def image_btf(image: Path) -> bytes:
    """The BTF a kernel will expose as /sys/kernel/btf/vmlinux, read from its image on the host."""
    return elf_section(decompress(image_payload(image.read_bytes())), ".BTF")


# --- the registry -------------------------------------------------------------------------------


def _sources_entries(text: str, deb822: bool) -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) of each ``deb`` source in a sources.list or deb822 .sources file."""
    if deb822:
        for paragraph in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in paragraph.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split()
    else:
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                yield words[1], [words[2]]


def debian_mirrors(sources: Iterable[tuple[str, bool]], codename: str) -> tuple[str, str]:
    """The host's Debian archive and security mirrors, from its apt sources ``(text, is_deb822)``:
    where it gets ``<codename>`` and ``<codename>-security`` from."""
    archive = security = ""
    for text, deb822 in sources:
        for uri, suites in _sources_entries(text, deb822):
            if codename in suites and not archive:
                archive = uri
            if f"{codename}-security" in suites and not security:
                security = uri
    if not archive or not security:
        raise MatrixError(
            f"no Debian {codename} archive and security mirrors in the host's apt sources; "
            "set DYNBPF_DEBIAN_MIRROR and DYNBPF_DEBIAN_SECURITY_MIRROR"
        )
    return archive, security


def host_mirrors() -> tuple[str, str]:
    """Debian mirrors to fetch kernels from: the host's own, unless the environment names them."""
    archive, security = os.environ.get("DYNBPF_DEBIAN_MIRROR", ""), os.environ.get("DYNBPF_DEBIAN_SECURITY_MIRROR", "")
    if archive and security:
        return archive, security
    release = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', Path("/etc/os-release").read_text(), re.MULTILINE))
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    sources = [
        (f.read_text(), f.suffix == ".sources") for f in files if f.suffix in (".list", ".sources") and f.is_file()
    ]
    found = debian_mirrors(sources, release.get("VERSION_CODENAME", ""))
    return archive or found[0], security or found[1]


def sources_list(archive: str, security: str) -> str:
    """The temporary sources list the kernels are fetched through."""
    lines = [f"deb [signed-by={KEYRING}] {archive} {suite} main" for suite in SUITES]
    lines += [f"deb [signed-by={KEYRING}] {security} {suite} main" for suite in SECURITY_SUITES]
    return "\n".join(lines) + "\n"


class PrivateApt:
    """apt-get and apt-cache on a sources list, package lists and cache of their own in ``directory``,
    so that adding unstable and experimental never reaches the host's apt configuration."""

    def __init__(self, directory: Path, archive: str, security: str) -> None:
        self.directory = directory
        (directory / "sources.list").write_text(sources_list(archive, security))
        for sub in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        self.options = [
            f"-oDir::Etc::SourceList={directory}/sources.list",
            f"-oDir::Etc::SourceParts={directory}/sources.list.d",
            f"-oDir::Etc::Preferences={directory}/preferences",
            f"-oDir::Etc::PreferencesParts={directory}/preferences.d",
            f"-oDir::State::Lists={directory}/lists",
            f"-oDir::Cache={directory}/cache",
            "-oAcquire::Languages=none",
            "-oAPT::Architectures=amd64",
            "-oAPT::Sandbox::User=root",  # downloads land in root's private directories
        ]

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        proc = subprocess.run([tool, *self.options, *args], capture_output=True, text=True, cwd=cwd, check=False)
        if proc.returncode != 0:
            raise MatrixError(f"{tool} {' '.join(args)} failed:\n{proc.stderr.strip()}")
        return proc.stdout

    def update(self) -> None:
        self.run("apt-get", "update", "-qq")

    def kernel_packages(self) -> list[str]:
        names = self.run("apt-cache", "pkgnames", "linux-image-") + self.run("apt-cache", "pkgnames", "linux-binary-")
        return names.split()

    def download(self, packages: Sequence[str], into: Path) -> list[Path]:
        self.run("apt-get", "download", "-qq", *packages, cwd=into)
        return sorted(into.glob("*.deb"))


@contextmanager
def private_apt() -> Iterator[PrivateApt]:
    """A PrivateApt in a temporary directory, removed afterwards whatever happens."""
    with tempfile.TemporaryDirectory(prefix="dynbpf-apt-") as directory:
        yield PrivateApt(Path(directory), *host_mirrors())


def unpack(apt: PrivateApt, build: KernelBuild, kernels: Path) -> Kernel:
    """Download a build's packages and unpack them into the cache, complete or not at all: everything
    happens in a temporary directory renamed into place once kernel.json is written."""
    target = build_dir(kernels, build.release)
    if (target / "kernel.json").is_file():
        return Kernel.load(target)
    kernels.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{build.release}.", dir=kernels))
    work.chmod(0o755)
    try:
        debs = work / "debs"
        debs.mkdir()
        packages = {}
        for deb in apt.download(build.packages, debs):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True)
            fields = subprocess.run(
                ["dpkg-deb", "-f", str(deb), "Package", "Version"], capture_output=True, text=True, check=True
            )
            meta = dict(line.split(": ", 1) for line in fields.stdout.splitlines())
            packages[meta["Package"]] = meta["Version"]
        shutil.rmtree(debs)
        root = work / "root"
        modules = find_modules(root, build.release)
        # Debian's packages leave the module index to their postinst; virtme-ng needs it to find the
        # drivers for its initramfs, and the guest's modprobe to load the rest
        subprocess.run(["depmod", "-b", str(modules.parent.parent.parent), build.release], check=True)
        image = find_image(root, build.release)
        (work / "vmlinux.btf").write_bytes(image_btf(image))
        meta_json = {
            "release": build.release,
            "image": str(image.relative_to(work)),
            "modules": str(modules.relative_to(work)),
            "packages": packages,
            "cmdline": list(lsm_cmdline(find_config(root, build.release).read_text())),
        }
        (work / "kernel.json").write_text(json.dumps(meta_json, indent=2) + "\n")
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Kernel.load(target)


def fetch(wanted: Sequence[str], kernels: Path, refresh: bool, log: Any) -> dict[str, Kernel]:
    """Each wanted kernel, from the cache or else from the registry (one apt session for all)."""
    found = {} if refresh else {name: k for name in wanted if (k := cached(kernels, name)) is not None}
    missing = [name for name in wanted if name not in found]
    if not missing:
        return found
    with private_apt() as apt:
        started = time.monotonic()
        apt.update()
        log(f"asked Debian's registry for {', '.join(missing)}: {time.monotonic() - started:.0f}s")
        available = apt.kernel_packages()
        for name in missing:
            build = resolve(name, available)
            started = time.monotonic()
            fresh = not (build_dir(kernels, build.release) / "kernel.json").is_file()
            found[name] = unpack(apt, build, kernels)
            took = f"downloaded and unpacked in {time.monotonic() - started:.0f}s" if fresh else "already unpacked"
            log(f"{name}: {build.release} ({', '.join(build.packages)}): {took}")
            link = alias_path(kernels, name)
            tmp = link.with_name(f".{link.name}.link")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(build.release)
            tmp.replace(link)
    return found


# --- results ------------------------------------------------------------------------------------

#: junit outcomes, worst last: a test counted twice (a failure and a teardown error) keeps the worst
_OUTCOMES = ("passed", "skipped", "failed", "error")


def junit_outcomes(xml: str) -> dict[str, str]:
    """Each test's outcome in a pytest junit report: ``{"tests.test_x::test_y": "passed", ...}``."""
    outcomes: dict[str, str] = {}
    for case in ElementTree.fromstring(xml).iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = "passed"
        for child in case:
            tag = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(child.tag)
            if tag is not None and _OUTCOMES.index(tag) > _OUTCOMES.index(outcome):
                outcome = tag
        if _OUTCOMES.index(outcome) >= _OUTCOMES.index(outcomes.get(test, "passed")):
            outcomes[test] = outcome
    return outcomes


def counts(outcomes: dict[str, str]) -> dict[str, int]:
    return {outcome: sum(1 for o in outcomes.values() if o == outcome) for outcome in _OUTCOMES}


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, columns as wide as their widest cell."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def summary(runs: dict[str, dict[str, Any]]) -> str:
    """The kernels side by side: capabilities, counts and times; then each test that did not pass on
    every kernel, with its outcome on each."""
    names = list(runs)
    yes_no = {True: "yes", False: "no", None: "-"}
    caps = [
        [capability, *(yes_no[runs[n].get("capabilities", {}).get(capability)] for n in names)]
        for capability in CAPABILITIES
    ]
    rows = []
    for name in names:
        run = runs[name]
        c = run.get("counts") or {}
        rows.append(
            [
                name,
                run.get("release", "?"),
                c.get("passed", "-"),
                c.get("failed", "-"),
                c.get("error", "-"),
                c.get("skipped", "-"),
                _seconds(run.get("boot_s")),
                _seconds(run.get("probe_s")),
                _seconds(run.get("tests_s")),
                _seconds(run.get("vm_s")),
                run.get("status", "?"),
            ]
        )
    text = table(
        ["kernel", "release", "passed", "failed", "errors", "skipped", "boot", "probe", "tests", "vm", "status"], rows
    )
    text += "\n\n" + table(["capability", *names], caps)
    outcomes = {name: runs[name].get("outcomes") or {} for name in names}
    odd = sorted({test for o in outcomes.values() for test, outcome in o.items() if outcome != "passed"})
    if odd:
        text += "\n\n" + table(
            ["not passed everywhere", *names], [[t, *(outcomes[n].get(t, "-") for n in names)] for t in odd]
        )
    return text


def _seconds(value: object) -> str:
    return f"{value:.0f}s" if isinstance(value, int | float) else "-"


# --- the host side ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Kernels and options before ``--``; pytest's arguments after it (default: the whole suite)."""
    argv = list(argv)
    pytest_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, pytest_args = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        prog="scripts/kernel-matrix.sh",
        description="Run the test suite on Debian kernels under qemu (docs/kernels.md). "
        "Arguments after -- go to pytest inside each guest.",
    )
    parser.add_argument("kernels", nargs="*", default=list(DEFAULT_KERNELS), help="6.1, 6.12, 7.2, 7 (newest 7.x), ...")
    parser.add_argument("--refresh", action="store_true", help="look for newer builds in the registry again")
    parser.add_argument("--fetch-only", action="store_true", help="fetch and unpack the kernels, boot nothing")
    parser.add_argument("--probe-only", action="store_true", help="run dynbpf probe in each guest, not pytest")
    parser.add_argument("--cpus", type=int, default=2, help="guest CPUs (default 2)")
    parser.add_argument("--memory", default="4G", help="guest memory (default 4G)")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds one guest may run (default 7200)")
    parser.add_argument("--results", type=Path, help="where results go (default .cache/kernel-matrix/<time>)")
    parser.add_argument(
        "--include-emulation-unsafe",
        action="store_true",
        help="also run the tests guests leave out by default (they can kill an emulated kernel)",
    )
    parser.add_argument(
        "--tests-from",
        type=Path,
        metavar="FILE",
        help="pytest arguments from FILE, one test path or node id a line, # comments (.ci/guest-tests)",
    )
    args = parser.parse_args(argv)
    for name in args.kernels:
        parse_version(name)
    args.pytest_args = [*(read_selection(args.tests_from) if args.tests_from else []), *pytest_args]
    return args


def read_selection(path: Path) -> list[str]:
    """The pytest arguments a selection file holds (``.ci/guest-tests``): each line a test path or node
    id, or an option with its value (``--deselect tests/test_x.py::test_y``, ``-k "not slow"``,
    ``--timeout 30``); ``#`` starts a comment.

    A test path that does not exist is an error naming the file and line, found on the host before any
    kernel boots: pytest would report it only after the boot, or a renamed file would silently leave
    its tests out of CI. Which words are test paths is told by their look (:func:`names_a_test`), not
    by their place: an option's value may be a node id (``--deselect``) or anything else (``-k``).
    """
    try:
        text = path.read_text()
    except OSError as e:
        raise MatrixError(f"selection file {path}: {e.strerror}") from e
    selection: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:
            raise MatrixError(f"{path}:{number}: {e}") from e
        for word in words:
            if names_a_test(word) and not (ROOT / word.split("::")[0]).exists():
                raise MatrixError(f"{path}:{number}: no such test file {word.split('::')[0]!r} in {ROOT}")
        selection += words
    if not selection:
        raise MatrixError(f"selection file {path} selects nothing")
    return selection


def names_a_test(word: str) -> bool:
    """Whether a selection word is a test path or node id, which must exist: a node id (``::``), a Python
    file, or a path under ``tests``. Options and other values (``-k`` expressions, numbers, plugin names,
    a report's path) are pytest's to judge."""
    if word.startswith("-"):
        return False
    return "::" in word or word.endswith(".py") or Path(word).parts[:1] == ("tests",)


def checkout_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this checkout's ``src`` and root first on the import path: the venv may be shared
    with another checkout (a git worktree's, linked), whose editable install would otherwise win."""
    path = [str(ROOT / "src"), str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {**env, "PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}


def fixture_cache() -> Path:
    """Where the suite caches compiled fixtures (tests/bpfbuild.py's rule)."""
    return Path(os.environ.get("DYNBPF_TEST_CACHE", CACHE / "bpf"))


def precompile(kernel: Kernel) -> list[str]:
    """Every fixture compiled on the host against the guest kernel's BTF, into the shared cache; the
    fixtures that do not compile for it, each with clang's first error."""
    env = checkout_env({**os.environ, "DYNBPF_TEST_BTF": str(kernel.btf), "DYNBPF_TEST_CACHE": str(fixture_cache())})
    proc = subprocess.run(
        [str(PYTHON), "-m", "tests.bpfbuild"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    return proc.stderr.splitlines()


def warm_bytecode() -> None:
    """Compile the checkout's Python, and pytest's assertion-rewritten test modules, on the host.

    The guest sees the checkout through an overlay that forgets its writes at every boot, so whatever
    it compiles itself it compiles again next time, at the guest's 10-15x slower pace (the test modules'
    rewriting alone is about two minutes of its collection); bytecode the host left beside the sources
    is simply read. Best effort: a module that fails to collect here fails visibly in the guest."""
    env = checkout_env(dict(os.environ))
    for command in (
        ["compileall", "-q", "src", "tests", "scripts", "bench"],
        ["pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
    ):
        subprocess.run([str(PYTHON), "-m", *command], cwd=ROOT, env=env, capture_output=True, check=False)


def guest_pytest_args(args: argparse.Namespace) -> list[str]:
    """pytest's arguments in a guest: the caller's, after the deselection of EMULATION_UNSAFE (unless asked,
    or the caller names the test itself)."""
    unsafe = [] if args.include_emulation_unsafe else [n for n in EMULATION_UNSAFE if n not in args.pytest_args]
    deselect = [f"--deselect={node}" for node in unsafe]
    return [*deselect, *args.pytest_args]


def pytest_args_file(results: Path) -> Path:
    """Where the host leaves the guest's pytest arguments (JSON), in the writable results directory."""
    return results / "pytest-args.json"


def vng_command(kernel: Kernel, args: argparse.Namespace, results: Path) -> list[str]:
    """The virtme-ng command that boots ``kernel`` and runs this script's guest side in it."""
    guest = [str(PYTHON), str(Path(__file__).resolve()), "guest", "--kernel-dir", str(kernel.directory)]
    # pytest's arguments travel in a file: on the kernel command line (virtme-ng's exec) a long selection
    # overflows its 2 KiB limit and qemu hangs before the guest starts
    guest += ["--results", str(results), *(["--probe-only"] if args.probe_only else [])]
    guest += ["--pytest-args-from", str(pytest_args_file(results))]
    writable = [CACHE, fixture_cache(), results]
    rwdirs = [d for d in writable if not any(d != o and d.is_relative_to(o) for o in writable)]
    command = [str(VNG), "--run", str(kernel.image), "--disable-kvm", "--force-9p"]
    command += ["--cpus", str(args.cpus), "--memory", args.memory, "--cwd", str(ROOT)]
    for directory in dict.fromkeys(rwdirs):
        command += ["--rwdir", str(directory)]
    command += ["--qemu-opts=-nodefaults", "--append", f"modprobe.blacklist={BOOT_BLACKLIST}"]
    # the kernel's own warnings (a panic, the OOM killer, an RCU stall) reach the console log too: a guest
    # that dies leaves its last words (three deaths with vng exit 255 and nothing said so far)
    command += ["--verbose", "--append", "loglevel=4"]
    # no mitigations=off: faster under emulation (~1.7x on 7.3), but with it both 6.12 and 7.3 guests died of
    # an int3 oops while the kernel patched its code (docs/kernels.md, "Why guests die")
    for option in kernel.cmdline:
        command += ["--append", option]
    return [*command, "--exec", shlex.join(guest)]


def run_bounded(
    command: Sequence[str], env: dict[str, str], timeout: float, echo: Callable[[str], None]
) -> tuple[int, bool]:
    """Run ``command``, each line of its output to ``echo``, for at most ``timeout`` seconds: its exit
    status, and whether it was killed for taking longer.

    vng starts qemu as a child of its own, which outlives vng killed alone and goes on emulating (and
    holding the pipe open). So the command gets a session of its own, and at the deadline its whole
    process group gets SIGTERM, then SIGKILL after a grace period.
    """
    proc: subprocess.Popen[str] | None = None
    timed_out = False
    try:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,
        )
        output = proc.stdout
        assert output is not None

        def pump() -> None:
            for line in output:
                echo(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
    finally:
        # on time, late, or unwinding from Ctrl-C or SIGTERM (main turns it into SystemExit): the group
        # may outlive its leader (qemu after vng), and nothing may interrupt its killing
        if proc is not None:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
            try:
                _kill_group(proc)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    reader.join(timeout=10)
    output.close()
    return proc.wait(), timed_out


def _kill_group(proc: subprocess.Popen[str], grace: float = 5) -> None:
    """SIGTERM to every process of ``proc``'s session, SIGKILL to what is still there after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + grace
        try:
            os.killpg(proc.pid, sig)
            while time.monotonic() < deadline:
                proc.poll()  # reap the leader: a zombie still counts as a member of the group
                os.killpg(proc.pid, 0)
                time.sleep(0.05)
        except ProcessLookupError:
            return


def run_kernel(name: str, kernel: Kernel, args: argparse.Namespace, results: Path, log: Any) -> dict[str, Any]:
    """Boot one kernel and run the guest side; what it reported, with the host's timings."""
    results.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    uncompiled = precompile(kernel)
    warm_bytecode()
    precompile_s = time.monotonic() - started
    for line in uncompiled:
        log(f"{name}: fixture does not compile for {kernel.release}: {line}")
    pytest_args_file(results).write_text(json.dumps(guest_pytest_args(args)))
    command = vng_command(kernel, args, results)
    log(f"{name}: booting {kernel.release}: {shlex.join(command)}")
    env = {**os.environ, "PATH": f"{VNG.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.monotonic()
    status = "ok"
    with (results / "console.log").open("w") as console:

        def echo(line: str) -> None:
            console.write(line)
            sys.stdout.write(f"[{name}] {line}")

        returncode, timed_out = run_bounded(command, env, args.timeout, echo)
    if timed_out:
        status = f"timeout after {args.timeout:.0f}s"
    vm_s = time.monotonic() - started
    run: dict[str, Any] = {
        "release": kernel.release,
        "precompile_s": precompile_s,
        "vm_s": vm_s,
        "vng_exit": returncode,
        "uncompiled": uncompiled,
    }
    report = results / "guest.json"
    if report.is_file():
        run.update(json.loads(report.read_text()))
    elif status == "ok":
        status = f"no report from the guest (vng exited {returncode})"
    if (results / "junit.xml").is_file():
        run["outcomes"] = junit_outcomes((results / "junit.xml").read_text())
        run["counts"] = counts(run["outcomes"])
    if status == "ok" and run.get("pytest_exit", 0) != 0:
        status = f"pytest exit {run['pytest_exit']}"
    if status == "ok" and run.get("probe_exit", 0) != 0:
        status = f"probe exit {run['probe_exit']}"
    run["status"] = status
    return run


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a CI job cancelled, ``timeout``, ``kill``) unwinds like Ctrl-C: the guest goes too."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["guest"]:
        return guest(argv[1:])

    def log(message: str) -> None:
        print(f"[kernel-matrix] {message}", file=sys.stderr, flush=True)

    try:
        args = parse_args(argv)
    except MatrixError as e:
        log(str(e))
        return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    started = time.monotonic()
    try:
        kernels = fetch(args.kernels, KERNELS, args.refresh, log)
    except MatrixError as e:
        log(str(e))
        return 2
    log(
        f"kernels ready in {time.monotonic() - started:.0f}s: "
        + ", ".join(f"{n} = {k.release}" for n, k in kernels.items())
    )
    if args.fetch_only:
        return 0
    if not (args.probe_only or args.include_emulation_unsafe):
        unsafe = len(EMULATION_UNSAFE)
        log(f"guests leave out {unsafe} tests unsafe under emulation (--include-emulation-unsafe runs them)")
    results = args.results or RESULTS / time.strftime("%Y%m%dT%H%M%S")
    runs = {name: run_kernel(name, kernels[name], args, results / name, log) for name in args.kernels}
    (results / "summary.json").write_text(json.dumps(runs, indent=2) + "\n")
    print(f"\nkernel matrix ({results}):\n\n{summary(runs)}\n")
    return 0 if all(run["status"] == "ok" for run in runs.values()) else 1


# --- the guest side -----------------------------------------------------------------------------


def mounted() -> set[tuple[str, str]]:
    """(filesystem type, mount point) of every mount in the guest."""
    lines = Path("/proc/mounts").read_text().splitlines()
    return {(fields[2], fields[1]) for fields in (line.split() for line in lines)}


def install_config(kernel: Kernel) -> Path:
    """Put the kernel's build configuration where a Debian install has it, /boot/config-<release>.

    The guest sees the host's /boot (the root is shared), which holds the host kernel's config only;
    libbpf, dynbpf and the tests read kconfig from there, so /boot becomes a tmpfs holding this
    kernel's own file, as on a machine that booted it.
    """
    target = Path("/boot") / f"config-{kernel.release}"
    if not target.exists():
        source = find_config(kernel.directory / "root", kernel.release)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", "/boot"], check=True)
        shutil.copyfile(source, target)
    return target


def guest(argv: Sequence[str]) -> int:
    """Inside the VM: mount what the suite needs, probe, run pytest; leave guest.json in the results."""
    parser = argparse.ArgumentParser(prog="kernel_matrix.py guest")
    parser.add_argument("--kernel-dir", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--probe-only", action="store_true")
    parser.add_argument("--pytest-args-from", type=Path, help="a JSON list of pytest arguments")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args(argv)
    if args.pytest_args_from is not None:
        args.pytest_args = [*json.loads(args.pytest_args_from.read_text()), *args.pytest_args]
    boot_s = float(Path("/proc/uptime").read_text().split()[0])
    print(f"guest: {os.uname().release} up after {boot_s:.1f}s", flush=True)
    have = mounted()
    for fstype, target in GUEST_MOUNTS:
        if (fstype, target) not in have:
            subprocess.run(["mount", "-t", fstype, fstype, target], check=True)
    report: dict[str, Any] = {"boot_s": boot_s, "uname": os.uname().release}
    live = Path("/sys/kernel/btf/vmlinux").read_bytes()
    kernel = Kernel.load(args.kernel_dir)
    report["config"] = str(install_config(kernel))
    # the fixtures were compiled on the host against the BTF taken from the image: the same bytes, or
    # each fixture compiles again in here, slowly
    report["btf_as_on_host"] = hashlib.sha256(live).digest() == hashlib.sha256(kernel.btf.read_bytes()).digest()
    env = checkout_env(
        {
            **os.environ,
            "CI": "true",
            "PYTHONDONTWRITEBYTECODE": "1",  # the source tree is read-only in here
            "HYPOTHESIS_STORAGE_DIRECTORY": "/tmp/hypothesis",
            "DYNBPF_TEST_CACHE": str(fixture_cache()),
            # emulation runs 10-15x slower: tests wait that much longer for other processes (tests/helpers.py)
            "DYNBPF_TEST_SLOWDOWN": "15",
        }
    )
    env.pop("DYNBPF_TEST_BTF", None)
    where = subprocess.run(
        [str(PYTHON), "-c", "import dynbpf; print(dynbpf.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    report["dynbpf"] = where.stdout.strip()
    if not Path(report["dynbpf"]).is_relative_to(ROOT / "src"):
        raise SystemExit(f"guest: dynbpf imports from {report['dynbpf']}, not from this checkout ({ROOT / 'src'})")
    started = time.monotonic()
    probe = subprocess.run([*DYNBPF, "probe", "--json"], capture_output=True, env=env, check=False)
    report["probe_s"] = time.monotonic() - started
    report["probe_exit"] = probe.returncode
    (args.results / "probe.json").write_bytes(probe.stdout)
    if probe.returncode == 0:
        attach = json.loads(probe.stdout)["attach"]
        report["capabilities"] = {name: attach[name]["supported"] for name in CAPABILITIES if name in attach}
        print(
            "guest: probe: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in report["capabilities"].items()),
            flush=True,
        )
    else:
        print(probe.stderr.decode(errors="replace"), flush=True)
    if not args.probe_only:
        started = time.monotonic()
        junit = args.results / "junit.xml"
        command = [str(PYTHON), "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}", *args.pytest_args]
        report["pytest_exit"] = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
        report["tests_s"] = time.monotonic() - started
    (args.results / "guest.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
