"""Capture files: JSON Lines of Kafka messages (kcat ``-J`` envelopes or bare events).

The format is read and written only here: ``replay`` publishes captures,
``capture`` writes them from a broker, ``simulate`` makes them, and the
offline ``audit`` reads them.
"""

from .reading import (CaptureError, CaptureMessage, ErrorHandler, check_capture_files, count_lines,
                      max_line_bytes, read_capture)
from .writing import capture_line, write_capture

__all__ = ["CaptureError", "CaptureMessage", "ErrorHandler", "check_capture_files", "count_lines", "max_line_bytes",
           "read_capture", "capture_line", "write_capture"]
