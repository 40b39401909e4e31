"""unsup3d.synthetic."""
