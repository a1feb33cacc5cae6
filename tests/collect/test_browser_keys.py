"""The page's keys and messages in headless Chromium: a click then Enter or Space answers once, only plain answer
keys answer, "Saved" names the answer in both languages, and the last screen has no Undo button."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_browser import chrome, console_errors, live_answers, needs_browser, sign_in, site, until, viewport

from collect.candidates import Candidates

pytestmark = needs_browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chrome(tmp_path_factory.mktemp("chrome") / "profile") as driver:
        yield driver


def pairs(n: int) -> Candidates:
    found = Candidates()
    for i in range(n):
        found.add(f"Question {i}?", [f"First answer to {i}.", f"Second answer to {i}."])
    return found


def settle(driver: Any) -> None:
    """Wait until the page has no request in flight (a key that answered sets `busy` before it returns)."""

    until(driver, lambda d: d.execute_script("return !busy"))


def shown(driver: Any) -> str:
    return str(driver.execute_script("return document.getElementById('task').dataset.assignment"))


def test_a_click_then_enter_or_space_answers_once(browser: Any, tmp_path: Path) -> None:
    # Before: the clicked button kept the focus, so Enter and Space pressed it again on the next pair (3 answers).
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with site(tmp_path, pairs(4), ["ann"]) as s:
        viewport(browser, 1280, 900)
        sign_in(browser, s.url, s.tokens["ann"])
        first = shown(browser)
        browser.find_element(By.CSS_SELECTOR, "[data-choice='B']").click()
        until(browser, lambda d: shown(d) not in ("", first))
        second = shown(browser)
        ActionChains(browser).send_keys(Keys.ENTER).pause(0.3).send_keys(Keys.SPACE).pause(0.3).perform()
        settle(browser)
        assert live_answers(s.db) == 1
        assert shown(browser) == second
        assert not console_errors(browser)


def test_only_plain_answer_keys_answer(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    with site(tmp_path, pairs(3), ["ann"]) as s:
        viewport(browser, 1280, 900)
        sign_in(browser, s.url, s.tokens["ann"])
        js = browser.execute_script
        # A held key repeats, and Ctrl/Alt/Meta + a key belong to the browser: none of them answers.
        for init in (
            "{key: 'a', repeat: true}",
            "{key: 'b', ctrlKey: true}",
            "{key: 'a', altKey: true}",
            "{key: '1', metaKey: true}",
            "{key: 'Enter'}",
            "{key: ' '}",
        ):
            js(f"document.body.dispatchEvent(new KeyboardEvent('keydown', {{bubbles: true, ...{init}}}))")
        ActionChains(browser).key_down(Keys.CONTROL).send_keys("b").key_up(Keys.CONTROL).perform()
        settle(browser)
        assert live_answers(s.db) == 0

        # Typing a reason ("a", "b", "t", "s" in it) answers nothing; Esc leaves the box, then B answers.
        before = shown(browser)
        ActionChains(browser).send_keys("r").perform()
        ActionChains(browser).send_keys("a bits too terse").perform()
        settle(browser)
        assert live_answers(s.db) == 0
        assert js("return document.getElementById('reason').value") == "a bits too terse"
        ActionChains(browser).send_keys(Keys.ESCAPE).send_keys("b").perform()
        until(browser, lambda d: shown(d) != before)
        settle(browser)
        assert live_answers(s.db) == 1


def test_saved_names_the_answer_and_the_last_screen_has_no_undo(browser: Any, tmp_path: Path) -> None:
    # Before: the message said only "Saved." whatever was chosen.
    from selenium.webdriver.common.by import By

    with site(tmp_path, pairs(3), ["ann"]) as s:
        viewport(browser, 1280, 900)
        sign_in(browser, s.url, s.tokens["ann"])
        js = browser.execute_script
        message = "return document.getElementById('message').textContent"

        def click(choice: str) -> None:
            before = shown(browser)
            browser.find_element(By.CSS_SELECTOR, f"[data-choice='{choice}']").click()
            until(
                browser,
                lambda d: shown(d) != before or d.execute_script("return !document.getElementById('done').hidden"),
            )
            settle(browser)

        click("B")
        assert js(message) == "Saved: B is better."
        browser.find_element(By.ID, "lang").click()
        assert js(message) == "已保存：B 更好。"  # said again in the language switched to
        click("skip")  # the skipped pair comes back once nothing fresh is left
        assert js(message) == "已跳过。"
        click("tie")
        assert js(message) == "已保存：一样好。"
        browser.find_element(By.ID, "lang").click()
        click("A")
        assert js(message) == "Saved: A is better."
        assert js("return document.getElementById('done').hidden") is False
        # Nothing is left: no answer buttons, and no Undo (the U key still takes the last answer back).
        assert not browser.find_element(By.ID, "undo").is_displayed()
        assert not any(b.is_displayed() for b in browser.find_elements(By.CSS_SELECTOR, "[data-choice]"))
        assert live_answers(s.db) == 3
