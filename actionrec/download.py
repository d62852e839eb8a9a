"""Get UCF-101: download (resumable, size- and hash-checked), extract, ready for `dvc add`.

UCF101.rar (6.5 GB) extracts with `unar` (`make ucf101` installs it). An interrupted download resumes
from its .part file. The archive's SHA-256 is printed and saved beside it, to check a colleague's copy."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from actionrec.errors import UserError, run_stage
from actionrec.pipeline import sha256_of

BASE_URL = "https://www.crcv.ucf.edu/data/UCF101"
ARCHIVE = "UCF101.rar"


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60) -> Path:
    """url -> dest (kept if there), resuming dest.part; checks the declared size and any given SHA-256."""
    if dest.exists():
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416:  # 416: the .part is already whole
            raise UserError(f"download of {url} failed: HTTP {error.code}") from None
        total = have
    except (urllib.error.URLError, TimeoutError) as error:
        raise UserError(f"cannot reach {url} ({error}): check the network, then run again "
                        "(the download resumes)") from None
    else:
        with response:
            if response.status == 206:  # resumed: Content-Range "bytes start-end/total"
                total = int(response.headers["Content-Range"].rsplit("/", 1)[1])
            else:
                have, total = 0, int(response.headers.get("Content-Length", 0)) or None
            with open(part, "ab" if have else "wb") as out, tqdm.wrapattr(
                    out, "write", total=total, initial=have, bytes=False, unit="B", unit_scale=True,
                    desc=dest.name) as counted:
                try:
                    shutil.copyfileobj(response, counted, 1 << 20)
                except (OSError, TimeoutError) as error:
                    raise UserError(f"download of {dest.name} broke off ({error}): run again to "
                                    "resume") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise UserError(f"{dest.name}: got {size} of {total} bytes: run again to resume")
    digest = sha256_of(part)
    if sha256 and digest != sha256.lower():
        part.unlink()
        raise UserError(f"{dest.name}: SHA-256 {digest} is not the expected {sha256}; the "
                        "corrupt file was removed: run again")
    checksum_file(dest).write_text(f"{digest}  {dest.name}\n")  # first: a kill after it loses nothing
    part.replace(dest)
    print(f"{dest.name}: {size} bytes, sha256 {digest}")
    return dest


def checksum_file(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def archive_digest(archive: Path, expected: str | None = None) -> str:
    """The archive's SHA-256 from the .sha256 beside it, else computed and saved there; checked against expected."""
    saved = checksum_file(archive)
    digest = saved.read_text().split()[0] if saved.is_file() else sha256_of(archive)
    if expected and digest != expected.lower():
        raise UserError(f"{archive}: SHA-256 {digest} is not the expected {expected}: get the archive again")
    if not saved.is_file() and os.access(archive.parent, os.W_OK):
        saved.write_text(f"{digest}  {archive.name}\n")
    return digest


def count_files(tree: Path) -> int:
    return sum(1 for path in tree.rglob("*") if path.is_file())


def extract(archive: Path, dest: Path) -> None:
    if shutil.which("unar") is None:
        raise UserError("extracting RAR needs unar: apt-get install unar (or run 'make ucf101')")
    result = subprocess.run(["unar", "-quiet", "-force-overwrite", "-no-directory", "-output-directory",
                             str(dest), str(archive)], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"unar could not extract {archive}: {result.stderr.strip()[:200]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default="data", type=Path)
    parser.add_argument("--base-url", default=BASE_URL, help="a mirror holding the same files")
    parser.add_argument("--sha256", help="expected SHA-256 of UCF101.rar")
    parser.add_argument("--rar", type=Path, help="a UCF101.rar you already have (no download)")
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    if args.rar and not args.rar.is_file():
        raise UserError(f"--rar {args.rar}: no such file")
    rar = args.rar or download(f"{args.base_url}/{ARCHIVE}", args.dest / ARCHIVE, args.sha256)
    digest = archive_digest(rar, args.sha256)
    tree, marker = args.dest / "UCF-101", args.dest / "UCF101.rar.extracted"
    if marker.exists() and marker.read_text().split() == [digest, str(count_files(tree))]:
        print(f"{tree} is already complete (extracted from this UCF101.rar): not extracting again")
    else:
        extract(rar, args.dest)      # -> data/UCF-101/<Class>/v_<Class>_gNN_cMM.avi
        marker.write_text(f"{digest} {count_files(tree)}\n")
    print(f"done: {args.dest / 'UCF-101'}. Next: dvc add {args.dest / 'UCF-101'} and see README, "
          "'Train on real UCF-101'")


if __name__ == "__main__":
    run_stage(main)
