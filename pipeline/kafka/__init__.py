"""Kafka at the edge: client settings (TLS, SASL), the topic plan, admin
(probe, topic creation) and the local test broker. Nothing here decides
anything about incidents or crimes.
"""
