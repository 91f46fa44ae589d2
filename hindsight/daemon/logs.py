"""The daemon's and the worker's own log: one format, to stderr, where journald picks it up.

Never audio, caller numbers, notes or secrets; and never which calls were kept (only the
commit log, for the auditor, says that).
"""

from __future__ import annotations

import logging
import sys


def configure(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
