"""Transports: how a channel reaches the writer (in this process, Unix socket, TCP, Redis)."""
