"""The seed notebook's extractor, as a whole process, to compare with the features stage (bench/extract.py).

    python bench/seed_extract.py VIDEO_LIST OUT_DIR   # one video at a time, PIL transforms per frame, fp32"""
import sys
import time
from pathlib import Path

import decord
import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import transforms


def main() -> None:
    videos = Path(sys.argv[1]).read_text().split()
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = torchvision.models.resnet50()
    model.fc = torch.nn.Identity()
    model.eval()
    transform = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    for i, video in enumerate(videos):
        reader = decord.VideoReader(video)
        indices = np.linspace(0, len(reader) - 1, 16).astype(int)
        frames = reader.get_batch(indices).asnumpy()
        batch = torch.stack([transform(Image.fromarray(frame)) for frame in frames])
        with torch.no_grad():
            features = model(batch).numpy()
        np.save(out / f"{i:05d}.npy", features)
    seconds = time.perf_counter() - start
    print(f"seed-style: {len(videos)} videos, {16 * len(videos)} frames in {seconds:.1f} s = "
          f"{16 * len(videos) / seconds:.1f} frames/s")


if __name__ == "__main__":
    main()
