"""benchmarks/scale.py's --feature-cache-mb reaches the SVC module it builds from the config."""

from pathlib import Path

import yaml

from benchmarks.scale import QUICKSTART, instantiate, with_feature_cache


def _model(mb):
    cfg = with_feature_cache(yaml.safe_load(Path(QUICKSTART).read_text()), mb)
    return instantiate(cfg["model"])


def test_feature_cache_override_reaches_the_module():
    assert _model(0.0).hparams.feature_cache_mb == 0.0
    assert _model(64.0).hparams.feature_cache_mb == 64.0


def test_no_override_keeps_the_config_or_module_default():
    cfg = yaml.safe_load(Path(QUICKSTART).read_text())
    expected = cfg["model"]["init_args"].get("feature_cache_mb", 512.0)
    assert _model(None).hparams.feature_cache_mb == expected
