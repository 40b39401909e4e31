"""unsup3d.data.synthetic."""
