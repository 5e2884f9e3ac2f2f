"""`guidance console`: the practitioner's local web app over the same pipeline, never in the permit path.

The console keeps clients, consent, plans, sessions, notes and photos in a
database (SQLite by default, PostgreSQL by URL), edits plans on the face chart,
runs the pre-session checklist, and starts each session as its own `guidance run`
process that it drives over the local control channel (`guidance/live/control.py`).
If the console or the browser goes away, the run process disarms by itself.
"""
