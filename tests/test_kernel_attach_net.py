"""Network and cgroup attach kinds on the real kernel: each takes effect, stops when detached, fails clearly.

Programs of tests/bpf/net_attach.bpf.c steer a connection to a port nobody
listens on (sk_lookup), drop or redirect messages and received data of
sockets in a socket map (sk_msg, sk_skb), dissect packets (flow_dissector),
count a TCP handshake (sockops), deny syscalls of processes in a private
cgroup (connect4, cgroup_skb egress, sysctl, getsockopt, dev) and drop a
datagram on an interface (tcx). Whatever changes a namespace's network
happens in a private network namespace (``dynbpf._sys.netns``), never the
host's; cgroup programs go on a private cgroup holding only a child process.
Each capability a kernel may lack is read from its probe: where it is
missing the test checks the clean refusal instead (``kernel_lacks``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest

import dynbpf
from dynbpf import ProgramState
from dynbpf._attach import Link, SockmapAttachment, attach
from dynbpf._attach.request import Request
from dynbpf._elf.sections import program_kind
from dynbpf._probes import attach as attach_features
from dynbpf._probes import net_attach
from dynbpf._sys import commands, netns
from dynbpf._sys.constants import AttachType
from dynbpf.errors import AttachError, StateError, SyscallError
from tests.bpfbuild import build
from tests.helpers import kernel_lacks, private_cgroup

pytestmark = [pytest.mark.kernel, pytest.mark.needs_clang]
T = TypeVar("T")

STEER_PORT = 7007  # nobody listens there in the private namespace: only sk_lookup makes connect() work
DENY_PORT = 7008
DROP_PORT = 7009
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
SOL_PACKET, PACKET_FANOUT, PACKET_FANOUT_HASH = 263, 18, 0
ETH_P_ALL = 3


@contextmanager
def opened() -> Iterator[dynbpf.Collection]:
    with dynbpf.open(build("net_attach")) as coll:
        yield coll


def bss(coll: dynbpf.Collection, name: str) -> int:
    return int(coll.bss[name])


def load_and_attach(prog: dynbpf.Program, **target: object) -> object:
    prog.load()
    return prog.attach(**target)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# --- private network namespaces -----------------------------------------------------------------------


def lo_up() -> None:
    """Bring the (private) namespace's loopback up: a new namespace starts with it down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


@contextmanager
def private_netns() -> Iterator[int]:
    """A fresh network namespace with its loopback up (an fd); nothing of the host's network is touched."""
    with netns.private_netns() as ns:
        netns.in_thread(lo_up, netns=ns.raw)
        yield ns.raw


def inside(ns: int, fn: Callable[[], T]) -> T:
    """``fn()`` run by a thread inside the namespace ``ns``."""
    return netns.in_thread(fn, netns=ns)


def connect_errno(ns: int, port: int) -> int:
    """0 if a TCP connect to 127.0.0.1:port inside ``ns`` succeeds, else its errno."""

    def attempt() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            return int(s.connect_ex(("127.0.0.1", port)))

    return inside(ns, attempt)


def udp_arrives(port: int, payload: bytes = b"dynbpf") -> bool:
    """Send one datagram to 127.0.0.1:port (in the calling thread's namespace); did it arrive?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", port))
        rx.settimeout(0.3)
        tx.sendto(payload, ("127.0.0.1", port))
        try:
            return rx.recv(64) == payload
        except TimeoutError:
            return False


def udp_round_trip() -> None:
    """One datagram over the host namespace's loopback (to a port the kernel picks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        tx.sendto(b"dynbpf", rx.getsockname())
        assert rx.recv(16) == b"dynbpf"


# --- sk_lookup -------------------------------------------------------------------------------------


def test_sk_lookup_steers_connections_to_a_port_nobody_listens_on(no_fd_leak: None) -> None:
    with opened() as coll, private_netns() as ns:
        prog = coll.programs["steer_lookup"]
        if kernel_lacks(net_attach.sk_lookup(), lambda: load_and_attach(prog, netns=ns)):
            return
        prog.load()

        def listen() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            s.listen(4)
            return s

        listener = inside(ns, listen)
        with listener:
            listener.settimeout(5)
            coll.maps["lookup_socks"][0] = listener.fileno()
            coll.bss["steer_port"] = STEER_PORT
            assert connect_errno(ns, STEER_PORT) == errno.ECONNREFUSED  # nothing listens there

            link = prog.attach(netns=ns)
            ino = os.fstat(ns).st_ino
            assert link.kind == "sk_lookup"
            assert link.description == f"sk_lookup netns net:[{ino}]"
            assert link.facts().description == link.description
            assert prog.state is ProgramState.ATTACHED
            steered = bss(coll, "steered")
            udp_round_trip()  # the host's namespace: the program does not see its lookups
            lookups = bss(coll, "lookups")
            assert connect_errno(ns, STEER_PORT) == 0
            conn, _ = listener.accept()
            conn.close()
            assert bss(coll, "steered") == steered + 1
            assert bss(coll, "lookups") > lookups

            link.detach()
            assert connect_errno(ns, STEER_PORT) == errno.ECONNREFUSED
            assert bss(coll, "steered") == steered + 1
            with pytest.raises(StateError, match="is detached"):
                link.update(prog)


def test_sk_lookup_defaults_to_the_calling_threads_namespace_and_takes_paths(pin_root: str, no_fd_leak: None) -> None:
    with opened() as coll, private_netns() as ns:
        prog = coll.programs["pass_lookup"]
        if kernel_lacks(net_attach.sk_lookup(), lambda: load_and_attach(prog, netns=ns)):
            return
        prog.load()
        ino = os.fstat(ns).st_ino
        link = inside(ns, prog.attach)  # no netns=: the namespace of the thread that attaches
        assert isinstance(link, Link)
        with link:
            assert link.facts().description == f"sk_lookup netns net:[{ino}]"
            link.update(coll.programs["pass_lookup"])  # netns links swap programs
        path = f"/proc/self/fd/{ns}"
        with prog.attach(netns=path) as by_path:
            assert by_path.description == f"sk_lookup netns net:[{ino}]"
            by_path.pin(os.path.join(pin_root, "lookup"))
            with Link.from_pin(os.path.join(pin_root, "lookup")) as reopened:
                assert (reopened.kind, reopened.description) == ("sk_lookup", by_path.description)
            by_path.unpin()
        with pytest.raises(AttachError, match=r"sk_lookup netns /nonexistent.*cannot open the network namespace"):
            prog.attach(netns="/nonexistent")
        with pytest.raises(AttachError, match=r"not a network namespace"), open("/dev/null") as f:
            prog.attach(netns=f.fileno())
        with pytest.raises(TypeError, match=r"unexpected target arguments map \(accepted: netns\)"):
            prog.attach(map=3)


# --- flow_dissector ---------------------------------------------------------------------------------


def udp_packet(sport: int, dport: int) -> bytes:
    """Ethernet + IPv4 + UDP, as BPF_PROG_TEST_RUN hands a flow dissector."""
    payload = b"dynbpf"
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\x0a\0\0\1", b"\x0a\0\0\2")
    return b"\xff" * 6 + b"\0" * 6 + struct.pack("!H", 0x0800) + ip + udp


def packet_fanout_udp(port: int, datagrams: int) -> None:
    """UDP on lo watched by an AF_PACKET socket whose fanout hashes flows: each packet gets dissected."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as p:
        p.bind(("lo", 0))
        p.setsockopt(SOL_PACKET, PACKET_FANOUT, 4242 | (PACKET_FANOUT_HASH << 16))
        for _ in range(datagrams):
            assert udp_arrives(port)


def test_flow_dissector_fills_the_flow_keys_and_runs_for_its_namespace(no_fd_leak: None) -> None:
    with opened() as coll, private_netns() as ns:
        prog = coll.programs["dissect_udp"]
        if kernel_lacks(net_attach.flow_dissector(), lambda: load_and_attach(prog, netns=ns)):
            return
        prog.load()
        # the program's result, on a packet of our own (BPF_PROG_TEST_RUN returns struct bpf_flow_keys)
        run = commands.prog_test_run(prog.fd, data_in=udp_packet(1234, 4321), data_out_size=56)
        assert run.retval == 0  # BPF_OK
        nhoff, thoff, addr_proto, _f, _ff, _e, ip_proto, _n, sport, dport = struct.unpack_from(
            "=HHHBBBBHHH", run.data_out
        )
        assert (nhoff, thoff, ip_proto) == (14, 34, 17)
        assert (socket.ntohs(addr_proto), socket.ntohs(sport), socket.ntohs(dport)) == (0x0800, 1234, 4321)
        assert run.data_out[16:24] == b"\x0a\0\0\1\x0a\0\0\2"

        # attached to the private namespace: its packets are dissected by the program, the host's are not
        link = prog.attach(netns=ns)
        assert link.kind == "flow_dissector"
        assert link.facts().description == f"flow_dissector netns net:[{os.fstat(ns).st_ino}]"
        before = bss(coll, "dissected")
        packet_fanout_udp(DROP_PORT, 2)  # the host's namespace: dissected by the kernel, not the program
        assert bss(coll, "dissected") == before
        inside(ns, lambda: packet_fanout_udp(DENY_PORT, 3))
        assert bss(coll, "dissected") >= before + 3
        assert bss(coll, "dissected_dport") == DENY_PORT
        with pytest.raises(AttachError, match="flow dissector is attached there already"):
            prog.attach(netns=ns)
        link.detach()
        after = bss(coll, "dissected")
        inside(ns, lambda: packet_fanout_udp(DENY_PORT, 2))
        assert bss(coll, "dissected") == after


# --- sk_msg and sk_skb on socket maps -------------------------------------------------------------------


@contextmanager
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair (client, server side) in this namespace; loopback only."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    server.settimeout(5)
    with client, server:
        yield client, server


def nothing_arrives(s: socket.socket) -> bool:
    s.settimeout(0.3)
    try:
        data = s.recv(64)
    except TimeoutError:
        return True
    finally:
        s.settimeout(5)
    return not data


def sockmap_facts(link: Link, description: str) -> None:
    """A sockmap link where the kernel has them; else the BPF_PROG_ATTACH stand-in, which cannot be pinned."""
    assert link.description == description
    if net_attach.sockmap_link():
        assert link.facts().description == description
        return
    assert isinstance(link, SockmapAttachment)
    with pytest.raises(AttachError, match="no sockmap links"):
        link.pin("/sys/fs/bpf/dynbpf-never")


def test_sk_msg_passes_drops_and_redirects_messages_of_sockets_in_the_map(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = coll.programs["judge_msg"]
        prog.load()
        socks = coll.maps["msg_socks"]
        map_id = commands.map_info(socks.fd).id
        link = prog.attach(map=socks)  # first: a socket gets the map's programs when it is added
        assert link.kind == "sk_msg"
        sockmap_facts(link, f"sk_msg verdict (map id {map_id})")
        with tcp_pair() as (client, server), tcp_pair() as (_other, target):
            socks[0] = client.fileno()
            socks[1] = target.fileno()
            client.sendall(b"hello")
            assert server.recv(64) == b"hello"
            assert bss(coll, "msg_passed") == 1
            client.sendall(b"Rhop")  # redirected into target's receive queue
            assert target.recv(64) == b"Rhop"
            assert nothing_arrives(server)
            assert bss(coll, "msg_redirected") == 1
            # last: after an SK_DROP the kernel keeps refusing this socket's sends without asking again
            with pytest.raises(PermissionError):  # SK_DROP: sendmsg fails with EACCES
                client.send(b"Xnope")
            assert bss(coll, "msg_dropped") == 1
            assert bss(coll, "msg_bytes") == 5 + 5 + 4
        link.detach()
        with pytest.raises(StateError, match="is detached"):
            link.update(prog)
        with tcp_pair() as (client, server):
            socks[0] = client.fileno()  # added after detach: no program runs for it
            client.sendall(b"Xfine")
            assert server.recv(64) == b"Xfine"
        assert (bss(coll, "msg_passed"), bss(coll, "msg_dropped")) == (1, 1)


@pytest.mark.parametrize(
    ("verdict", "parser", "map_name", "hook"),
    [
        ("judge_stream", "whole_skb", "stream_socks", "stream_verdict"),
        ("judge_skb", None, "verdict_socks", "verdict"),
    ],
    ids=["stream_parser+stream_verdict-sockhash", "verdict-sockmap"],
)
def test_sk_skb_judges_what_sockets_in_the_map_receive(
    verdict: str, parser: str | None, map_name: str, hook: str, no_fd_leak: None
) -> None:
    with opened() as coll:
        socks = coll.maps[map_name]
        map_id = commands.map_info(socks.fd).id
        links = []
        if parser is not None:
            links.append(load_and_attach(coll.programs[parser], map=socks.fd))  # an fd works as well as a Map
            assert isinstance(links[0], Link)
            sockmap_facts(links[0], f"sk_skb stream_parser (map id {map_id})")
        links.append(load_and_attach(coll.programs[verdict], map=socks))
        assert isinstance(links[-1], Link)
        sockmap_facts(links[-1], f"sk_skb {hook} (map id {map_id})")
        with tcp_pair() as (client, server):
            socks[0] = server.fileno()
            client.sendall(b"hello")
            assert server.recv(64) == b"hello"
            client.sendall(b"Xdrop")
            wait_for(lambda: bss(coll, "skb_dropped") == 1, "the verdict to drop")
            assert nothing_arrives(server)
            client.sendall(b"after")
            assert server.recv(64) == b"after"
            assert bss(coll, "skb_passed") == 2
            if parser is not None:
                assert bss(coll, "parsed") >= 3
        for link in links:
            assert isinstance(link, Link)
            link.detach()
        with tcp_pair() as (client, server):
            socks[1] = server.fileno()
            client.sendall(b"Xkept")
            assert server.recv(64) == b"Xkept"
        assert (bss(coll, "skb_passed"), bss(coll, "skb_dropped")) == (2, 1)


def test_socket_map_targets_are_checked(no_fd_leak: None) -> None:
    with opened() as coll:
        prog = coll.programs["pass_msg"]
        prog.load()
        with pytest.raises(AttachError, match=r"no map given: pass map="):
            prog.attach()
        with pytest.raises(AttachError, match=r"map id \d+ is a array map, not a sockmap or sockhash"):
            prog.attach(map=coll.maps[".bss"])
        with pytest.raises(AttachError, match=r"map='lookup_socks' is neither a map nor a file descriptor"):
            prog.attach(map="lookup_socks")
        with pytest.raises(AttachError, match=r"the section names no hook: use sk_skb/stream_parser"):
            attach(program_kind("sk_skb"), prog.fd, name="bare", map=coll.maps["verdict_socks"])
        socks = coll.maps["msg_socks"]
        with prog.attach(map=socks) as first:
            if net_attach.sockmap_link():
                with pytest.raises(AttachError, match=rf"already runs program id {prog.id} for this hook"):
                    prog.attach(map=socks)
                judge = coll.programs["judge_msg"]
                judge.load()
                first.update(judge)  # sockmap links swap programs
                assert first.program_id == judge.id
            else:
                with pytest.raises(AttachError, match=r"already runs program id \d+ for this hook"):
                    prog.attach(map=socks)


# --- sockops and the cgroup kinds that deny -------------------------------------------------------------

CHILD_PRELUDE = "import errno, json, os, socket, sys\nsys.stdin.read(1)\n"

SOCKOPS_CHILD = CHILD_PRELUDE + (
    "l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n"
    "c = socket.create_connection(l.getsockname()); s, _ = l.accept()\n"
    "c.sendall(b'x'); assert s.recv(1) == b'x'\n"
)

DENY_CHILD = CHILD_PRELUDE + (
    "def outcome(fn):\n"
    "    try:\n"
    "        fn()\n"
    "        return 'ok'\n"
    "    except OSError as e:\n"
    "        return errno.errorcode[e.errno]\n"
    "def connect():\n"
    "    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s: s.connect(('127.0.0.1', int(sys.argv[1])))\n"
    "def send():\n"
    "    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s: s.sendto(b'x', ('127.0.0.1', int(sys.argv[2])))\n"
    "def sysctl():\n"
    "    with open('/proc/sys/kernel/ostype') as f: f.read()\n"
    "def sockopt():\n"
    "    with socket.socket() as s: s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)\n"
    "def dev():\n"
    "    os.close(os.open('/dev/null', os.O_RDONLY))\n"
    "print(json.dumps({f.__name__: outcome(f) for f in (connect, send, sysctl, sockopt, dev)}))\n"
)


def run_in_cgroup(cgroup: str, script: str, *args: str) -> str:
    """Run ``script`` in a child that joins ``cgroup`` before it starts working; its stdout."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
        procs.write(str(child.pid))
    out, _ = child.communicate("g", timeout=60)
    assert child.returncode == 0
    return out


BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB = 3, 4, 5


def test_sockops_sees_a_tcp_handshake_of_a_process_in_the_cgroup(no_fd_leak: None) -> None:
    with opened() as coll, private_cgroup() as cgroup:
        prog = coll.programs["count_sockops"]
        if kernel_lacks(attach_features.cgroup(), lambda: load_and_attach(prog, cgroup=cgroup)):
            return
        prog.load()
        link = prog.attach(cgroup=cgroup)
        assert link.description == f"cgroup sockops {cgroup}"
        assert link.facts().description.startswith("cgroup sock_ops (cgroup id ")
        ops = (BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
        with tcp_pair():  # this process is not in the cgroup
            pass
        assert [int(coll.bss.sockops_seen[op]) for op in ops] == [0, 0, 0]
        run_in_cgroup(cgroup, SOCKOPS_CHILD)
        assert [int(coll.bss.sockops_seen[op]) for op in ops] == [1, 1, 1]
        link.detach()
        run_in_cgroup(cgroup, SOCKOPS_CHILD)
        assert [int(coll.bss.sockops_seen[op]) for op in ops] == [1, 1, 1]


DENIERS = {
    "deny_connect4": ("connect", "connect_denied"),
    "drop_egress": ("send", "egress_dropped"),
    "deny_sysctl": ("sysctl", "sysctl_denied"),
    "deny_sndbuf": ("sockopt", "sockopt_denied"),
    "deny_dev_null": ("dev", "dev_denied"),
}


def test_cgroup_programs_deny_for_real_until_detached(no_fd_leak: None) -> None:
    """connect4, cgroup_skb egress, sysctl, getsockopt and dev programs returning 0 make the syscall fail."""
    with opened() as coll, private_cgroup() as cgroup:
        first = coll.programs["deny_connect4"]
        if kernel_lacks(attach_features.cgroup(), lambda: load_and_attach(first, cgroup=cgroup)):
            return
        coll.bss["deny_port"] = DENY_PORT
        coll.bss["drop_port"] = DROP_PORT
        args = (str(DENY_PORT), str(DROP_PORT))
        allowed = {action: "ok" for action, _ in DENIERS.values()}
        assert json.loads(run_in_cgroup(cgroup, DENY_CHILD, *args)) == allowed
        links = [load_and_attach(coll.programs[name], cgroup=cgroup) for name in DENIERS]
        assert json.loads(run_in_cgroup(cgroup, DENY_CHILD, *args)) == {action: "EPERM" for action in allowed}
        for action, counter in DENIERS.values():
            assert bss(coll, counter) >= 1, action
        assert bss(coll, "egress_seen") >= 1
        # this process is not in the cgroup: none of it applies here
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("127.0.0.1", DENY_PORT))
        with open("/dev/null"):
            pass
        for link in links:
            assert isinstance(link, Link)
            link.detach()
        counts = {counter: bss(coll, counter) for _, counter in DENIERS.values()}
        assert json.loads(run_in_cgroup(cgroup, DENY_CHILD, *args)) == allowed
        assert {counter: bss(coll, counter) for _, counter in DENIERS.values()} == counts


# --- tcx and netkit -------------------------------------------------------------------------------------


def test_tcx_drops_on_an_interface_until_updated_or_detached(no_fd_leak: None) -> None:
    with opened() as coll, private_netns() as ns:
        prog = coll.programs["tcx_drop"]
        if kernel_lacks(attach_features.tcx(), lambda: inside(ns, lambda: load_and_attach(prog, interface="lo"))):
            return
        prog.load()
        coll.bss["drop_port"] = DROP_PORT
        link = inside(ns, lambda: prog.attach(interface="lo"))  # the private namespace's lo
        assert isinstance(link, Link)
        assert link.kind == "tcx"
        assert inside(ns, lambda: link.facts().description) == "tcx ingress lo (ifindex 1)"
        assert inside(ns, lambda: udp_arrives(DENY_PORT))
        assert not inside(ns, lambda: udp_arrives(DROP_PORT))
        assert bss(coll, "tcx_dropped") == 1
        udp_round_trip()  # the host's lo is not affected
        assert bss(coll, "tcx_dropped") == 1
        pass_on = coll.programs["tcx_next"]
        pass_on.load()
        link.update(pass_on)
        assert link.program_id == pass_on.id
        assert inside(ns, lambda: udp_arrives(DROP_PORT))
        link.detach()
        seen = bss(coll, "tcx_seen")
        assert inside(ns, lambda: udp_arrives(DROP_PORT))
        assert bss(coll, "tcx_seen") == seen
        with pytest.raises(StateError, match="is detached"):
            link.update(prog)


RTM_NEWLINK, NLMSG_ERROR = 16, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFLA_IFNAME, IFLA_LINKINFO, IFLA_INFO_KIND = 3, 18, 1
NETKIT = "dynbpfnk0"


def rtattr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def create_netkit(name: str) -> None:
    """A netkit pair in the calling thread's namespace: rtnetlink RTM_NEWLINK of kind "netkit" (L3 mode,
    the default); the primary is ``name``, the kernel names the peer nk<N>.
    """
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)  # struct ifinfomsg
    body += rtattr(IFLA_IFNAME, name.encode() + b"\0")
    body += rtattr(IFLA_LINKINFO, rtattr(IFLA_INFO_KIND, b"netkit\0"))
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    message = struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, flags, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as rtnl:  # NETLINK_ROUTE
        rtnl.bind((0, 0))
        rtnl.send(message)
        reply = rtnl.recv(4096)
    assert struct.unpack_from("=H", reply, 4)[0] == NLMSG_ERROR  # the ack: an error message with error 0
    err = -struct.unpack_from("=i", reply, 16)[0]
    if err:
        raise OSError(err, f"RTM_NEWLINK netkit {name}: {os.strerror(err)}")


def set_up(name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifname = name.encode()
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", ifname, 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", ifname, flags | IFF_UP))


def netkit_pair() -> str:
    """Create and bring up a netkit pair (primary NETKIT); the peer's name."""
    create_netkit(NETKIT)
    peer = next(name for _, name in socket.if_nameindex() if name not in ("lo", NETKIT))
    set_up(NETKIT)
    set_up(peer)
    return peer


def send_from(ifname: str) -> None:
    """One IPv4/UDP packet sent out of ``ifname`` (an L3 device: no link-layer header)."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800)) as p:
        p.sendto(udp_packet(1234, DENY_PORT)[14:], (ifname, 0x0800))


def test_netkit_programs_see_what_each_side_of_a_pair_sends(no_fd_leak: None) -> None:
    """netkit/primary runs for what the primary device sends, netkit/peer for what its peer sends; both
    are attached through the primary. A kernel without netkit refuses with KernelUnsupported (the probe's
    evidence); one with it refuses lo, which is no netkit device.
    """
    with opened() as coll, private_netns() as ns:
        primary, peer = coll.programs["netkit_primary"], coll.programs["netkit_peer"]
        if kernel_lacks(net_attach.netkit(), lambda: load_and_attach(primary, interface="lo")):
            return
        primary.load()
        peer.load()
        with pytest.raises(AttachError, match=r"\(netkit primary lo \(ifindex 1\)\): .*ENXIO"):
            primary.attach(interface="lo")
        peer_name = inside(ns, netkit_pair)
        ifindex = inside(ns, lambda: socket.if_nametoindex(NETKIT))
        peer_ifindex = inside(ns, lambda: socket.if_nametoindex(peer_name))
        links = inside(ns, lambda: [primary.attach(interface=NETKIT), peer.attach(interface=NETKIT)])
        assert [link.kind for link in links] == ["netkit", "netkit"]
        expected = [
            f"netkit primary {NETKIT} (ifindex {ifindex})",
            f"netkit peer {peer_name} (ifindex {peer_ifindex})",  # attached through the primary, runs on the peer
        ]
        assert [link.description for link in links] == expected
        assert inside(ns, lambda: [link.facts().description for link in links]) == expected
        inside(ns, lambda: send_from(peer_name))
        wait_for(lambda: bss(coll, "netkit_peer_seen") >= 1, "the peer's program")
        assert bss(coll, "netkit_primary_seen") == 0
        inside(ns, lambda: send_from(NETKIT))
        wait_for(lambda: bss(coll, "netkit_primary_seen") >= 1, "the primary's program")
        for link in links:
            link.detach()
        seen = (bss(coll, "netkit_primary_seen"), bss(coll, "netkit_peer_seen"))
        inside(ns, lambda: send_from(peer_name))
        inside(ns, lambda: send_from(NETKIT))
        assert (bss(coll, "netkit_primary_seen"), bss(coll, "netkit_peer_seen")) == seen


def test_prog_attach_stand_in_used_where_the_kernel_has_no_sockmap_links(no_fd_leak: None) -> None:
    """Kernels before 6.10 attach socket map programs with BPF_PROG_ATTACH; every kernel still has it, so the
    stand-in is exercised here whatever the kernel: it takes effect, refuses to replace silently, detaches.
    """
    support = net_attach.sockmap_attach()
    assert support, support.how
    with opened() as coll:
        verdict = coll.programs["judge_skb"]
        verdict.load()
        socks = coll.maps["verdict_socks"]
        hook = AttachType.SK_SKB_VERDICT
        request = Request("judge_skb", "sk_skb").at(f"verdict (map id {commands.map_info(socks.fd).id})")
        stand_in = SockmapAttachment.make(request, socks.fd, verdict.fd, hook)
        assert commands.prog_query(socks.fd, hook) == [verdict.id]
        with pytest.raises(AttachError, match=rf"already runs program id {verdict.id} for this hook"):
            SockmapAttachment.make(request, socks.fd, verdict.fd, hook)
        with pytest.raises(AttachError, match="no sockmap links"):
            stand_in.pin("/sys/fs/bpf/dynbpf-never")
        with pytest.raises(StateError, match="no kernel link object"):
            stand_in.facts()
        assert stand_in.program_id == verdict.id  # from the program fd it holds, not from a link
        stand_in.update(verdict)  # another BPF_PROG_ATTACH of (here) the same program
        with tcp_pair() as (client, server):
            socks[0] = server.fileno()
            client.sendall(b"Xdrop")
            wait_for(lambda: bss(coll, "skb_dropped") == 1, "the verdict to drop")
            assert nothing_arrives(server)
            client.sendall(b"fine")
            assert server.recv(64) == b"fine"
        stand_in.detach()
        stand_in.detach()  # idempotent
        assert commands.prog_query(socks.fd, hook) == []
        with pytest.raises(StateError, match="is detached"):
            stand_in.update(verdict)


def test_socket_map_attach_refuses_to_replace_a_program_attached_with_prog_attach(no_fd_leak: None) -> None:
    """The kernel answers EBUSY only when a link holds the hook: a program another collection put there with
    BPF_PROG_ATTACH would be replaced without a word, by a link as by BPF_PROG_ATTACH. Both ways refuse,
    naming it; ``replace=True`` is the explicit consent."""
    with opened() as theirs, opened() as ours:
        other = theirs.programs["pass_msg"]
        other.load()
        mine = ours.programs["judge_msg"]
        mine.load()
        socks = ours.maps["msg_socks"]
        hook = AttachType.SK_MSG_VERDICT
        commands.prog_attach(socks.fd, other.fd, hook)
        try:
            with pytest.raises(AttachError, match=rf"already runs program id {other.id} for this hook"):
                mine.attach(map=socks)
            assert commands.prog_query(socks.fd, hook) == [other.id]  # still theirs
            with pytest.raises(AttachError, match=r"replace='yes' is not True or False"):
                mine.attach(map=socks, replace="yes")
            with mine.attach(map=socks, replace=True) as link:
                assert commands.prog_query(socks.fd, hook) == [mine.id]
                assert link.program_id == mine.id
            assert commands.prog_query(socks.fd, hook) == []
        finally:
            with contextlib.suppress(SyscallError):
                commands.prog_detach(socks.fd, other.fd, hook)


def test_socket_map_attach_refuses_when_the_kernel_cannot_say_what_runs_there(
    no_fd_leak: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before 6.0 BPF_PROG_QUERY on a socket map fails (EINVAL); attaching then could replace a program
    unseen, so it is refused unless ``replace=True``. Every test kernel answers the query, so its failure
    is injected here: the only way to see that answer on them."""
    real_query = commands.prog_query

    def old_kernel(target_fd: int, attach_type: int, *, max_progs: int = 64) -> list[int]:
        raise SyscallError("BPF_PROG_QUERY", errno.EINVAL)

    with opened() as coll:
        prog = coll.programs["judge_msg"]
        prog.load()
        socks = coll.maps["msg_socks"]
        monkeypatch.setattr(commands, "prog_query", old_kernel)
        with pytest.raises(AttachError, match=r"cannot tell whether .* pass replace=True"):
            prog.attach(map=socks)
        request = Request("judge_msg", "sk_msg").at("verdict")
        with pytest.raises(AttachError, match=r"cannot tell whether .* pass replace=True"):
            SockmapAttachment.make(request, socks.fd, prog.fd, AttachType.SK_MSG_VERDICT)
        assert real_query(socks.fd, AttachType.SK_MSG_VERDICT) == []  # nothing attached
        with prog.attach(map=socks, replace=True):
            assert real_query(socks.fd, AttachType.SK_MSG_VERDICT) == [prog.id]
        with SockmapAttachment.make(request, socks.fd, prog.fd, AttachType.SK_MSG_VERDICT, replace=True):
            assert real_query(socks.fd, AttachType.SK_MSG_VERDICT) == [prog.id]
        assert real_query(socks.fd, AttachType.SK_MSG_VERDICT) == []


@contextmanager
def fd_limit(spare: int) -> Iterator[None]:
    """At most ``spare`` more file descriptors (RLIMIT_NOFILE just above the lowest free one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.dup(0)
    os.close(probe)  # the lowest free fd: the next dup gets it
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe + spare, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_prog_attach_stand_in_out_of_descriptors_leaves_nothing_half_done(no_fd_leak: None) -> None:
    """The stand-in keeps copies of the map's and the program's fds: when a copy cannot be made, the attach
    fails cleanly (no fd leaked, nothing attached), and a failed update leaves the old program attached and
    detachable."""
    with opened() as coll, opened() as spare:
        verdict = coll.programs["judge_skb"]
        verdict.load()
        newer = spare.programs["judge_skb"]  # the same code, another program id
        newer.load()
        socks = coll.maps["verdict_socks"]
        hook = AttachType.SK_SKB_VERDICT
        request = Request("judge_skb", "sk_skb").at("verdict")
        with fd_limit(1), pytest.raises(SyscallError, match=r"dup failed: EMFILE .*copying the prog fd"):
            SockmapAttachment.make(request, socks.fd, verdict.fd, hook)  # the map's copy made, the prog's not
        assert commands.prog_query(socks.fd, hook) == []
        stand_in = SockmapAttachment.make(request, socks.fd, verdict.fd, hook)
        with fd_limit(0), pytest.raises(AttachError, match=r"cannot update .* to program fd"):
            stand_in.update(newer)
        assert commands.prog_query(socks.fd, hook) == [verdict.id]  # the old one runs, and is the one held
        stand_in.update(newer)
        assert commands.prog_query(socks.fd, hook) == [newer.id]
        stand_in.detach()
        assert commands.prog_query(socks.fd, hook) == []
