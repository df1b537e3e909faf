"""The client side: channels to the writer over any transport, and the core of a
database as one process sees it."""
