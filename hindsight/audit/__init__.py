"""The auditor's side of Hindsight: reads of a state dir, no daemon needed.

- ``verify``: the log's chain, its call rules and retention events, every sampling draw
  (``draws``), every file under recordings/ against it, and the lines a witness saw; the
  first problem, named.
- ``report``: figures over the whole log, as JSON, with the sampling ``fairness`` bands;
  ``text`` renders them as tables, ``html`` as one self-contained page with charts.
- ``register``: the GDPR Art. 30 record of processing, from the config and the log.
- ``witness``: signed checkpoints of a recorder's log, kept on another host.
- ``repair``: the one write, for a log whose tail a crash tore: the torn bytes are moved
  aside for the auditor, never dropped.
"""

from __future__ import annotations

from hindsight.audit.report import Report, report
from hindsight.audit.verify import VerifyResult, verify

__all__ = ["Report", "VerifyResult", "report", "verify"]
