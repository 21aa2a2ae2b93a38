"""``dynbpf agent``: applications run from a configuration file, switched through a control API.

A layer above the features (``dynbpf._features``): nothing below imports
it. ``config`` reads the file, ``plan`` checks it against the objects and
says what changes, ``apps`` runs one application, ``service`` runs them
all (reloads, signals, the process), ``api`` and ``sock`` are the control
socket, ``client`` is what ``dynbpf ctl`` speaks, ``events``, ``metrics``
and ``log`` are what it reports, ``takeover`` is what a start takes over
from an earlier agent's pins (``keep_on_exit``; docs/agent.md).
"""

DEFAULT_CONFIG = "/etc/dynbpf/agent.toml"
DEFAULT_SOCKET = "/run/dynbpf/agent.sock"
SOCKET_ENV = "DYNBPF_SOCKET"  # where `dynbpf ctl` connects unless --socket says
