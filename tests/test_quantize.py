"""features.precision int8 (actionrec/quantize.py): OpenVINO + NNCF post-training quantization,
calibrated on the committed clips; CPU only."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from actionrec import device as dev
from actionrec.errors import ParamsError
from actionrec.params import load_params
from actionrec.verify import TOLERANCE

from tests.conftest import ROOT, committed_params

pytest.importorskip("openvino")
pytest.importorskip("nncf")


def test_int8_is_refused_on_cuda_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ParamsError, match="features.precision int8 runs on the CPU only") as error:
        dev.resolve_precision("int8", dev.resolve_device("auto"))
    assert "\n" not in str(error.value)
    assert dev.resolve_precision("int8", torch.device("cpu")) == "int8"


def test_params_accept_int8(tmp_path):
    params = committed_params()
    params["features"]["precision"] = "int8"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert load_params("features", path=tmp_path / "params.yaml")["features"]["precision"] == "int8"


INT8_VS_FP32 = """
import json, sys
import torch
from actionrec.backbone import embed, inference_backbone, resize_crop
from actionrec.verify import relative_l2
from actionrec.video import sample_clip

cfg = {"backbone": "resnet50", "weights": "none", "seed": 0, "resize": 128, "crop": 112,
       "interpolation": "bilinear", "num_frames": 8}
first, second = (inference_backbone({**cfg, "precision": "int8"}) for _ in range(2))
fp32 = inference_backbone({**cfg, "precision": "fp32"})
frames = resize_crop(sample_clip(sys.argv[1], 8).frames, first.preprocessing)
a, b, reference = embed(first, frames, "int8"), embed(second, frames, "int8"), embed(fp32, frames, "fp32")
print(json.dumps({"shape": list(a.shape), "dtype": str(a.dtype), "equal": torch.equal(a, b),
                  "distance": float(relative_l2(a.numpy(), reference.numpy()).max())}))
"""


@pytest.mark.pipeline
def test_int8_features_are_deterministic_and_within_tolerance_of_fp32():
    """Two int8 backbones built from scratch give identical features on a real clip; they
    differ from fp32 by less than make verify's int8 tolerance. A small crop keeps it fast; a
    child process keeps OpenVINO's native threads out of the test process, as in the stage."""
    out = subprocess.run([sys.executable, "-c", INT8_VS_FP32, str(ROOT / "tests/data/v_ApplyEyeMakeup_g01_c01.avi")],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["shape"] == [8, 2048] and result["dtype"] == "torch.float32"
    assert result["equal"]
    assert 0 < result["distance"] < TOLERANCE["int8"]
