"""runtime.engine: ray. Ray Data decodes in CPU tasks and embeds in actors (a GPU each where there are GPUs)
on the cluster RAY_ADDRESS names, else a local Ray. Speed only (tests/test_ray.py): no dep of the features
stage. Ray retries a dead task or actor; the stage keeps each video's first result."""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator

import numpy as np
import torch

from actionrec.extract import ClipDataset, embed_stream

VIDEOS_PER_BLOCK = 4  # a decode task's share: small, so that results stream and a retry redoes little


def start() -> dict:
    """Join the cluster RAY_ADDRESS names, else start a local Ray; its resources."""
    import ray

    if not ray.is_initialized():
        local = {} if os.environ.get("RAY_ADDRESS") else {"_temp_dir": os.path.join(tempfile.gettempdir(), "ray")}
        ray.init(include_dashboard=False, logging_level="WARNING", configure_logging=False, **local)
        context = ray.data.DataContext.get_current()  # the stage's own bar moves, Ray Data says nothing
        context.enable_progress_bars = context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray.cluster_resources()


def _decode(batch: dict, num_frames: int, prep: dict, decoder: str) -> dict:
    """A CPU task: each path's uint8 [T, 3, crop, crop] frames (zeros when it fails), error, rotation, warning."""
    empty = np.zeros((num_frames, 3, prep["crop"], prep["crop"]), np.uint8)
    clips = [ClipDataset([str(path)], num_frames, prep, decoder)[0] for path in batch["path"]]
    return {"index": batch["index"], "frames": np.stack([empty if f is None else f.numpy() for _, f, _, _ in clips]),
            "error": np.array([e for _, _, e, _ in clips], dtype=object),
            "rotation": np.array([i["rotation"] for *_, i in clips]),
            "warning": np.array([i["warning"] for *_, i in clips], dtype=object)}


class _Embed:
    """An actor: the backbone, built once; float32 features of a batch of decoded videos (the stage checks and stores them)."""

    def __init__(self, cfg: dict, threads: int):
        from actionrec.backbone import inference_backbone

        if threads:
            torch.set_num_threads(threads)
        self.cfg = cfg
        self.model = inference_backbone(cfg, torch.device(cfg["device"]), cfg["batch_frames"])

    def __call__(self, batch: dict) -> dict:
        clips = [(i, None if error else torch.from_numpy(np.array(frames)), error, {})
                 for i, (frames, error) in enumerate(zip(batch["frames"], batch["error"]))]
        feats = np.zeros((len(clips), self.cfg["num_frames"], self.model.feature_dim), np.float32)
        for i, out, _, _ in embed_stream(self.model, clips, self.cfg["batch_frames"], self.cfg["precision"]):
            if out is not None:
                feats[i] = out
        return {**{k: v for k, v in batch.items() if k != "frames"}, "feats": feats}


def iter_features_ray(paths: list[str], cfg: dict) -> Iterator[tuple[int, np.ndarray | None, str, dict]]:
    """As actionrec.extract.iter_features, on Ray; cfg: the resolved params (its device type for the actors)."""
    import ray

    from actionrec.backbone import preprocessing

    resources = start()
    gpus = int(resources.get("GPU", 0)) if cfg["device"].startswith("cuda") else 0
    cpus = int(resources.get("CPU", 1))
    prep = preprocessing(cfg)
    data = ray.data.from_items([{"index": i, "path": p} for i, p in enumerate(paths)],
                               override_num_blocks=max(1, -(-len(paths) // VIDEOS_PER_BLOCK)))
    # tasks (retried when their worker dies); the memory asked for also keeps Ray from fusing them into the actors
    data = data.map_batches(_decode, batch_size=None, num_cpus=1, memory=2**30,
                            fn_kwargs={"num_frames": cfg["num_frames"], "prep": prep, "decoder": cfg["decoder"]})
    # on the CPU, an actor per 8 cores, each with their threads, the decode tasks beside it
    actors = gpus or max(1, cpus // 8)
    data = data.map_batches(_Embed, batch_size=max(1, cfg["batch_frames"] // cfg["num_frames"]),
                            compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=1 if gpus else 0,
                            num_cpus=1, fn_constructor_args=(dict(cfg, device="cuda" if gpus else "cpu"),
                                                             0 if gpus else max(1, min(8, cpus // actors))))
    for row in data.iter_rows():
        info = {"rotation": int(row["rotation"]), "warning": str(row["warning"]), "decoder": ""}
        yield int(row["index"]), (None if row["error"] else row["feats"]), str(row["error"]), info
