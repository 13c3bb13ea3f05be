"""Chat-page conversations kept per user on the server: storage backends, search and endpoints."""
