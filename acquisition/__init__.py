"""Plans, the session loop and the on-disk stack buffer (live sessions: not built yet)."""
