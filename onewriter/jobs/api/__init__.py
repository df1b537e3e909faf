"""The queue's API, written once over any store (the ``Store`` protocol)."""
