"""The PostgreSQL store: any number of processes write, claims skip locked rows.

Needs the ``postgres`` extra."""
