import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from actionrec.backbone import build_backbone, embed, normalize, prepare_for_inference, resize_crop, weights_file
from actionrec.video import read_frames


def test_imagenet_weights_load_from_the_torch_home_cache(tmp_path, monkeypatch):
    """The real IMAGENET1K_V2 path, offline: a checkpoint under the name torchvision expects."""
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(123)
    reference = torchvision.models.resnet50().state_dict()
    torch.save(reference, cache / weights.url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = build_backbone("resnet50", "IMAGENET1K_V2")
    loaded = model.state_dict()
    assert torch.equal(loaded["conv1.weight"], reference["conv1.weight"])
    assert torch.equal(loaded["layer4.2.bn3.running_var"], reference["layer4.2.bn3.running_var"])
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_weights_from_a_state_dict_file(tmp_path):
    torch.manual_seed(7)
    reference = torchvision.models.resnet18().state_dict()
    torch.save(reference, tmp_path / "r18.pth")
    model = build_backbone("resnet18", str(tmp_path / "r18.pth"))
    assert torch.equal(model.state_dict()["conv1.weight"], reference["conv1.weight"])


def test_random_weights_are_seeded():
    a, b = build_backbone("resnet18", "none", seed=3), build_backbone("resnet18", "none", seed=3)
    assert torch.equal(a.state_dict()["conv1.weight"], b.state_dict()["conv1.weight"])


def test_resize_crop_keeps_uint8_and_centre():
    frames = np.zeros((2, 240, 320, 3), np.uint8)
    frames[:, 100:140, 140:180] = 255  # a white square in the centre survives the crop
    out = resize_crop(frames, 256, 224)
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.uint8
    assert out[:, :, 112, 112].min() == 255 and out[:, :, 0, 0].max() == 0


def test_bf16_and_compiled_features_agree_with_fp32_on_real_clips(real_clips):
    """Agreement measured so that unrelated frames would fail: the relative L2 error of the
    fast paths must be far below the relative distance between frames of different clips
    (random-weight features of unrelated clips still have cosine similarity ~0.998, so a
    cosine threshold would prove nothing). Measured here: bf16 0.0045, cross-clip >= 0.039."""
    model = build_backbone("resnet50", "none", seed=0)
    batch = torch.cat([resize_crop(read_frames(path, 4), 256, 224) for path in real_clips.values()])
    with torch.inference_mode():
        reference = model(normalize(batch).contiguous())  # unfused, fp32, eager
    clip = torch.arange(len(batch)) // 4
    cross = torch.cdist(reference, reference) / reference.norm(dim=1, keepdim=True)
    cross_clip = cross[clip[:, None] != clip[None, :]].min()
    assert cross_clip > 0.02, "the sample clips should give distinct features"
    for precision, compiled in (("fp32", False), ("bf16", False), ("fp32", True)):
        fast = prepare_for_inference(copy.deepcopy(model), precision, compiled)
        features = embed(fast, batch, precision)
        error = (features - reference).norm(dim=1) / reference.norm(dim=1)
        assert features.shape == (12, 2048), (precision, compiled)
        assert error.max() < min(0.02, cross_clip / 4), (precision, compiled, error.max(), cross_clip)


@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("efficientnet_b0", 1280), ("convnext_tiny", 768),
                                      ("mobilenet_v3_large", 1280)])
def test_any_torchvision_classifier_serves_as_backbone(name, dim):
    """The classifier is removed and the feature size read from the model itself."""
    model = build_backbone(name, "none", seed=0)
    assert model.feature_dim == dim
    fast = prepare_for_inference(model, "fp32", False)
    features = embed(fast, torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8), "fp32")
    assert features.shape == (2, dim) and torch.isfinite(features).all()


def test_weights_file_is_named_by_torchvision_or_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert weights_file("IMAGENET1K_V2", "resnet50") == tmp_path / "hub/checkpoints/resnet50-11ad3fa6.pth"
    assert weights_file("weights/mine.pth", "resnet50") == Path("weights/mine.pth")
    assert weights_file("none", "resnet50") is None
