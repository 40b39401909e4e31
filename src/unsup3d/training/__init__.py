"""What the LightningModules of both methods share: default backbones, loading a backbone from another
stage's checkpoint, a rank's share of the training scenes (:mod:`.common`), and validation by K-means
and Hungarian-matched mIoU (:mod:`.evaluation`)."""
