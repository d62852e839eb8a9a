"""Device, precision, workers and batch size resolved for the machine (`auto` values)."""
from __future__ import annotations

import pytest
import torch

from actionrec import device as dev
from actionrec.errors import ParamsError
from actionrec.runtime import resolve_runtime
from tests.conftest import committed_params


def test_auto_is_the_cpu_without_a_gpu_and_cuda_with_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert dev.resolve_device("auto") == torch.device("cuda")
    assert dev.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ParamsError, match="runtime.device is cuda:2 but only 2 CUDA device"):
        dev.resolve_device("cuda:2")


def test_asking_for_cuda_without_one_names_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ParamsError) as error:
        dev.resolve_device("cuda")
    assert str(error.value) == "runtime.device is cuda but torch sees no CUDA GPU here: set runtime.device: auto or cpu"


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_the_cpu_asks_torch_for_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert dev.resolve_precision("auto", torch.device("cpu")) == expected
    assert dev.resolve_precision("fp32", torch.device("cpu")) == "fp32"  # an explicit choice stays


def test_auto_precision_on_cuda_is_bf16_or_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert dev.resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert dev.resolve_precision("auto", torch.device("cuda")) == "fp16"


def test_workers_and_batch_follow_the_device_and_the_cores(monkeypatch):
    monkeypatch.setattr(dev, "available_cores", lambda: 16)
    assert dev.resolve_workers("auto", torch.device("cuda")) == 15
    assert dev.resolve_workers("auto", torch.device("cpu")) == 4
    monkeypatch.setattr(dev, "available_cores", lambda: 2)
    assert dev.resolve_workers("auto", torch.device("cpu")) == 1
    assert dev.resolve_workers(3, torch.device("cpu")) == 3
    assert dev.resolve_batch_frames("auto", torch.device("cuda")) == 256
    assert dev.resolve_batch_frames("auto", torch.device("cpu")) == 64


def test_resolve_runtime_fills_every_auto(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    params = committed_params()
    params["features"]["precision"] = "auto"
    params["runtime"].update(device="auto", num_workers="auto", batch_frames="auto")
    resolved, device = resolve_runtime(params["features"], params["runtime"])
    assert device == torch.device("cpu") and resolved["device"] == "cpu"
    assert resolved["precision"] in ("fp32", "bf16") and resolved["num_workers"] >= 1 and resolved["batch_frames"] == 64
    assert params["features"]["precision"] == "auto"  # the params themselves are left alone
