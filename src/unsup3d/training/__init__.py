"""What the LightningModules of both methods share: default backbones, loading a backbone from another
stage's checkpoint, a rank's share of the training scenes (:mod:`.common`), and evaluation: test-time
super-voxel pooling, merging surplus clusters, the Hungarian metric and its logging (:mod:`.evaluation`);
the float32 islands of mixed-precision steps (:mod:`.precision`)."""
