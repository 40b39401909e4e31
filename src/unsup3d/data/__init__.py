"""unsup3d.data."""
