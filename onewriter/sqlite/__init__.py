"""SQLite itself: opening connections, readers, encryption, backups, schema upkeep."""
