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
from actionrec.backbone import embed, inference_backbone, resize_crop
from actionrec.verify import relative_l2
from actionrec.video import sample_clip

cfg = {"backbone": "resnet50", "weights": "none", "seed": 0, "resize": 128, "crop": 112,
       "interpolation": "bilinear", "num_frames": 8}
int8, fp32 = (inference_backbone({**cfg, "precision": precision}) for precision in ("int8", "fp32"))
frames = resize_crop(sample_clip(sys.argv[1], 8).frames, int8.preprocessing)
a, reference = embed(int8, frames, "int8"), embed(fp32, frames, "fp32")
print(json.dumps({"shape": list(a.shape), "dtype": str(a.dtype),
                  "distance": float(relative_l2(a.numpy(), reference.numpy()).max())}))
"""


@pytest.mark.pipeline
def test_int8_features_are_within_tolerance_of_fp32():
    """An int8 resnet50's features of a real clip differ from fp32 by less than make verify's int8 tolerance (that
    two builds give identical ones: the video test below). A small crop keeps it fast; a child process keeps
    OpenVINO's native threads out of the test process, as in the stage."""
    out = subprocess.run([sys.executable, "-c", INT8_VS_FP32, str(ROOT / "tests/data/v_ApplyEyeMakeup_g01_c01.avi")],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["shape"] == [8, 2048] and result["dtype"] == "torch.float32"
    assert 0 < result["distance"] < TOLERANCE["int8"]


INT8_VIDEO = """
import json, sys
import torch
from actionrec.backbone import clip_inputs, embed, inference_backbone, preprocessing
from actionrec.verify import relative_l2

params = {"backbone": "r3d_18", "weights": "none", "seed": 0, "resize": 40, "crop": 32, "interpolation": "auto",
          "clip_frames": 4, "num_frames": 2}
stage = inference_backbone({**params, "precision": "int8"})
meta = {**params, "preprocessing": preprocessing(params), "precision": "int8"}  # info.json's, in the model file
predict = inference_backbone({**meta, "compile": False})  # as predict.py's load_predictor
fp32 = inference_backbone({**params, "precision": "fp32"})
clip, clips = clip_inputs(sys.argv[1], 2, predict.preprocessing)
a, b, reference = embed(stage, clips, "int8"), embed(predict, clips, "int8"), embed(fp32, clips, "fp32")
print(json.dumps({"inputs": list(clips.shape), "shape": list(a.shape), "equal": torch.equal(a, b),
                  "distance": float(relative_l2(a.numpy(), reference.numpy()).max())}))
"""


@pytest.mark.pipeline
def test_a_video_backbone_quantizes_and_predict_rebuilds_the_stages_int8_backbone():
    """r3d_18 (clips of 4 frames, 32 px: the cost of quantizing) in int8: the stage's backbone and the one
    predict.py builds again from the model file's meta, each quantized from scratch, give identical features on 2
    clips of a real video, within make verify's int8 tolerance of fp32 (random weights: says little of trained ones)."""
    out = subprocess.run([sys.executable, "-c", INT8_VIDEO, str(ROOT / "tests/data/v_ApplyEyeMakeup_g01_c01.avi")],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["inputs"] == [2, 4, 3, 32, 32] and result["shape"] == [2, 512]
    assert result["equal"]
    assert 0 < result["distance"] < TOLERANCE["int8"]
