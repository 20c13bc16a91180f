"""The HTML leaderboard in headless Chromium: clicking a column header reorders the rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from robustlearn.leaderboard import leaderboard_main
from robustlearn.tracking.store import ResultsStore

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)  # fmt: skip
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)",
)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900")  # fmt: skip


def make_page(tmp_path: Path) -> Path:
    store = ResultsStore(tmp_path / "results.sqlite")
    for i, (method, acc) in enumerate([("ce", 0.70), ("elr", 0.90), ("gce", 0.80), ("ce", 0.72)]):
        store.record({
            "run_id": f"r{i}", "config_hash": f"h{i}", "status": "completed", "method": method, "seed": i,
            "dataset": "synthetic", "noise_kind": "symmetric", "noise_rate": 0.4, "test_acc_at_best_val": acc,
            "test_acc_last": acc - 0.05, "train_time_s": 10.0, "epochs_done": 5,
        })  # fmt: skip
    page = tmp_path / "leaderboard.html"
    leaderboard_main(tmp_path / "results.sqlite", "html", out=page)
    return page


def test_clicking_a_header_sorts_the_table(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    page = make_page(tmp_path)
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(page.as_uri())

        def order() -> list[str]:
            return [r.find_elements(By.TAG_NAME, "td")[1].text
                    for r in driver.find_elements(By.CSS_SELECTOR, "#cell-0 tbody tr")]  # fmt: skip

        def header(text: str):
            return next(h for h in driver.find_elements(By.CSS_SELECTOR, "#cell-0 th") if h.text.startswith(text))

        assert order() == ["elr", "gce", "ce"]  # by rank
        header("Method").click()
        assert order() == ["ce", "elr", "gce"]
        assert header("Method").get_attribute("aria-sort") == "ascending"
        header("Method").click()
        assert order() == ["gce", "elr", "ce"]
        header("Test acc @ best val").click()  # numbers by value, lowest first
        assert order() == ["ce", "gce", "elr"]
        shot = tmp_path / "leaderboard.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 1000
    finally:
        driver.quit()
