"""runtime.engine: ray. Ray Data decodes in CPU tasks and embeds in actors (a GPU each where there are GPUs)
on the cluster RAY_ADDRESS names, else a local Ray on 127.0.0.1. Speed only (tests/test_ray.py): no dep of
the features stage. A worker that dies ends Ray's run; the videos not yet done run again, RETRIES times at
most (docs/scale.md), and the stage keeps each video's first result."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from actionrec.errors import UserError
from actionrec.extract import ClipDataset, embed_stream
from actionrec.portable import KERNELS

VIDEOS_PER_BLOCK = 4  # a decode task's share: small, so that results stream and a retry redoes little
RETRIES = 3  # runs of the videos not yet done after a worker died (out of memory, a native crash, a lost node)
CONNECT_S = 30  # a cluster at RAY_ADDRESS that has not answered by then does not answer (Ray would retry for minutes)


def _exit(message: str, code: int) -> None:
    """One line and the end of the stage, from any thread: a call into Ray's C++ core can hold the main one."""
    print(f"\n{message}", file=sys.stderr, flush=True)  # below a progress bar's line
    os._exit(code)


def _stop_on_signal() -> None:
    """Ctrl-C and SIGTERM end the stage at once, also while Ray's C++ core holds the main thread (Python runs its
    handlers only between bytecodes: a connect that never answered held them back for minutes). The local Ray's
    processes are the stage's children: they go with it; a cluster drops the work of a driver that is gone."""
    import psutil

    read, write = os.pipe()
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write)  # written by the C signal handler, whatever the main thread is doing
    for number in (signal.SIGINT, signal.SIGTERM):  # the thread below acts: no traceback from the main one
        signal.signal(number, lambda *_: None)

    def watch() -> None:
        while (number := os.read(read, 1)[0]) not in (signal.SIGINT, signal.SIGTERM):
            pass
        for child in psutil.Process().children(recursive=True):
            child.kill()
        _exit(f"features: stopped by {signal.Signals(number).name}; the videos done so far are stored", 128 + number)

    threading.Thread(target=watch, daemon=True).start()


def _reachable(address: str) -> None:
    """A UserError naming the address unless something listens there (Ray itself retries for over 10 minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        return  # not host:port ("auto"): Ray's own lookup, under the CONNECT_S deadline
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as error:
        raise UserError(f"no Ray cluster answers at RAY_ADDRESS={address} ({error.strerror or error}): start it "
                        "(docs/scale.md), or unset RAY_ADDRESS to run a local Ray") from None


def start() -> dict:
    """Join the cluster RAY_ADDRESS names, else start a local Ray on 127.0.0.1 only; its resources."""
    address = os.environ.get("RAY_ADDRESS", "")
    if address:
        _reachable(address)
    else:  # Ray's single-machine mode (its default on macOS): its ports run code on request (CVE-2023-48022)
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    _stop_on_signal()
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    deadline = threading.Timer(CONNECT_S, _exit, (
        f"error: the Ray cluster at RAY_ADDRESS={address} did not answer within {CONNECT_S} s: is it the head's "
        f"port (ray start --head --port), and does it run Ray {ray.__version__}?", 2))
    if address:
        deadline.start()
    try:
        # every worker, a cluster's too, computes with the stage's kernels (fp32: actionrec/portable.py)
        kernels = {"env_vars": {key: os.environ[key] for key in KERNELS if key in os.environ}}
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False,  # the stage says what failed
                 runtime_env=kernels, **({} if address else {"_temp_dir": os.path.join(tempfile.gettempdir(), "ray")}))
    except (ConnectionError, ray.exceptions.AuthenticationError) as error:
        raise UserError(f"cannot join the Ray cluster at RAY_ADDRESS={address} ({str(error).splitlines()[0]}): "
                        "a cluster with token authentication (Ray's default where ~/.ray/auth_token exists) needs "
                        "RAY_AUTH_MODE=token here too, and its token in ~/.ray/auth_token (docs/scale.md)") from None
    finally:
        deadline.cancel()
    signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))  # ray.init set its own
    context = ray.data.DataContext.get_current()  # the stage's own bar moves, Ray Data says nothing
    context.enable_progress_bars = context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # a failure: our own line says it
    return ray.cluster_resources()


class _InFlight:
    """Which videos each decode task or backbone call holds: a call that never ended died with its worker."""

    def __init__(self):
        self.open: dict[str, list[int]] = {}

    def begin(self, key: str, indices: list[int]) -> None:
        self.open[key] = indices

    def end(self, key: str) -> None:
        self.open.pop(key, None)

    def take(self) -> set[int]:
        held, self.open = {i for indices in self.open.values() for i in indices}, {}
        return held


@contextlib.contextmanager
def _holding(tracker, indices) -> Iterator[None]:
    """Tell the tracker (an _InFlight actor) which videos this call holds, until it returns."""
    import ray

    key = uuid.uuid4().hex
    ray.get(tracker.begin.remote(key, [int(i) for i in indices]))  # before the work that may kill the worker
    try:
        yield
    finally:  # also when Ray cancels the call: what stays open is what a dead worker held
        tracker.end.remote(key)


def _decode(batch: dict, num_frames: int, prep: dict, decoder: str, tracker) -> dict:
    """A CPU task: each path's uint8 backbone inputs (zeros when it fails), error, rotation, warning."""
    from actionrec.backbone import item_shape

    with _holding(tracker, batch["index"]):
        empty = np.zeros((num_frames, *item_shape(prep)), np.uint8)
        clips = [ClipDataset([str(path)], num_frames, prep, decoder)[0] for path in batch["path"]]
    return {"index": batch["index"], "frames": np.stack([empty if f is None else f.numpy() for _, f, _, _ in clips]),
            "error": np.array([e for _, _, e, _ in clips], dtype=object),
            "rotation": np.array([i["rotation"] for *_, i in clips]),
            "warning": np.array([i["warning"] for *_, i in clips], dtype=object)}


class _Embed:
    """An actor: the backbone, built once; float32 features of a batch of decoded videos (the stage checks and stores them)."""

    def __init__(self, cfg: dict, threads: int, tracker):
        from actionrec.backbone import inference_backbone

        if threads:
            torch.set_num_threads(threads)
        self.cfg, self.tracker = cfg, tracker
        self.model = inference_backbone(cfg, torch.device(cfg["device"]), cfg["batch_frames"])

    def __call__(self, batch: dict) -> dict:
        clips = [(i, None if error else torch.from_numpy(np.array(frames)), error, {})
                 for i, (frames, error) in enumerate(zip(batch["frames"], batch["error"]))]
        feats = np.zeros((len(clips), self.cfg["num_frames"], self.model.feature_dim), np.float32)
        with _holding(self.tracker, batch["index"]):
            for i, out, _, _ in embed_stream(self.model, clips, self.cfg["batch_frames"], self.cfg["precision"]):
                if out is not None:
                    feats[i] = out
        return {**{k: v for k, v in batch.items() if k != "frames"}, "feats": feats}


def iter_features_ray(paths: list[str], cfg: dict) -> Iterator[tuple[int, np.ndarray | None, str, dict]]:
    """As actionrec.extract.iter_features, on Ray; cfg: the resolved params (its device type for the actors)."""
    from actionrec.backbone import preprocessing, video_frames

    resources = start()  # before Ray is imported: start() sets the environment it reads
    import ray

    gpus = int(resources.get("GPU", 0)) if cfg["device"].startswith("cuda") else 0
    cpus = int(resources.get("CPU", 1))
    actors = gpus or max(1, cpus // 8)  # on the CPU, an actor per 8 cores, each with their threads
    print(f"Ray {ray.__version__} at {os.environ.get('RAY_ADDRESS') or '127.0.0.1 (a local Ray)'}: {cpus} CPU(s), "
          f"{int(resources.get('GPU', 0))} GPU(s), {resources.get('memory', 0) / 2**30:.1f} GiB; decoding in tasks "
          f"of {VIDEOS_PER_BLOCK} videos, the backbone in {actors} actor(s){' with a GPU each' if gpus else ''}")
    prep, tracker = preprocessing(cfg), ray.remote(num_cpus=0)(_InFlight).remote()
    todo, suspects = dict(enumerate(paths)), set()
    for attempt in range(RETRIES + 1):
        data = ray.data.from_items([{"index": i, "path": os.path.abspath(p)} for i, p in todo.items()],  # any cwd
                                   override_num_blocks=max(1, -(-len(todo) // VIDEOS_PER_BLOCK)))
        # A worker's death ends the run (max_retries, max_restarts 0: restarts would also log an error-level line
        # each run, Ray issue 53727), and this loop runs what is left. Ray 2.64 drops these arguments (a warning
        # in 2.60). The memory asked for also keeps Ray from fusing the decode tasks into the actors.
        with warnings.catch_warnings(category=DeprecationWarning, action="ignore"):
            data = data.map_batches(_decode, batch_size=None, num_cpus=1, memory=2**30, max_retries=0,
                                    fn_kwargs={"num_frames": cfg["num_frames"], "prep": prep,
                                               "decoder": cfg["decoder"], "tracker": tracker})
            videos = max(1, cfg["batch_frames"] // video_frames(cfg["num_frames"], prep))
            data = data.map_batches(_Embed, batch_size=videos,
                                    compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=1 if gpus else 0,
                                    num_cpus=1, max_restarts=0,
                                    fn_constructor_args=(dict(cfg, device="cuda" if gpus else "cpu"),
                                                         0 if gpus else max(1, min(8, cpus // actors)), tracker))
        try:
            for row in data.iter_rows():
                index = int(row["index"])
                del todo[index]
                error = str(row["error"]).replace(os.path.abspath(paths[index]), paths[index])  # as the stage gave it
                info = {"rotation": int(row["rotation"]), "warning": str(row["warning"]), "decoder": ""}
                yield index, (None if error else row["feats"]), error, info
            return
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError, ray.exceptions.OutOfMemoryError) as error:
            try:
                held = ray.get(tracker.take.remote(), timeout=30) & set(todo)
            except ray.exceptions.RayError:  # the tracker went down with the others
                held = set()
            if held:  # those held at every death that found any held
                suspects = suspects & held or held if suspects else held
            reason = f"{type(error).__name__}: out of memory, a native crash or a lost node"
            if attempt < RETRIES:
                print(f"warning: a Ray worker died ({reason}); running the {len(todo)} videos not done yet again "
                      f"(retry {attempt + 1} of {RETRIES})", file=sys.stderr)
    held = (f"each time holding the batch of {', '.join(paths[i] for i in sorted(suspects)[:8])}"
            f"{' ...' if len(suspects) > 8 else ''}: try them with runtime.engine: local, which shows the error"
            if suspects else "before holding any video (the backbone's actors did not start)")
    raise UserError(f"Ray's workers died {RETRIES + 1} times ({reason}), {held}; or give them more memory")
