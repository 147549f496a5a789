"""The registrar's report: the audit as a table and as a page with charts.

:mod:`.data` builds the report from the audit's parts (offline or a cluster's
``GET /report``); :mod:`.table` prints it; :mod:`.html` draws it.
"""
