"""Real images: a short training run on a slice of fashion-products with 40% of labels removed.

Skips when ``../shared/data/fashion-products`` is absent.
"""
import pytest

from attrtag.training.config import TrainConfig
from attrtag.data.manifest import Manifest, read_manifest
from attrtag.data.tables import drop_labels, schema_from_table
from attrtag.training.loop import train

from tests.helpers import SHARED_FASHION

GROUPS = ["masterCategory", "gender", "usage"]

pytestmark = pytest.mark.skipif(not (SHARED_FASHION / "labels.csv").is_file(), reason="fashion-products data absent")


def test_short_training_beats_majority_baseline(tmp_path):
    labels = SHARED_FASHION / "labels.csv"
    schema = schema_from_table(labels, GROUPS)
    full = read_manifest(labels, schema)
    train_recs = drop_labels(full.split("train")[:640], 0.4, seed=1)
    val_recs = full.split("val")[:240]
    manifest = Manifest(source=str(labels), schema=schema, samples=train_recs + val_recs)
    cfg = TrainConfig(backbone="test_resnet", image_size=64, epochs=4, batch_size=32, lr=5e-3, workers=2, warmup_epochs=0.3)
    res = train(cfg, schema, manifest, tmp_path / "run")
    h = res.history
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    last = h[-1]
    for g in ("masterCategory", "gender"):
        n = last[f"val_n/{g}"]
        counts = [sum(1 for r in val_recs if r.labels[schema.group_index(g)] == k) for k in range(len(schema[g]))]
        majority = max(counts) / n
        print(f"{g}: val accuracy {last[f'val_acc/{g}']:.3f} vs majority {majority:.3f} (n={n})")
        assert last[f"val_acc/{g}"] > majority + 0.05, (g, last[f"val_acc/{g}"], majority)
