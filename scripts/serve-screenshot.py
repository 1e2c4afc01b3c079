"""The picture of docs/serve.md: ``xaikit serve`` on EfficientNet-Lite0 and four scikit-image photos, the explain
view after LRP, gradient and integrated gradients, taken with Playwright in the system Chromium.

    PYTHONPATH=src python scripts/serve-screenshot.py docs/serve.png
"""
import sys
import tempfile
from pathlib import Path

from skimage import data, io

from xaikit.cli.models import load_model
from xaikit.serve import ServeConfig, start

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def main(out: str) -> None:
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="xaikit-serve-photos-"))
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        io.imsave(folder / f"{name}.png", getattr(data, name)(), check_contrast=False)
    running = start(ServeConfig(model=load_model("efficientnet-lite0"), data=folder, port=0))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(f"{running.url}/explain")
            page.locator('#inputs img[title="chelsea.png"]').click()
            page.wait_for_selector("#prediction[data-top]")
            page.fill("#steps", "8")
            page.select_option("#composite", "epsilon_gamma_box")
            page.click("#explain")
            page.wait_for_function("[...document.querySelectorAll('#cards .card')].length === 3 && "
                                   "[...document.querySelectorAll('#cards .card')].every(c => c.dataset.status === "
                                   "'done')", timeout=300_000)
            card = page.locator('#cards .card[data-method="lrp"]')
            card.locator("button.metrics").click()
            page.wait_for_selector('#cards .card[data-method="lrp"][data-metrics]', timeout=300_000)
            box = card.locator("canvas").bounding_box()
            card.locator("canvas").hover(position={"x": box["width"] * 0.4, "y": box["height"] * 0.45})
            page.screenshot(path=out, full_page=True)
            browser.close()
    finally:
        running.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/serve.png")
