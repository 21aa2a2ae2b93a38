"""Prepare: an ObjectSpec made final for the running kernel, program by program."""
