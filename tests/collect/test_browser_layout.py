"""The page's layout in headless Chromium at 1280 px and on a 375 px phone: long code stays in its box, the answer
bar stays on screen, a new pair starts at the top, /admin fits a phone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labelling import ADMIN
from test_browser import chrome, console_errors, needs_browser, screenshot, sign_in, site, until, viewport

from collect.candidates import Candidates

pytestmark = needs_browser
LONG_CODE = "```python\nx = '" + "a" * 2994 + "'\n```"  # one 3,000-character line
SHORT = "A short answer, for comparison."
PARAGRAPHS = "\n\n".join(f"Paragraph {i}: " + "some words of the answer " * 6 for i in range(12))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chrome(tmp_path_factory.mktemp("chrome") / "profile") as driver:
        yield driver


def boxes(driver: Any) -> dict[str, Any]:
    """Where the answers are, how wide the page is, and which answer holds the code."""
    return driver.execute_script(
        """const box = (id) => document.getElementById(id).getBoundingClientRect();
        const pre = document.querySelector('.pair pre');
        return {a: box('a').toJSON(), b: box('b').toJSON(), page: document.documentElement.scrollWidth,
                code: pre.closest('.text').id, preScrolls: pre.scrollWidth > pre.clientWidth + 1000}"""
    )


def test_a_long_code_line_scrolls_in_its_own_box(browser: Any, tmp_path: Path) -> None:
    # Before: the code's column grew to fit the line: the page was 26,158 px wide at 1280 px (26,051 px at 375 px)
    # and the other answer 67 px wide.
    found = Candidates()
    found.add("Print a long string.", [LONG_CODE, SHORT])
    screens = {"desk": (1280, 900, False), "phone": (375, 667, True)}
    measured = {}
    with site(tmp_path, found, list(screens), len(screens)) as s:  # one pair, shown to both
        for name, (width, height, phone) in screens.items():
            viewport(browser, width, height, phone)
            sign_in(browser, s.url, s.tokens[name])
            measured[width] = boxes(browser)
            screenshot(browser, f"long-code-{width}.png")
            assert not console_errors(browser)
    print(measured)  # the figures, for -s
    for width, found_boxes in measured.items():
        assert found_boxes["page"] <= width, (width, found_boxes)
        for side in "ab":
            box = found_boxes[side]
            assert box["left"] >= 0 and box["right"] <= width, (width, side, box)
            # Side by side each answer gets about half the page; one under the other, the whole width.
            assert box["width"] >= (0.4 if width > 700 else 0.85) * width, (width, side, box)
        assert found_boxes["preScrolls"], width  # the line is all there, behind its own horizontal scroll bar


def test_phone_answer_bar_is_on_the_first_screen(browser: Any, tmp_path: Path) -> None:
    # Before: at 375 x 667 the buttons started 1,600 px down, under two answers.
    found = Candidates()
    found.add("Explain the answer in detail.\n\n" + PARAGRAPHS[:400], [PARAGRAPHS, PARAGRAPHS.upper()])
    with site(tmp_path, found, ["ann"]) as s:
        viewport(browser, 375, 667, phone=True)
        sign_in(browser, s.url, s.tokens["ann"])
        js = browser.execute_script
        screenshot(browser, "phone-375.png")
        buttons = js(
            "return [...document.querySelectorAll('.buttons button')].map((b) => b.getBoundingClientRect().toJSON())"
        )
        state = js(
            """return {y: scrollY, page: document.documentElement.scrollWidth,
            hints: [...document.querySelectorAll('.keys, .buttons kbd')].filter((e) => e.getClientRects().length)
              .length}"""
        )
        assert state["y"] == 0 and state["page"] <= 375, state
        assert len(buttons) == 5
        for box in buttons:  # every answer button is on screen without scrolling
            assert box["top"] >= 0 and box["bottom"] <= 667 and box["right"] <= 375, box
        assert state["hints"] == 0  # no keyboard on a touch screen: no key hints

        # A desktop keeps them, mouse or not (headless Chromium, like a keyboard-only desktop, reports hover: none).
        viewport(browser, 1280, 900)
        sign_in(browser, s.url, s.tokens["ann"])
        assert js("return document.querySelector('.keys').getClientRects().length") == 1


def test_a_new_pair_starts_at_its_prompt(browser: Any, tmp_path: Path) -> None:
    # Before: the next pair opened where the last one had been scrolled to (scrollY stayed at its old value).
    from selenium.webdriver.common.by import By

    long_prompt = "\n\n".join(f"Part {i} of a long question." for i in range(60))
    found = Candidates()
    for n in range(3):
        found.add(f"{n}: {long_prompt}", [PARAGRAPHS * 3, f"answer {n}"])
    with site(tmp_path, found, ["ann"]) as s:
        viewport(browser, 1280, 900)
        sign_in(browser, s.url, s.tokens["ann"])
        js = browser.execute_script
        for _ in range(2):
            shown = js("return document.getElementById('task').dataset.assignment")
            js(
                "window.scrollTo(0, document.body.scrollHeight);"
                " for (const id of ['a', 'b']) document.getElementById(id).scrollTop = 400"
            )
            assert js("return scrollY") > 500
            browser.find_element(By.CSS_SELECTOR, "[data-choice='A']").click()
            until(
                browser, lambda d, shown=shown: js("return document.getElementById('task').dataset.assignment") != shown
            )
            assert js(
                "return [scrollY, document.getElementById('a').scrollTop, document.getElementById('b').scrollTop]"
            ) == [0, 0, 0]


def test_admin_fits_a_phone(browser: Any, tmp_path: Path) -> None:
    # Before: /admin's table made the page wider than the phone; now the table scrolls on its own.
    from selenium.webdriver.common.by import By

    found = Candidates()
    found.add("q", ["x", "y"])
    with site(tmp_path, found, ["annotator-with-a-long-name", "other"]) as s:
        viewport(browser, 375, 667, phone=True)
        browser.get(s.url + "/healthz")
        browser.execute_script("localStorage.clear(); sessionStorage.clear()")
        browser.get(s.url + "/admin")
        browser.find_element(By.ID, "token").send_keys(ADMIN + "\n")
        until(browser, lambda d: d.execute_script("return !!document.querySelector('tbody tr')"))
        screenshot(browser, "admin-375.png")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        print(f"/admin at 375 px: page {width} px wide")
        assert width <= 375
