"""The decision core: contract §2-§4 as pure, synchronous Python.

Data in, decisions out. Nothing here reads a clock, a topic, a file or the
environment, and nothing here imports Kafka, Prometheus, pydantic or an HTTP
library, or any cdiwatch module outside this package (a test checks it).
The workers (:mod:`pipeline.stream`) and the offline audit
(:mod:`pipeline.commands.audit`) are shells around the same stages.

Where each contract rule lives:

- §2 vocabularies, limits, statuses: :mod:`.vocabulary`; validation: :mod:`.validation`;
  duplicates and event counts: :mod:`.eventids`; crimes: :mod:`.crimes`
- §3 each rule one function: :mod:`.rules`; the watermark: :func:`.times.watermark`;
  incident state, deadlines, alerts: :mod:`.incidents`
- §4 the audit fold and audit.v1: :mod:`.audit`; incremental counts: :mod:`.tally`
- co-location (§1): :mod:`.routing`; the stages and their messages:
  :mod:`.stages`, :mod:`.events`; one process: :mod:`.monitor`
"""

from .audit import AuditParts, build_audit
from .config import CoreConfig, InputTopics, Limits, Params, Vocabulary
from .events import Alert, CrimeEvent, IncidentEvent, Rejection
from .monitor import Monitor
from .validation import Validator

__all__ = ["AuditParts", "build_audit", "CoreConfig", "InputTopics", "Limits", "Params", "Vocabulary",
           "Alert", "CrimeEvent", "IncidentEvent", "Rejection", "Monitor", "Validator"]
