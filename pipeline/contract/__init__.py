"""The published contract: pydantic models of every event cdiwatch reads or
writes, and the JSON Schemas generated from them (``schemas/``).

The hot path does not use these models: :mod:`pipeline.core.validation` is
the one validator. The models stay the published definition (richer JSON
Schema: titles, descriptions, formats) and an independent second reading of
contract §2 that the property tests hold the validator to.
"""
