"""Small helpers with no knowledge of detection: crash-safe file writes and JSON lines."""
