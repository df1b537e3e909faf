"""The wire: what both sides of every transport agree on (frames, authentication, addresses)."""
