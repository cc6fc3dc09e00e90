"""Device drivers: one small interface per role (Camera, FocusDrive) and one module per real device family."""
