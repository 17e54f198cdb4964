"""What runs leave behind: records, the store, artifacts, leaderboards and statistics."""
