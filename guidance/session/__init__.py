"""The session recording format: typed records (`records`), the writer (`writer`) and the reader (`reader`).

docs/recording.md describes the format; tests/session/test_records.py checks the doc against the records.
"""
