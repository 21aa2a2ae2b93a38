"""``dynbpf agent``: applications run from a configuration file, switched through a control API.

A layer above the features (``dynbpf._features``): nothing below imports
it. ``config`` reads the file, ``plan`` checks it against the objects and
says what changes, ``apps`` runs one application, ``service`` runs them
all (reloads, signals, the process), ``api`` and ``sock`` are the control
socket, ``client`` is what ``dynbpf ctl`` speaks, ``events``, ``metrics``
and ``log`` are what it reports, ``handover`` is what ``keep_on_exit``
keeps across a restart (docs/agent.md).
"""

DEFAULT_CONFIG = "/etc/dynbpf/agent.toml"
DEFAULT_SOCKET = "/run/dynbpf/agent.sock"
SOCKET_ENV = "DYNBPF_SOCKET"  # where `dynbpf ctl` connects unless --socket says
