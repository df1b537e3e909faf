"""The demo service: a posts API served by a primary process (the writer, owner of the
listening socket) and N uvicorn worker processes on that one port.

``onewriter demo serve --workers 4 --port 3000 --db data/demo.db``; see docs/demo.md.
"""
