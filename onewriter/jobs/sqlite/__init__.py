"""The SQLite store: the queue's writes are ops run by the one writer."""
