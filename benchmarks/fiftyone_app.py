"""Screenshots of the FiftyOne App on the shapes dataset, taken with a headless Chromium.

    pip install -r requirements-fiftyone.txt playwright   # playwright drives a Chromium already installed
    python -m benchmarks.fiftyone_app                      # -> benchmarks/results/fiftyone_app_{grid,group}.png

`grid`: the App's grid of the `rgb` slice with its labels and the filters (tags, split, subset);
`group`: one group opened, its RGB image beside its LiDAR scan as a point cloud in the 3D viewer.
FiftyOne runs here on its own database in SCRATCH/db (FIFTYONE_DATABASE_DIR; default
runs/fiftyone_app/, kept: its server may outlive this process by a moment), so nothing of the
user's FiftyOne is touched. No browser is downloaded: pass --chromium, or have one on the PATH
(`apt-get install chromium` on Debian).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import fire
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo is the package root
from benchmarks.curves import RESULTS  # noqa: E402
from homework.cli_checks import check_int, fail  # noqa: E402
from worlds import shapes  # noqa: E402
from worlds import shapes_fiftyone as fo_folder  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VIEWPORT = {"width": 1400, "height": 860}


def find_chromium(chromium: str) -> str:
    """The Chromium to drive: --chromium, else the first of BROWSERS on the PATH; one line if none."""
    found = shutil.which(chromium) if chromium else next(filter(None, map(shutil.which, BROWSERS)), None)
    if not found:
        fail(f"no Chromium found ({chromium or ', '.join(BROWSERS)}); install one (`apt-get install chromium`) "
             "or pass --chromium PATH")
    return found


def dismiss_popups(page) -> None:
    """Close the App's tips and advertisements, wherever one shows."""
    for button in page.get_by_text("Dismiss", exact=True).all():
        try:
            button.click(timeout=2000)
        except Exception:  # one that is gone or hidden by another: nothing to close
            pass


def main(data_dir: str = shapes.DEFAULT_DIR, output_dir: str = str(RESULTS), name: str = "fiftyone_app",
         chromium: str = "", port: int = 5151, wait: int = 12, scratch: str = "runs/fiftyone_app",
         overwrite: bool = False) -> None:
    """Open the App on the shapes dataset and write OUTPUT_DIR/NAME_grid.png and NAME_group.png.

    Args:
        data_dir: a dataset made by `python -m worlds shapes` (the default one is generated if missing).
        output_dir: where the screenshots go; default benchmarks/results.
        name: the screenshots' name, without _grid.png / _group.png.
        chromium: the Chromium executable; default the first of chromium, chromium-browser, google-chrome on the PATH.
        port: the App's port.
        wait: seconds to let the App draw before each screenshot.
        scratch: the folder for FiftyOne's database (db/) and the dataset folder it loads (folder/).
        overwrite: replace screenshots that exist.
    """
    check_int("port", port, 1, 65535)
    check_int("wait", wait, 1)
    paths = {view: Path(output_dir) / f"{name}_{view}.png" for view in ("grid", "group")}
    if any(p.exists() for p in paths.values()) and not overwrite:
        fail(f"{paths['grid']} or {paths['group']} exists; pass --overwrite or another --output_dir or --name")
    browser_path = find_chromium(chromium)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        fail("this needs playwright (`pip install playwright`; it drives the Chromium you have, nothing is downloaded)")
    if Path(data_dir) == Path(shapes.DEFAULT_DIR):
        shapes.ensure(data_dir)
    scratch_dir = Path(scratch)
    # FiftyOne reads its configuration when imported: its own database and config, before the import
    os.environ.update(FIFTYONE_DATABASE_DIR=str(scratch_dir / "db"), FIFTYONE_DO_NOT_TRACK="true",
                      FIFTYONE_CONFIG_PATH=str(scratch_dir / "config.json"))
    os.environ.pop("FIFTYONE_DATABASE_URI", None)
    folder = fo_folder.write_folder(data_dir, scratch_dir / "folder", overwrite=True)  # our own scratch folder
    fo = fo_folder.import_fiftyone("this benchmark")
    dataset = fo_folder.load_dataset(folder, "shapes", persistent=False, overwrite=True)  # our own database
    session = fo.launch_app(dataset, port=port, auto=False)
    try:
        with sync_playwright() as play:
            browser = play.chromium.launch(executable_path=browser_path,
                                           args=["--no-sandbox", "--use-gl=swiftshader", "--enable-unsafe-swiftshader"])
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"http://localhost:{port}/", wait_until="load")
            time.sleep(wait)
            dismiss_popups(page)
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(paths["grid"]))
            page.locator("[data-cy=looker]").first.click(timeout=10_000)  # open the first group
            time.sleep(wait)
            dismiss_popups(page)
            time.sleep(2)
            page.screenshot(path=str(paths["group"]))
            browser.close()
    finally:
        session.close()
        dataset.delete()
    for path in paths.values():  # 256 colours are plenty for the App's flat colours: a third of the bytes
        Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
    print(f"wrote {paths['grid']} and {paths['group']}")


if __name__ == "__main__":
    fire.Fire(main)
