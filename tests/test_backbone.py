import numpy as np
import pytest
import torch
import torchvision

import copy

from actionrec.backbone import build_backbone, embed, prepare_for_inference, resize_crop
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
    model = build_backbone("resnet50", "none", seed=0)
    batch = torch.cat([resize_crop(read_frames(path, 4), 256, 224) for path in real_clips.values()])
    with torch.inference_mode():
        reference = model(((batch.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                           / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)))
    for precision, compiled in (("fp32", False), ("bf16", False), ("bf16", True)):
        fast = prepare_for_inference(copy.deepcopy(model), precision, compiled)
        features = embed(fast, batch, precision)
        cosine = torch.nn.functional.cosine_similarity(reference, features, dim=1)
        assert features.shape == (12, 2048) and cosine.mean() >= 0.99, (precision, compiled, cosine)
