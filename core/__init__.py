"""Understudy's engine: importable and testable without Streamlit."""

import logging

from .redact import LogRedactor

# Whatever a module of the package logs, a key or a credential in it is masked (see core/redact.py).
logging.getLogger("understudy").addFilter(LogRedactor())
