"""/admin in headless Chromium: both languages, disagreements with their reasons (as text), adding and revoking
annotators, and an export downloaded with the admin token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from labelling import ADMIN
from test_browser import chrome, console_errors, needs_browser, screenshot, site, until

from collect.candidates import Candidates

pytestmark = needs_browser
HOSTILE_REASON = '<img src=x onerror="window.__xss = 3">因为更准确'


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chrome(tmp_path_factory.mktemp("admin-profile")) as driver:
        yield driver


def vote(url: str, token: str, winner_first: bool, reason: str) -> None:
    head = {"Authorization": f"Bearer {token}"}
    pair = httpx.get(url + "/api/next", headers=head).json()["pair"]
    first_is_a = pair["a"] == "first answer"
    choice = "A" if first_is_a == winner_first else "B"
    body = {"assignment_id": pair["assignment_id"], "choice": choice, "reason": reason}
    httpx.post(url + "/api/answer", json=body, headers=head).raise_for_status()


def test_admin_in_both_languages_with_reasons_team_and_exports(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    found = Candidates()
    found.add("Which is right?", ["first answer", "second answer"])
    with site(tmp_path, found, ["ann", "bob"], 2) as s:
        vote(s.url, s.tokens["ann"], True, HOSTILE_REASON)
        vote(s.url, s.tokens["bob"], False, "second is shorter")
        browser.get(s.url + "/healthz")
        browser.execute_script("localStorage.clear(); sessionStorage.clear()")
        browser.get(s.url + "/admin")
        browser.find_element(By.ID, "token").send_keys(ADMIN + "\n")
        until(browser, lambda d: d.execute_script("return !!document.querySelector('.disagreement li')"))
        votes = [li.text for li in browser.find_elements(By.CSS_SELECTOR, ".disagreement li")]
        assert votes[0].startswith("ann: first is better") and HOSTILE_REASON in votes[0]  # shown as text
        assert "bob: second is better" in votes[1] and "second is shorter" in votes[1]
        assert browser.execute_script("return window.__xss") is None
        assert not browser.find_elements(By.CSS_SELECTOR, ".disagreement img")
        disputes = browser.find_element(By.ID, "disputes").text
        assert "Split after 2 votes: 1" in disputes and "waiting for votes: 1" in disputes
        # The split pair wants a third vote: not complete while it waits.
        assert browser.find_element(By.ID, "progress-text").text.startswith("2 of 3 answers (66.7%); 0 of 1 pairs")
        screenshot(browser, "admin-1280.png")

        browser.find_element(By.ID, "lang").click()  # 中文
        until(browser, lambda d: d.find_element(By.ID, "disputes").text.startswith("2 票后仍有分歧：1"))
        assert browser.find_element(By.CSS_SELECTOR, "h1").text == "偏好数据收集：进度与一致性"
        assert "ann：第一个更好" in browser.find_element(By.CSS_SELECTOR, ".disagreement li").text
        browser.find_element(By.ID, "lang").click()  # back to English

        browser.find_element(By.ID, "new-name").send_keys("carol")
        browser.find_element(By.ID, "add").click()
        until(browser, lambda d: not d.find_element(By.ID, "new-token").get_attribute("hidden"))
        token = browser.find_element(By.ID, "new-token-value").text
        head = {"Authorization": f"Bearer {token}"}
        assert httpx.get(s.url + "/api/next", headers=head).json()["pair"]["prompt"] == "Which is right?"

        until(browser, lambda d: "carol" in d.find_element(By.ID, "rows").text)
        row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#rows tr") if r.text.startswith("carol"))
        browser.execute_script("window.confirm = () => true")  # the page asks before revoking
        row.find_element(By.TAG_NAME, "button").click()
        until(browser, lambda d: httpx.get(s.url + "/api/next", headers=head).status_code == 401)

        # The export: fetched with the token and handed over as a blob download.
        browser.execute_script(
            "window.__downloads = []; URL.createObjectURL = ((make) => (blob) => {"
            " blob.text().then((t) => window.__downloads.push(t)); return make(blob); })(URL.createObjectURL)"
        )
        browser.find_element(By.CSS_SELECTOR, "[data-format='votes']").click()
        until(browser, lambda d: d.execute_script("return window.__downloads.length") == 1)
        lines = browser.execute_script("return window.__downloads[0]").splitlines()
        assert [json.loads(line)["reason"] for line in lines] == [HOSTILE_REASON, "second is shorter"]
        assert "Downloaded preferences-votes.jsonl (2 records)." in browser.find_element(By.ID, "message").text
        assert console_errors(browser) == []
