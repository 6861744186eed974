"""Fuzz harnesses for ffsecure's parsers (atheris, with a pure-Python fallback driver)."""
