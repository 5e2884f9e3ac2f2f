"""The session recording format: typed records, writer, reader (docs/recording.md)."""
