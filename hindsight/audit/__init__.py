"""The auditor's side of Hindsight: pure reads of a state dir, no daemon needed.

- ``verify`` (``hindsight.audit.verify``): the log's chain, its call rules and retention
  events, and every file under recordings/ against it; the first problem, named.
- ``report`` (``hindsight.audit.report``): figures over the whole log, as JSON;
  ``hindsight.audit.text`` renders them as tables.
"""

from __future__ import annotations

from hindsight.audit.report import Report, report
from hindsight.audit.verify import VerifyResult, verify

__all__ = ["Report", "VerifyResult", "report", "verify"]
