"""cdiwatch: live crime-data integrity monitoring.

Packages, from the inside out (docs/architecture.md):

- :mod:`pipeline.core`: the decision rules, pure (no Kafka, no clock, no I/O);
- :mod:`pipeline.contract`: the published models and JSON Schemas;
- :mod:`pipeline.capture`: capture files; :mod:`pipeline.simulation`: a simulated force;
- :mod:`pipeline.report`: the registrar's report;
- :mod:`pipeline.kafka`: client settings, topics, admin, the local broker;
- :mod:`pipeline.stream`: the worker (faust app, consumer group, changelogs, views, HTTP);
- :mod:`pipeline.commands`: the ``cdiwatch`` command line;
- :mod:`pipeline.settings`: the one settings object;
- :mod:`pipeline.native`: which modules are compiled (mypyc), and whether the build is used.
"""

from . import native as _native

__version__ = "0.2.0"

_native.select()  # before any compiled module is imported
