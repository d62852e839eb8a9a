import numpy as np
import pytest
import torch

from actionrec.model import LSTMClassifier, build_model, feature_stats, load_checkpoint, standardize


@pytest.mark.parametrize("bidirectional,layers", [(False, 1), (True, 2)])
def test_lstm_shapes(bidirectional, layers):
    model = LSTMClassifier(32, 5, hidden_size=8, num_layers=layers, dropout=0.1, bidirectional=bidirectional)
    assert model(torch.randn(3, 16, 32)).shape == (3, 5)


def test_lstm_depends_on_frame_order():
    torch.manual_seed(0)
    model = LSTMClassifier(8, 3, hidden_size=8).eval()
    x = torch.randn(1, 6, 8)
    assert not torch.allclose(model(x), model(x.flip(1)))


def test_feature_stats_standardize_train_frames():
    feats = np.random.default_rng(0).normal(3.0, 2.0, size=(10, 4, 6)).astype(np.float16)
    feats[..., 5] = 1.0  # a dead unit must not divide by zero
    mean, std = feature_stats(feats)
    z = standardize(feats, mean, std).numpy()
    assert np.allclose(z[..., :5].reshape(-1, 5).mean(0), 0, atol=1e-3)
    assert np.allclose(z[..., :5].reshape(-1, 5).std(0), 1, atol=1e-3)
    assert np.isfinite(z).all() and np.allclose(z[..., 5], 0)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    meta = {"class_names": ["A", "B", "C"], "feature_dim": 12, "hidden_size": 4, "num_layers": 1,
            "dropout": 0.0, "bidirectional": False, "num_frames": 16, "temporal_centering": True,
            "feature_mean": torch.zeros(12), "feature_std": torch.ones(12)}
    model = build_model(meta)
    torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp_path / "m.pt")
    loaded, loaded_meta = load_checkpoint(str(tmp_path / "m.pt"))
    x = torch.randn(2, 16, 12)
    assert torch.equal(model.eval()(x), loaded(x))
    assert loaded_meta["class_names"] == ["A", "B", "C"] and not loaded.training


def test_a_split_joins_the_features_by_video_and_counts_the_missing(tmp_path):
    """Features are stored once per video; a split picks its rows by name, in split order, and
    counts the videos that have none (not decodable) so that evaluate can report them."""
    import json

    import numpy as np
    import pandas as pd

    from actionrec.dataset import load_split

    features, splits = tmp_path / "features", tmp_path / "splits"
    features.mkdir()
    splits.mkdir()
    videos = ["a.avi", "b.avi", "c.avi", "d.avi"]
    np.save(features / "features.npy", np.arange(4, dtype=np.float16).reshape(4, 1, 1) * np.ones((1, 2, 3), np.float16))
    pd.DataFrame({"video": videos, "label": [0, 1, 0, 1]}).to_csv(features / "videos.csv", index=False)
    (features / "info.json").write_text(json.dumps({}))
    pd.DataFrame({"video": ["d.avi", "broken.avi", "b.avi"], "label": [1, 0, 1]}).to_csv(splits / "test.csv", index=False)
    feats, rows, missing = load_split("test", features, splits)
    assert list(rows["video"]) == ["d.avi", "b.avi"] and missing == 1
    assert feats.dtype == np.float16 and feats.shape == (2, 2, 3)
    assert feats[:, 0, 0].tolist() == [3.0, 1.0]
