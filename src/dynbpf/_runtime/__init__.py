"""Kernel state of a prepared object: programs, maps, their loading and unloading."""
