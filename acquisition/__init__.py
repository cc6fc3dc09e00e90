"""Live sessions: plans, the rig (its registry of device openers), the session loop, its reports and the
crash-safe stack buffer."""
