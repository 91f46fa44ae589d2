"""Hindsight: a call recorder that keeps only what it may keep.

Every live call is buffered in memory; a call is written to disk only when it
was sampled for training or the agent pressed the retroactive record key.
Everything else is zeroed and its wipe is logged.
"""

__version__ = "0.1.0"
