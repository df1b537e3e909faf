"""The queue over HTTP: the Starlette service, its client and the serving processes.

Needs the ``http`` extra."""
