"""The console in a real browser: headless Debian chromium driven by Playwright. Log in with a
token, explain a call, edit a dialplan (a validation error first, then a good change applied),
set an account state, ban and lift an address, and read the dashboard and live calls while SIPp places calls.
Screenshots go to test-artifacts/console/ (gitignored)."""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.publish as paho_publish
import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from gateway.mgmt.openapi import document
from tests.call.harness import run_caller, screen, sipp_server, wait_idle
from tests.edge_agent.conftest import mqtt_section
from tests.mgmt.support import ADMIN, READER, Api, api_gateway, wait_api
from tests.mgmt.test_openapi import validate
from tests.support.gateway import PROJECT_ROOT, GatewayProcess, options_request
from tests.support.servers import (
    MosquittoServer,
    RedisServer,
    free_udp_tcp_port,
    stop_process,
)

ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CARRIER = free_udp_tcp_port()
PBX = free_udp_tcp_port()
OLD_MOBILE, NEW_MOBILE = "13800138001", "13900139001"


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory, redis_srv: RedisServer, mosquitto_srv: MosquittoServer
) -> Iterator[tuple[GatewayProcess, Api]]:
    if redis_srv.proc is None:
        redis_srv.start()
    if mosquitto_srv.proc is None:
        mosquitto_srv.start()
    redis_srv.flush()
    gw, api = api_gateway(
        tmp_path_factory.mktemp("console"),
        redis_url=redis_srv.url,
        carrier_port=CARRIER,
        pbx_port=PBX,
        sip_overrides={"timers": {"t1": 0.1, "t2": 0.4, "t4": 0.5, "timer_d": 0.5}},
        extra={"edge": {"mqtt": mqtt_section(mosquitto_srv.port)}},
    )
    gw.start()
    try:
        wait_api(api)
        yield gw, api
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is not installed (make test installs it)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def login(page: Page, api: Api, token: str) -> None:
    page.goto(api.base + "/")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#tabs")).to_be_visible()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    pg = context.new_page()
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.set_default_timeout(15_000)
    try:
        yield pg
    finally:
        context.close()
    assert errors == [], errors  # no JavaScript error on any page


def test_login_is_refused_with_a_bad_token_and_accepted_with_a_good_one(
    console: tuple[GatewayProcess, Api], page: Page
) -> None:
    _, api = console
    page.goto(api.base + "/")
    page.fill("#token", "wrong-token-wrong-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("not valid")
    shot(page, "01-login-refused")
    page.fill("#token", ADMIN)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#who")).to_have_text("ops-admin (admin)")
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#trunks tbody tr")).to_have_count(3)
    shot(page, "02-dashboard")


def test_explain_and_edit_the_dialplan(console: tuple[GatewayProcess, Api], page: Page) -> None:
    _, api = console
    login(page, api, ADMIN)
    page.click("#tabs button[data-tab=dialplan]")
    expect(page.locator("#dp-text")).to_have_value(api.get("/api/dialplans/acme").body["text"])
    # Explain a short-number call from an IAD line.
    page.fill("#ex-from", "62880001")
    page.fill("#ex-to", "60002")
    page.fill("#ex-group", "acme")
    page.fill("#ex-at", "2026-11-23T10:00:00")
    page.click("#explain-form button[type=submit]")
    expect(page.locator("#ex-decision")).to_contain_text("ROUTE as intra_group_short")
    expect(page.locator("#ex-trace li").first).to_contain_text("caller: line 62880001")
    shot(page, "03-explain")

    # An edit with an error: validated as you type, refused, nothing applied.
    text = page.input_value("#dp-text")
    page.fill("#dp-text", text.replace('short_first: "60001"', 'short_first: "70001"'))
    expect(page.locator("#dp-status")).to_have_attribute("data-state", "bad")
    expect(page.locator("#dp-errors li").first).to_contain_text("acme.yaml:")
    expect(page.locator("#dp-errors li").first).to_contain_text("lines[0]")
    expect(page.locator("#dp-apply")).to_be_disabled()
    shot(page, "04-dialplan-validation-error")

    # A good edit: short number 66001 now reaches another mobile; explain against the draft first.
    page.fill("#dp-text", text.replace(OLD_MOBILE, NEW_MOBILE))
    expect(page.locator("#dp-status")).to_have_attribute("data-state", "ok")
    page.fill("#ex-from", "1001")
    page.fill("#ex-to", "66001")
    page.fill("#ex-trunk", "acme-pbx")
    page.check("#ex-draft")
    page.click("#explain-form button[type=submit]")
    expect(page.locator("#ex-decision")).to_contain_text(f"+86{NEW_MOBILE}")
    expect(page.locator("#ex-decision")).to_contain_text("[draft plan")
    page.fill("#dp-comment", "66001 moves to the new mobile")
    page.click("#dp-apply")
    expect(page.locator("#dp-result")).to_contain_text("Applied as version")
    expect(page.locator("#dp-versions tbody tr")).to_have_count(2)
    page.uncheck("#ex-draft")
    page.click("#explain-form button[type=submit]")
    expect(page.locator("#ex-decision")).to_contain_text("[live plan")
    expect(page.locator("#ex-decision")).to_contain_text(f"+86{NEW_MOBILE}")
    shot(page, "05-dialplan-applied")
    assert api.get("/api/dialplans").body["version"] is not None


def test_account_states(console: tuple[GatewayProcess, Api], page: Page) -> None:
    _, api = console
    login(page, api, ADMIN)
    page.click("#tabs button[data-tab=accounts]")
    page.select_option("#acct-scope", "number")
    page.fill("#acct-key", "62880007")
    page.select_option("#acct-state", "arrears")
    page.click("#acct-form button[type=submit]")
    expect(page.locator("#acct-result")).to_contain_text("normal → arrears")
    expect(page.locator("#acct-list tbody tr")).to_contain_text(["62880007"])
    shot(page, "06-accounts")
    assert api.get("/api/accounts/number/62880007").body["state"] == "arrears"
    api.call("PUT", "/api/accounts/number/62880007", {"state": "normal"})


def test_bans_view(console: tuple[GatewayProcess, Api], page: Page) -> None:
    """A flooding address shows up banned; an operator bans another and lifts it from the page."""
    gw, api = console
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.31", 0))
        datagram = options_request("127.0.0.1", gw.port, sock.getsockname()[:2])
        for _ in range(40):  # over the default budget of 16 in 2 s
            sock.sendto(datagram, ("127.0.0.1", gw.port))
    login(page, api, ADMIN)
    page.click("#tabs button[data-tab=bans]")
    expect(page.locator("#ban-list tbody tr").filter(has_text="127.0.0.31")).to_contain_text("flood")
    page.fill("#ban-host", "192.0.2.77")
    page.fill("#ban-seconds", "900")
    page.click("#ban-form button[type=submit]")
    expect(page.locator("#ban-result")).to_contain_text("192.0.2.77 banned for")
    banned = page.locator("#ban-list tbody tr").filter(has_text="192.0.2.77")
    expect(banned).to_contain_text("operator")
    shot(page, "13-bans")
    banned.locator("button").click()
    expect(page.locator("#ban-list tbody tr").filter(has_text="192.0.2.77")).to_have_count(0)
    assert all(b["host"] != "192.0.2.77" for b in api.get("/api/bans").body["bans"])
    assert api.call("DELETE", "/api/bans/127.0.0.31").status == 200


def test_read_only_operator_sees_no_change_buttons(console: tuple[GatewayProcess, Api], page: Page) -> None:
    _, api = console
    login(page, api, READER)
    expect(page.locator("#who")).to_have_text("ops-read (read)")
    expect(page.locator("#trunks tbody tr")).to_have_count(3)
    expect(page.locator("#trunks button").first).to_be_hidden()
    page.click("#tabs button[data-tab=dialplan]")
    expect(page.locator("#dp-apply")).to_be_hidden()


def test_dashboard_and_live_calls_while_sipp_places_calls(
    console: tuple[GatewayProcess, Api], page: Page, tmp_path: Path
) -> None:
    gw, api = console
    login(page, api, ADMIN)
    calls = 24
    outcome: dict[str, subprocess.CompletedProcess[str]] = {}
    with sipp_server(tmp_path / "uas", "call_uas.xml", CARRIER, calls=calls):
        caller = threading.Thread(
            target=lambda: outcome.setdefault(
                "uac",
                run_caller(
                    tmp_path / "uac",
                    "call_uac.xml",
                    PBX,
                    gw,
                    service="66001",
                    calls=calls,
                    rate=4,
                    extra=["-d", "3000", "-l", "20"],
                ),
            )
        )
        caller.start()
        try:
            # The dashboard refreshes every 2 s: active calls show up while SIPp runs.
            # Locators, not page scripts: the console's CSP forbids evaluating strings.
            expect(page.locator("#stat-calls")).to_have_text(re.compile(r"^[1-9][0-9]*$"))
            expect(page.locator("#stat-cps")).to_have_text(re.compile(r"^(?!0\.0$)[0-9]+\.[0-9]$"))
            shot(page, "07-dashboard-under-load")
            page.click("#tabs button[data-tab=calls]")
            expect(page.locator("#call-list tbody tr").first).to_be_visible()
            expect(page.locator("#calls-summary")).to_contain_text("active")
            shot(page, "08-live-calls")
        finally:
            caller.join(timeout=120)
    assert outcome["uac"].returncode == 0, screen(tmp_path / "uac") + gw.log()[-3000:]
    wait_idle(gw)
    page.click("#tabs button[data-tab=dashboard]")
    expect(page.locator("#stat-calls")).to_have_text("0")
    shot(page, "09-dashboard-after-load")


def test_edge_sites_listed_with_their_state(
    console: tuple[GatewayProcess, Api], page: Page, tmp_path: Path, mosquitto_srv: MosquittoServer
) -> None:
    """A real edge agent process reports over the broker; the console lists it online, then
    offline by its last will once it is killed."""
    _, api = console
    site = f"console-{secrets.token_hex(3)}"
    config = tmp_path / "agent.yaml"
    doc = {"site": site, "state_dir": str(tmp_path / "state"), "mqtt": mqtt_section(mosquitto_srv.port)}
    config.write_text(yaml.safe_dump(doc))
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        login(page, api, READER)
        page.click("#tabs button[data-tab=sites]")
        expect(page.locator("#sites-summary")).to_contain_text("broker connected")
        line = page.locator("#site-list tbody tr", has_text=site)
        expect(line).to_contain_text("online")
        shot(page, "10-sites")
        body = api.get("/api/sites").body
        validate(document(), "Sites", body)
        mine = next(s for s in body["sites"] if s["site"] == site)
        assert mine["reachability"] == "online" and mine["last_seen"] is not None
        agent.kill()  # no DISCONNECT: the broker publishes the agent's last will
        agent.wait()
        expect(line).to_contain_text("offline")
        shot(page, "11-site-offline")
    finally:
        stop_process(agent)
        # Retire the site: clear its retained state (paho: Playwright's loop runs in this thread).
        paho_publish.single(f"edge/{site}/state", b"", qos=1, retain=True, port=mosquitto_srv.port)


def test_directory_search_by_name_and_number(console: tuple[GatewayProcess, Api], page: Page) -> None:
    """企业通信录: the operator looks a person up by name, then by part of a number."""
    _, api = console
    login(page, api, READER)
    page.click("#tabs button[data-tab=directory]")
    expect(page.locator("#dir-list tbody tr")).to_have_count(7)  # everyone, the switchboard first
    page.fill("#dir-q", "zhang")
    page.click("#dir-form button[type=submit]")
    expect(page.locator("#dir-list tbody tr")).to_have_count(1)
    expect(page.locator("#dir-list tbody tr").first).to_contain_text("张伟 Zhang Wei")
    expect(page.locator("#dir-list tbody tr").first).to_contain_text("61002")
    page.fill("#dir-q", "销售部")
    page.press("#dir-q", "Enter")
    expect(page.locator("#dir-list tbody tr")).to_have_count(3)
    page.fill("#dir-q", "62880008")
    page.press("#dir-q", "Enter")
    expect(page.locator("#dir-list tbody tr")).to_have_count(1)
    expect(page.locator("#dir-list tbody tr").first).to_contain_text("刘洋 Liu Yang")
    expect(page.locator("#dir-summary")).to_have_text("1 found")
    shot(page, "12-directory")


def test_billing_statement_view(console: tuple[GatewayProcess, Api], page: Page) -> None:
    """The demo tenant's December draft: rent of 1,009 numbers and the products, the package fee,
    no calls billed yet (config/tariffs.yaml)."""
    _, api = console
    login(page, api, ADMIN)
    page.click("#tabs button[data-tab=billing]")
    page.fill("#bill-group", "acme")
    page.fill("#bill-month", "2026-12")
    page.click("#bill-form button[type=submit]")
    fees = 1009 * 2000 + 10000 + 5000 + 8 * 500
    expect(page.locator("#bill-summary")).to_contain_text("draft, not issued")
    expect(page.locator("#bill-summary")).to_contain_text(f"total {(fees + 3000) / 100:.2f} yuan")
    expect(page.locator("#bill-fees tbody tr")).to_have_count(5)
    expect(page.locator("#bill-package tbody tr")).to_have_count(2)
    shot(page, "14-billing-statement")
    statement = api.get("/api/billing/statement?group=acme&month=2026-12").body
    assert statement["totals"]["total_fen"] == fees + 3000 and statement["version"] is None
