"""The ``dynbpf`` command."""
