"""The application's features: declaring them (Python, TOML, BTF decl tags) and running them.

Above the runtime: a :class:`~dynbpf._features.application.Application`
drives a collection's programs by feature, choosing per hook the variant
the running kernel supports (docs/features.md). Not to be confused with the
kernel's capabilities, which are ``dynbpf._probes``.
"""
