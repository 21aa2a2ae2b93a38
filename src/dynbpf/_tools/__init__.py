"""Helpers for tool authors built on the runtime: what BCC's Python side gave its tools."""
