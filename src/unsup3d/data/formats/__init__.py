"""unsup3d.data.formats."""
