"""Simulated devices and optics, met through the same interfaces as the real ones."""
