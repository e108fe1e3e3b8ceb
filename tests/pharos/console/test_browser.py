"""The console in a real headless Chromium against a running demo (real Mosquitto,
simulated lamps, ingest, control, rules): a technician commissions a lamp on a phone,
an energy manager edits a program and its lamps get it, an operator works an alert, a
viewer is refused, and the Vietnamese pages carry their diacritics. Screenshots of
every page at phone and desktop size go to ``var/test-artifacts/console/``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By

from pharos.apikeys import Role, create_api_key
from pharos.broker_process import free_port
from pharos.database import upgrade
from pharos.runtime import build_runtime
from pharos.settings import Settings
from rules.models import AlertRow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[3] / "var" / "test-artifacts" / "console"
PHONE, DESKTOP = (360, 740), (1280, 900)
DEADLINE_S = 90.0


@dataclass
class Demo:
    base: str
    admin: str
    keys: dict[str, str]
    settings: Settings


def _wait(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (WebDriverException, httpx.HTTPError, KeyError, IndexError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)  # polling a condition with a deadline


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("console-demo")
    port = free_port()
    database = f"sqlite:///{tmp / 'var' / 'pharos.db'}"
    env = {
        **os.environ,
        "PHAROS_DATA_DIR": str(tmp / "var"),
        "PHAROS_DATABASE__URL": database,
        "PHAROS_API__PORT": str(port),
    }
    command = [
        sys.executable,
        "-c",
        "from pharos.cli import main; main()",
        "demo",
        "--duration",
        "900",
        "--devices",
        "40",
    ]
    process = subprocess.Popen(
        command, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    output: list[str] = []
    try:
        admin = None
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if match := re.search(r"API key\s+(phk_\S+)", line):
                admin = match.group(1)
            if line.startswith("Stop with Ctrl-C"):
                break
        assert admin is not None, "".join(output)
        settings = Settings(data_dir=tmp / "var", database={"url": database})
        runtime = build_runtime(settings)
        upgrade(runtime.engine)
        keys = {}
        with runtime.sessions() as session:
            for role in (Role.TECHNICIAN, Role.ENERGY_MANAGER, Role.OPERATOR, Role.VIEWER):
                keys[role.value] = create_api_key(session, f"test-{role.value}", role)
            session.commit()
        runtime.close()
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: httpx.get(f"{base}/healthz", timeout=5).status_code == 200, 60, "the API")
        yield Demo(base, admin, keys, settings)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("headless Chromium is needed: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--lang=en-US",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def api(demo: Demo, path: str) -> Any:
    response = httpx.get(f"{demo.base}/api/v1{path}", headers={"X-API-Key": demo.admin}, timeout=10)
    response.raise_for_status()
    return response.json()


def sign_in(driver: Any, demo: Demo, role: str, next_url: str = "/") -> None:
    driver.delete_all_cookies()
    driver.get(f"{demo.base}/login?next={next_url}")
    driver.find_element(By.ID, "api-key").send_keys(demo.keys[role])
    driver.find_element(By.ID, "sign-in").click()
    _wait(lambda: "/login" not in driver.current_url, 15, "sign-in")


def shoot(driver: Any, name: str, sizes: tuple[tuple[int, int], ...] = (PHONE, DESKTOP)) -> None:
    """The page at each size (full height), as a PNG test artefact."""
    current = driver.get_window_size()
    for width, height in sizes:
        driver.set_window_size(width, height)
        full = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(max(height, int(full) + 20), 4000))
        label = "phone" if width < 600 else "desktop"
        driver.save_screenshot(str(ARTIFACTS / f"{name}-{label}.png"))
    driver.set_window_size(current["width"], current["height"])


def text(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def simulated_lamp(demo: Demo) -> str:
    """A registered streetlight of the simulated fleet, online and lit after dusk (the
    scenario gives some lamps a ``lamp_failure``: lit, drawing nothing; their self-test
    fails, as it should)."""

    def find() -> str | None:
        lamps = api(demo, "/devices?kind=streetlight&state=registered&limit=200")["items"]
        for lamp in lamps:
            twin = api(demo, f"/devices/{lamp['id']}/twin")
            power = twin["last_values"].get("power_w", {}).get("value", 0)
            if twin["online"] and power > 5:
                return str(lamp["id"])
        return None

    return str(_wait(find, 120, "a lit simulated lamp"))


def test_a_technician_commissions_a_lamp_on_a_phone(browser: Any, demo: Demo) -> None:
    lamp = simulated_lamp(demo)
    browser.set_window_size(*PHONE)
    sign_in(browser, demo, "technician", "/commission")
    shoot(browser, "commission-find")
    if not browser.execute_script("return 'BarcodeDetector' in window"):
        # No camera decoding in this browser: the page says to type the id.
        browser.find_element(By.ID, "scan").click()
        assert "type the id" in _wait(lambda: text(browser, "scan-note"))
    browser.find_element(By.ID, "device-id").send_keys(lamp)
    browser.find_element(By.ID, "find").click()
    _wait(lambda: text(browser, "device-title") == lamp, 15, "the device page")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= PHONE[0] + 1

    browser.find_element(By.ID, "to-installed").click()
    _wait(
        lambda: (
            browser.find_element(By.ID, "lifecycle-state").get_attribute("data-state")
            == "installed"
        )
    )
    # Signing off before the self-test is refused with the checklist's reason.
    browser.find_element(By.ID, "to-commissioned").click()
    refusal = _wait(lambda: browser.find_element(By.CSS_SELECTOR, ".flash.error").text)
    assert "self_test_acknowledged" in refusal
    assert api(demo, f"/devices/{lamp}")["state"] == "installed"

    # The phone's position (the browser's geolocation, overridden like a GPS fix).
    browser.execute_cdp_cmd(
        "Browser.grantPermissions", {"origin": demo.base, "permissions": ["geolocation"]}
    )
    browser.execute_cdp_cmd(
        "Emulation.setGeolocationOverride",
        {"latitude": 10.0341, "longitude": 105.7880, "accuracy": 5},
    )
    browser.find_element(By.ID, "locate").click()
    _wait(lambda: browser.find_element(By.ID, "latitude").get_attribute("value") == "10.034100")
    browser.find_element(By.ID, "save-position").click()
    _wait(lambda: "10,0341" in text(browser, "position") or "10.0341" in text(browser, "position"))
    assert api(demo, f"/devices/{lamp}")["latitude"] == pytest.approx(10.0341)

    # The self-test against the simulated lamp: acknowledged, with the power at each step.
    browser.find_element(By.ID, "run-self-test").click()
    _wait(
        lambda: (
            browser.find_element(By.ID, "self-test-status").get_attribute("data-status") == "ok"
        ),
        45,
        "the self-test acknowledgement",
    )
    assert re.search(r"100%: \d+\.\d W", text(browser, "self-test-detail"))
    _wait(lambda: "ok" in browser.find_element(By.ID, "check-self-test").get_attribute("class"), 15)
    assert "ok" in browser.find_element(By.ID, "check-telemetry").get_attribute("class")
    assert browser.find_element(By.ID, "readings").text
    shoot(browser, "commission-device")

    browser.find_element(By.ID, "to-commissioned").click()
    _wait(
        lambda: (
            browser.find_element(By.ID, "lifecycle-state").get_attribute("data-state")
            == "commissioned"
        )
    )
    device = api(demo, f"/devices/{lamp}")
    assert device["state"] == "commissioned"
    assert device["commissioning"]["signed_off_by"] == "test-technician"


def running_program(demo: Demo) -> str:
    states = _wait(
        lambda: [s for s in api(demo, "/lamp-states") if s.get("desired_program_id")], 60
    )
    programs = [s["desired_program_id"] for s in states]
    return max(set(programs), key=programs.count)


def test_an_energy_manager_sees_the_projection_change_then_the_lamps_get_the_program(
    browser: Any, demo: Demo
) -> None:
    program_id = running_program(demo)
    before = api(demo, f"/programs/{program_id}")
    browser.set_window_size(*DESKTOP)
    sign_in(browser, demo, "energy_manager", "/programs")
    shoot(browser, "programs")
    browser.get(f"{demo.base}/programs/{program_id}")
    kwh = _wait(lambda: browser.find_element(By.CSS_SELECTOR, "#projection-edited .kwh").text)
    levels = browser.find_elements(By.NAME, "step_level")
    index = next(i for i, step in enumerate(before["steps"]) if step["level"] >= 50)
    levels[index].clear()
    levels[index].send_keys("20")
    changed = _wait(
        lambda: (
            (v := browser.find_element(By.CSS_SELECTOR, "#projection-edited .kwh").text) != kwh
            and v
        ),
        20,
        "the projection to follow the edit",
    )
    assert changed != kwh
    assert browser.find_element(By.ID, "projection-change").text
    assert api(demo, f"/programs/{program_id}") == before, "nothing is saved by a preview"
    shoot(browser, "program-edit")

    saved_at = datetime.now(UTC)
    browser.find_element(By.ID, "save-program").click()
    _wait(lambda: browser.find_element(By.CSS_SELECTOR, ".flash.ok"), 15, "the save")
    after = api(demo, f"/programs/{program_id}")
    assert after["steps"][index]["level"] == 20

    def acknowledged() -> bool:
        commands = api(demo, "/commands?limit=200")["items"]
        sent = [
            c
            for c in commands
            if c["action"] == "set_program"
            and c["params"]["program"]["steps"][index]["level"] == 20
        ]
        return bool(sent) and all(
            c["progress"]["acknowledged"] == c["progress"]["total"] > 0 for c in sent
        )

    _wait(acknowledged, 60, "the lamps to acknowledge the new program")
    assert saved_at  # the commands carry the new level, so they came after the save
    browser.refresh()
    shoot(browser, "program-edit-saved", (DESKTOP,))
    browser.get(f"{demo.base}/energy")
    assert browser.find_element(By.ID, "weeks")
    shoot(browser, "energy")
    csv = httpx.get(f"{demo.base}/energy.csv", cookies=_cookies(browser), timeout=30)
    assert csv.status_code == 200 and csv.text.startswith("group,start,end")


def _cookies(driver: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in driver.get_cookies()}


def _raise_alert(demo: Demo) -> int:
    runtime = build_runtime(demo.settings)
    try:
        now = datetime.now(UTC)
        with runtime.sessions() as session:
            row = AlertRow(
                rule_id="lamp_failure",
                rule_name="Lamp failure",
                device_id="test-lamp",
                kind="streetlight",
                district="Ninh Kiều",
                severity="major",
                state="open",
                message="lit but draws 0.4 W",
                value=0.4,
                repeats=0,
                escalations=0,
                raised_at=now,
                last_raised_at=now,
            )
            session.add(row)
            session.commit()
            return row.id
    finally:
        runtime.close()


def test_an_operator_acknowledges_and_closes_an_alert(browser: Any, demo: Demo) -> None:
    alert_id = _raise_alert(demo)
    browser.set_window_size(*DESKTOP)
    sign_in(browser, demo, "operator", "/alerts")
    shoot(browser, "alerts")
    browser.find_element(By.ID, f"alert-{alert_id}").click()
    browser.find_element(By.ID, "acknowledge").click()
    _wait(
        lambda: (
            browser.find_element(By.ID, "alert-state").get_attribute("data-state") == "acknowledged"
        )
    )
    browser.find_element(By.ID, "comment-text").send_keys("crew sent to pole NK-12")
    browser.find_element(By.ID, "add-comment").click()
    _wait(lambda: "crew sent" in text(browser, "history"))
    browser.find_element(By.ID, "close-note").send_keys("driver replaced")
    browser.find_element(By.ID, "close").click()
    _wait(
        lambda: browser.find_element(By.ID, "alert-state").get_attribute("data-state") == "closed"
    )
    events = [
        e.get_attribute("data-event") for e in browser.find_elements(By.CSS_SELECTOR, "#history li")
    ]
    assert events == ["acknowledged", "commented", "closed"]
    shoot(browser, "alert-detail")
    alert = api(demo, f"/alerts/{alert_id}")
    assert alert["state"] == "closed" and alert["closed_by"] == "test-operator"
    # A group override with an expiry, set and cleared through the page.
    browser.get(f"{demo.base}/overrides")
    browser.find_element(By.NAME, "level").clear()
    browser.find_element(By.NAME, "level").send_keys("80")
    browser.find_element(By.NAME, "minutes").send_keys("30")
    browser.find_element(By.NAME, "reason").send_keys("night market")
    browser.find_element(By.ID, "set-override").click()
    row = _wait(lambda: browser.find_element(By.CSS_SELECTOR, "#overrides tbody tr td").text)
    assert row.startswith("group lights-")
    overrides = api(demo, "/overrides")
    assert [(o["level"], o["reason"]) for o in overrides] == [(80.0, "night market")]
    assert overrides[0]["until"] is not None
    shoot(browser, "overrides")
    browser.find_element(By.CSS_SELECTOR, "#overrides button").click()
    _wait(lambda: api(demo, "/overrides") == [], 15, "the override to clear")
    # The operations pages render with the live fleet.
    for path, name in (("/devices", "devices"), ("/", "home")):
        browser.get(demo.base + path)
        shoot(browser, name)
    browser.get(f"{demo.base}/devices?kind=streetlight&online=yes")
    first = browser.find_element(By.CSS_SELECTOR, "#devices tbody a")
    first.click()
    assert browser.find_element(By.ID, "twin")
    shoot(browser, "device")


def test_a_viewer_is_refused_an_edit_by_the_page_and_by_the_server(
    browser: Any, demo: Demo
) -> None:
    program_id = running_program(demo)
    before = api(demo, f"/programs/{program_id}")
    sign_in(browser, demo, "viewer", f"/programs/{program_id}")
    assert not browser.find_elements(By.ID, "save-program")
    assert browser.find_element(By.ID, "read-only")
    csrf = browser.find_element(By.NAME, "csrf_token").get_attribute("value")
    form = {
        "csrf_token": csrf,
        "name": "x",
        "step_kind": "at",
        "step_at": "18:00",
        "step_level": "5",
    }
    cookies = _cookies(browser)
    refused = httpx.post(
        f"{demo.base}/programs/{program_id}", data=form, cookies=cookies, timeout=10
    )
    assert refused.status_code == 403
    assert "energy_manager" in refused.text or "quản lý năng lượng" in refused.text
    no_token = httpx.post(f"{demo.base}/alerts/1/close", data={}, cookies=cookies, timeout=10)
    assert no_token.status_code == 403
    anonymous = httpx.post(f"{demo.base}/programs/{program_id}", data=form, timeout=10)
    assert anonymous.status_code == 303 and "/login" in anonymous.headers["location"]
    assert api(demo, f"/programs/{program_id}") == before


def test_vietnamese_pages_render_the_diacritics(browser: Any, demo: Demo) -> None:
    browser.set_window_size(*PHONE)
    sign_in(browser, demo, "technician")
    browser.get(f"{demo.base}/lang/vi?next=/")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Nghiệm thu" in body and "Chương trình chiếu sáng" in body
    assert re.search(r"Thứ (Hai|Ba|Tư|Năm|Sáu|Bảy)|Chủ Nhật", body)
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "vi"
    shoot(browser, "home-vi")
    browser.get(f"{demo.base}/programs")
    assert "Lịch" in browser.find_element(By.TAG_NAME, "body").text
    shoot(browser, "programs-vi")
    browser.get(f"{demo.base}/lang/en?next=/")
