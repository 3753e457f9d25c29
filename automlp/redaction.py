"""Passwords never reach a message, a log or a report."""

from __future__ import annotations

import re


def redact(text: str) -> str:
    """`text` (a URL, or a message holding one) with every password replaced by ***, for every message, log
    and report. The password runs to the last '@' before the host, so one holding '@' is hidden whole."""
    text = re.sub(r"(://[^:/@\s]*:)[^/\s]*@", r"\1***@", text)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", text)
