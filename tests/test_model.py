import numpy as np
import pytest
import torch

from actionrec.model import (HEADS, RecurrentClassifier, build_model, feature_stats, load_checkpoint, prepare,
                             uses_centering)

TRAIN = {"head": "lstm", "proj_dim": 16, "hidden_size": 8, "num_layers": 1, "bidirectional": False,
         "transformer_layers": 1, "transformer_heads": 4, "dropout": 0.1}


def meta_for(head: str, **changes) -> dict:
    return {**TRAIN, "head": head, "feature_dim": 32, "num_frames": 6, "class_names": ["A", "B", "C", "D", "E"],
            **changes}


@pytest.mark.parametrize("cell,bidirectional,layers,proj", [("lstm", False, 1, 0), ("lstm", True, 2, 16),
                                                           ("gru", False, 1, 16), ("gru", True, 2, 0)])
def test_recurrent_shapes(cell, bidirectional, layers, proj):
    model = RecurrentClassifier(32, 5, cell, hidden_size=8, num_layers=layers, dropout=0.1,
                                bidirectional=bidirectional, proj_dim=proj)
    assert model(torch.randn(3, 16, 32)).shape == (3, 5)


@pytest.mark.parametrize("head", HEADS)
def test_every_head_sees_frame_order_except_mean(head):
    torch.manual_seed(0)
    model = build_model(meta_for(head)).eval()
    x = torch.randn(2, 6, 32)
    assert model(x).shape == (2, 5)
    assert torch.allclose(model(x), model(x.flip(1)), atol=1e-6) == (head == "mean")


def test_mean_head_is_a_linear_layer_on_the_frame_average():
    model = build_model(meta_for("mean")).eval()
    x = torch.randn(4, 6, 32)
    linear = model.head[1]
    assert torch.allclose(model(x), linear(x.mean(1)), atol=1e-6)
    assert sum(p.numel() for p in model.parameters()) == 32 * 5 + 5


def test_mean_head_never_centres_clips():
    assert uses_centering({"temporal_centering": True, "head": "lstm"})
    assert not uses_centering({"temporal_centering": True, "head": "mean"})


def test_feature_stats_standardize_train_frames():
    feats = np.random.default_rng(0).normal(3.0, 2.0, size=(10, 4, 6)).astype(np.float16)
    feats[..., 5] = 1.0  # a dead unit must not divide by zero
    mean, std = feature_stats(feats, chunk=3)  # chunked sums equal the whole-array figures
    flat = feats[..., :5].reshape(-1, 5).astype(np.float64)
    assert np.allclose(mean[:5], flat.mean(0), atol=1e-5) and np.allclose(std[:5], flat.std(0), atol=1e-4)
    z = prepare(torch.from_numpy(feats), torch.from_numpy(mean), torch.from_numpy(std)).numpy()
    assert np.allclose(z[..., :5].reshape(-1, 5).mean(0), 0, atol=1e-3)
    assert np.allclose(z[..., :5].reshape(-1, 5).std(0), 1, atol=1e-3)
    assert np.isfinite(z).all() and np.allclose(z[..., 5], 0)


def test_prepare_per_batch_equals_whole_array_and_centres():
    feats = torch.from_numpy(np.random.default_rng(1).normal(size=(6, 4, 5)).astype(np.float16))
    mean, std = torch.randn(5), torch.rand(5) + 0.5
    whole = prepare(feats, mean, std, center_clips=True)
    assert whole.dtype == torch.float32 and torch.allclose(whole.mean(1), torch.zeros(6, 5), atol=1e-5)
    assert torch.equal(torch.cat([prepare(b, mean, std, True) for b in feats.split(4)]), whole)


@pytest.mark.parametrize("head", HEADS)
def test_checkpoint_round_trip_with_weights_only(tmp_path, head):
    meta = {**meta_for(head), "temporal_centering": True, "feature_mean": torch.zeros(32),
            "feature_std": torch.ones(32)}
    model = build_model(meta)
    torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp_path / "m.pt")
    loaded, loaded_meta = load_checkpoint(str(tmp_path / "m.pt"))
    x = torch.randn(2, 6, 32)
    assert torch.equal(model.eval()(x), loaded(x))
    assert loaded_meta["head"] == head and not loaded.training


def test_model_files_from_before_heads_load_as_lstm(tmp_path):
    meta = {"class_names": ["A", "B"], "feature_dim": 12, "hidden_size": 4, "num_layers": 1, "dropout": 0.0,
            "bidirectional": False, "num_frames": 16, "temporal_centering": True}
    old = RecurrentClassifier(12, 2, "lstm", 4).eval()
    # the old file's keys: lstm.weight_ih_l0, ..., head.1.weight
    state = {k.replace("rnn.", "lstm.", 1): v for k, v in old.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, tmp_path / "m.pt")
    loaded, _ = load_checkpoint(str(tmp_path / "m.pt"))
    assert isinstance(loaded, RecurrentClassifier) and isinstance(loaded.rnn, torch.nn.LSTM)
    x = torch.randn(2, 16, 12)
    assert torch.equal(loaded(x), old(x))


def test_a_split_joins_the_features_by_video_and_counts_the_missing(tmp_path, capsys):
    """Features are stored once per video; a split picks its rows by name, in split order, and
    counts the videos that have none (not decodable) so that evaluate can report them, naming
    each, and each class it leaves with no video in the split."""
    import json

    import numpy as np
    import pandas as pd

    from actionrec.dataset import load_split, write_features

    features, splits = tmp_path / "features", tmp_path / "splits"
    features.mkdir()
    splits.mkdir()
    videos = ["a.avi", "b.avi", "c.avi", "d.avi"]
    values = np.arange(4, dtype=np.float16).reshape(4, 1, 1) * np.ones((1, 2, 3), np.float16)
    write_features(features, pd.DataFrame({"video": videos, "label": [0, 1, 0, 1]}), lambda i: values[i])
    (features / "info.json").write_text(json.dumps({}))
    pd.DataFrame({"video": ["d.avi", "broken.avi", "b.avi"], "label": [1, 0, 1],
                  "class_name": ["B", "A", "B"]}).to_csv(splits / "test.csv", index=False)
    feats, rows, missing = load_split("test", features, splits)
    assert list(rows["video"]) == ["d.avi", "b.avi"] and missing == 1
    assert capsys.readouterr().err.splitlines() == [
        "warning: test video broken.avi has no features (it could not be decoded): left out",
        "warning: the test split has no video of A left"]
    assert feats.dtype == np.float16 and feats.shape == (2, 2, 3)
    assert feats[:, 0, 0].tolist() == [3.0, 1.0]
