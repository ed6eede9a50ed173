"""Regenerate the README's two pictures: a screenshot of the demo and the paper's Figure 9 from a run.

    python benchmarks/readme_images.py --weights weights --run runs/<run-id> --out docs

The screenshot is the demo (``app.py``) serving ``--weights``, driven by headless Chromium (Debian's chromium +
chromium-driver, the same as the browser test) on the shipped implant example; the figure is the run report's
static PNG of Figure 9 (``spinebench figures``). Both are downscaled and palette-quantised so each stays under
300 kB in git.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_BYTES = 300_000


def _small_png(src: Path, dst: Path, width: int) -> Path:
    """``src`` resized to ``width`` px and quantised to 128 colours; smaller widths until it fits MAX_BYTES."""
    from PIL import Image

    img = Image.open(src).convert("RGB")
    while True:
        h = round(img.height * width / img.width)
        small = img.resize((width, h), Image.LANCZOS).quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        small.save(dst, optimize=True)
        if dst.stat().st_size <= MAX_BYTES or width < 400:
            return dst
        width = int(width * 0.85)


def screenshot(weights: Path, out: Path, example: str = "03_implant.jpg") -> Path:
    """The demo's Analyze tab after the example's analysis, as a PNG."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    sys.path.insert(0, str(ROOT))
    import app

    app.WEIGHTS_DIR = weights
    app.sp.get_predictor(str(weights))
    _, url, _ = app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1600,1500", "--hide-scrollbars"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)
    try:
        drv.get(url)
        end = time.monotonic() + 60
        while not drv.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"):
            if time.monotonic() > end:
                raise SystemExit("the demo did not show its upload field within 60 s")
            time.sleep(0.5)
        drv.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(
            str(ROOT / "spinebench" / "assets" / "examples" / example))
        end = time.monotonic() + 240
        while len(drv.find_elements(By.CSS_SELECTOR, "#summary [role=row]")) < 7:  # header + six models
            if time.monotonic() > end:
                raise SystemExit("the demo showed no results within 240 s")
            time.sleep(0.5)
        time.sleep(3)  # the panels' images load after the table
        raw = out.with_suffix(".raw.png")
        drv.save_screenshot(str(raw))
    finally:
        drv.quit()
        app.demo.close()
    _small_png(raw, out, 1200)
    raw.unlink()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=ROOT / "weights", help="trained weights the demo serves")
    p.add_argument("--run", type=Path, required=True, help="run folder whose report has the Figure 9 PNG")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    fig = next(iter(sorted((args.run / "report").rglob("fig9*.png"))), None)
    if fig is None:
        raise SystemExit(f"no fig9*.png under {args.run / 'report'}: run `python -m spinebench figures --run "
                         f"{args.run}` first")
    for path in (_small_png(fig, args.out / "fig9.png", 1100), screenshot(args.weights, args.out / "demo.png")):
        print(f"{path}: {path.stat().st_size / 1000:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
