"""``python bench/worker_fetchwait.py MS worker ...``: ``cdiwatch`` with every aiokafka
consumer's ``fetch_max_wait_ms`` capped at MS. A what-if for ``stream_bench.py``, not
a setting of the product.

Why: Tansu does not wake a waiting fetch when records arrive; it looks again
only at half of ``fetch_max_wait_ms`` and at its end (measured: with a 1,000 ms
wait, a record produced 30 ms into it is read 470 ms later), while Apache Kafka
answers as soon as ``fetch_min_bytes`` (1) are there. The worker's intake
consumer uses aiokafka's default 500 ms and faust's consumer a hard-coded
1,500 ms, so on Tansu every idle hop can add up to 250 ms / 750 ms. Capping the
wait (the client then re-polls) approximates a broker that wakes waiting
fetches, which is what a production Kafka does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import aiokafka

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    cap = int(sys.argv[1])
    original = aiokafka.AIOKafkaConsumer.__init__

    def init(self, *args, **kwargs):
        kwargs["fetch_max_wait_ms"] = min(int(kwargs.get("fetch_max_wait_ms", 500)), cap)
        original(self, *args, **kwargs)

    aiokafka.AIOKafkaConsumer.__init__ = init
    from pipeline.cli import main as cli_main

    return cli_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
