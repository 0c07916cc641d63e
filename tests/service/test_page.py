"""The web page in a real headless browser: pick an image, see the reconstruction and colorization."""

import shutil

import pytest

from tests.service.conftest import png
from tests.service.test_server import start

pytestmark = pytest.mark.slow
webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_page_shows_original_reconstruction_and_colorization(model_dir, tmp_path):
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = tmp_path / "cat.png"
    image.write_bytes(png(size=(40, 24)))
    proc, port = start(model_dir)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        assert "cae" in driver.title
        file_input = driver.find_element(By.ID, "file")
        driver.execute_script("arguments[0].hidden = false", file_input)
        file_input.send_keys(str(image))
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-done"))
        sizes = {i: driver.execute_script(f"const im = document.getElementById('{i}'); return [im.complete, im.naturalWidth, im.naturalHeight]")
                 for i in ("original", "reconstruction", "colorization")}
        assert sizes["original"] == [True, 40, 24]
        assert sizes["reconstruction"] == [True, 32, 32] and sizes["colorization"] == [True, 32, 32]  # the page asks for size=32
        assert driver.find_element(By.ID, "error").text == ""
        # The family is listed (from /v1/models) with the default chosen; choosing another reconstructs with it.
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-autoencoders"))
        options = driver.execute_script("return [...document.getElementById('autoencoder').options].map(o => [o.value, o.selected])")
        assert options == [["tiny_autoencoder", True], ["tiny_fine", False]]  # smallest latent first (512, 1024 values)
        driver.execute_script("document.body.dataset.done = ''")
        driver.execute_script("const s = document.getElementById('autoencoder'); s.value = 'tiny_fine'; s.dispatchEvent(new Event('change'))")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-done"))
        asked = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('/reconstruct'))")
        assert asked[-1].endswith("/reconstruct?size=32&model=tiny_fine") and driver.find_element(By.ID, "error").text == ""
        # tiny_fine has no gradient graph: refine is offered only for tiny_autoencoder, and asked for when chosen.
        assert driver.execute_script("return document.getElementById('refine').disabled") is True
        driver.execute_script("document.body.dataset.done = ''")
        driver.execute_script("const s = document.getElementById('autoencoder'); s.value = 'tiny_autoencoder'; s.dispatchEvent(new Event('change'))")
        assert driver.execute_script("return document.getElementById('refine').disabled") is False
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-done"))
        driver.execute_script("document.body.dataset.done = ''")
        driver.execute_script("const s = document.getElementById('refine'); s.value = '10'; s.dispatchEvent(new Event('change'))")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-done"))
        asked = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('/reconstruct'))")
        assert asked[-1].endswith("/reconstruct?size=32&model=tiny_autoencoder&refine=10") and driver.find_element(By.ID, "error").text == ""
        # A file that is not an image: the service's message is shown, not a broken page.
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"not an image")
        driver.execute_script("document.body.dataset.done = ''")
        file_input.send_keys(str(bad))
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-done"))
        assert "415" in driver.find_element(By.ID, "error").text
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(30)
