"""``cdiwatch worker``: run one monitor process.

Checks what can be checked before starting (the web port is free; a worker
reachable from the network has a token; the broker answers), creates the
topics it needs, configures logging itself (faust's own setup makes every
debug call build a record and draws a spinner), then hands the process to
faust's worker until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import gc
import logging
import sys

from ..kafka.admin import BrokerUnreachable, TopicError, ensure_topics
from ..kafka.client import KafkaSetupError
from ..kafka.local import port_in_use
from ..kafka.topics import TopicPlan
from .errors import ConfigError, RunFailed

__all__ = ["run", "configure_logging", "RedactSecrets"]

logger = logging.getLogger(__name__)


class RedactSecrets(logging.Filter):
    """Blanks the values of the secrets in every record the log handler writes.

    Why: libraries log what they were given, e.g. kafka-python writes its whole
    configuration, SASL password included, at debug level. A filter on the
    handler sees every record of every library, whatever its logger.
    """

    MASK = "**********"

    def __init__(self, secrets) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            record.msg, record.args = self._blank(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._blank(record.exc_text)
        if record.stack_info:
            record.stack_info = self._blank(record.stack_info)
        return True

    def _blank(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, self.MASK)
        return text


def configure_logging(level: str, secrets=()) -> None:
    """Log lines to stderr; ``secrets`` (plain values) never appear in them."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    redact = RedactSecrets(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
    if level.lower() != "debug":  # aiokafka and faust are chatty during rebalances
        for name in ("aiokafka", "faust", "mode"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # kafka-python is only the admin client before the start: when it cannot
        # connect it logs tracebacks, and the error line already says why
        # (pipeline.kafka.diagnose). --log-level debug shows them.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def preflight(settings) -> None:
    """The mistakes a worker can see before it starts, as one line each."""
    if not settings.web_loopback and settings.http_token is None and not settings.http_allow_anonymous:
        raise ConfigError(f"the web port would listen on {settings.web_host}, reachable from the network, "
                          "without a token: set CDI_HTTP_TOKEN (or CDI_HTTP_TOKEN_FILE), or "
                          "CDI_HTTP_ALLOW_ANONYMOUS=true to serve police data to anyone who can connect")
    host = settings.web_host if settings.web_host not in ("", "0.0.0.0", "::") else "0.0.0.0"
    if port_in_use(settings.web_port, host if host != "localhost" else "127.0.0.1"):
        raise ConfigError(f"web port {settings.web_port} on {settings.web_host} is already in use: stop what "
                          "uses it or choose another with --web-port / CDI_WEB_PORT")


def run(args, settings) -> int:
    import faust

    preflight(settings)
    configure_logging(settings.log_level, [secret.get_secret_value() for secret in
                                           (settings.kafka_sasl_password, settings.http_token) if secret])
    plan = TopicPlan.from_settings(settings)
    try:
        ensure_topics(settings, plan.configs(), settings.partitions, settings.replication_factor)
    except KafkaSetupError as exc:
        raise ConfigError(str(exc)) from None
    except BrokerUnreachable as exc:
        if exc.reason:  # the diagnosis already says what to fix
            raise RunFailed(str(exc)) from None
        raise RunFailed(f"{exc}; is the broker running, and are CDI_BROKER and CDI_KAFKA_* right?") from None
    except TopicError as exc:
        raise RunFailed(str(exc)) from None

    from ..stream.app import Worker

    worker = Worker(settings)
    # The ledgers keep hundreds of thousands of small long-lived objects; with
    # the default thresholds the cyclic collector rescans them over and over.
    gc.set_threshold(50_000, 20, 100)
    runner = faust.Worker(worker.app, loglevel=settings.log_level.upper(), quiet=True, override_logging=False)
    runner.spinner = None
    print(worker.describe(), file=sys.stderr, flush=True)
    runner.execute_from_commandline()
    return 0
