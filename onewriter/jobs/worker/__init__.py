"""The worker runner: claims, runs handlers, heartbeats, completes or fails."""
