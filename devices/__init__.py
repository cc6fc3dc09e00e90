"""Device drivers: one small interface per role (Camera, FocusDrive) (not built yet)."""
