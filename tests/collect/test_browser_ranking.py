"""The ranking screen (rank.js) in headless Chromium: keys, drag, buttons, undo, skip, layout; checked in the DB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_browser import Site, chrome, console_errors, needs_browser, screenshot, sign_in, site, until, viewport

from collect.candidates import Candidates
from collect.db import connect

pytestmark = needs_browser
QUALITY = {"great": 0, "good": 1, "fair": 2, "poor": 3}  # every answer text starts with how good it is
LONG_CODE = "```python\nx = '" + "a" * 2000 + "'\n```"
WORDS = "\n\n".join(f"Paragraph {i}: " + "some words of the answer " * 8 for i in range(6))
NAMES = ["keys", "drag", "enter", "undo", "skip", "phone"]  # one annotator per test: each starts afresh


def answers() -> Candidates:
    found = Candidates()
    found.add(
        "Rank four: how do I print a long string?",
        [f"poor: wrong.\n\n{WORDS}", f"great: like this.\n\n{LONG_CODE}", "fair: short.", f"good: {WORDS}"],
    )
    found.add("Rank three: what is a set?", ["good: a container.", "poor: data.", "great: unique items, unordered."])
    found.add("Only two: what is a dict?", ["great: a mapping of keys to values.", "poor: data."])
    return found


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chrome(tmp_path_factory.mktemp("chrome") / "profile") as driver:
        yield driver


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One `collect serve --rankings` for the module; every annotator gets every prompt."""
    with site(tmp_path_factory.mktemp("site"), answers(), NAMES, len(NAMES), "--rankings") as s:
        yield s


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    viewport(browser, 1280, 900)
    yield browser
    errors = console_errors(browser)
    assert not errors, errors


SCREEN = """
const task = document.getElementById('task');
const message = document.getElementById('message').textContent;
if (task.hidden) return {kind: 'done', message};
const ids = task.dataset.assignment;
const a = document.getElementById('a').textContent;
if (!task.classList.contains('ranking')) return {kind: 'pair', ids, message, a};
const cards = [...document.querySelectorAll('#ranks .rank-card')];
return {kind: 'ranking', ids: ids.slice(5).split(',').map(Number),
        answers: cards.map((c) => c.querySelector('.text').textContent),
        order: cards.slice().sort((x, y) => x.style.order - y.style.order).map((c) => c.dataset.letter),
        placed: cards.filter((c) => c.classList.contains('placed')).length,
        summary: document.getElementById('rank-order').textContent,
        submit: !document.getElementById('rank-submit').disabled, message};
"""


def screen(driver: Any) -> dict[str, Any]:
    return dict(driver.execute_script(SCREEN))


def quality(text: str) -> int:
    return QUALITY[text.split(":")[0]]


def best_first(view: dict[str, Any]) -> list[str]:
    return sorted("ABCD"[: len(view["answers"])], key=lambda letter: quality(view["answers"]["ABCD".index(letter)]))


def press(driver: Any, *keys: str) -> None:
    """Type `keys`, then wait until no request is in flight (a key that sends sets `busy` before it returns)."""
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(driver).send_keys(key).perform()
    until(driver, lambda d: d.execute_script("return !busy"))


def click(driver: Any, selector: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, selector).click()
    until(driver, lambda d: d.execute_script("return !busy"))


def reach(driver: Any, size: int | None = None) -> dict[str, Any]:
    """Answer whatever comes first (the server's order is random) until a ranking of `size` answers is on screen."""
    while (view := screen(driver))["kind"] != "ranking" or size not in (None, len(view["answers"])):
        assert view["kind"] != "done", f"no ranking of {size} answers came"
        press(driver, "a") if view["kind"] == "pair" else press(driver, *best_first(view)[:-1], "k")
    return view


def stored(db: Path, ids: list[int]) -> list[dict[str, Any]]:
    """The answers to these assignments, with the texts of each pair's first and second completion."""
    conn = connect(db)
    try:
        rows = conn.execute(
            f"""SELECT f.text AS first, c.text AS second, a.choice, a.winner, a.ranking, a.reason,
                       a.undone IS NOT NULL AS undone
                FROM answers a JOIN items i ON i.id = a.item_id JOIN completions f ON f.id = i.first_id
                JOIN completions c ON c.id = i.second_id WHERE a.assignment_id IN ({", ".join("?" * len(ids))})""",
            ids,
        ).fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()


def assert_ranked(db: Path, view: dict[str, Any], order: list[str]) -> None:
    """Exactly the pairs the ranking implies are live, in one ranking, each won by the answer ranked higher."""
    # Texts as shown are rendered Markdown; their first word (unique within a prompt) finds them in the database.
    ranked = [quality(view["answers"]["ABCD".index(letter)]) for letter in order]
    live = [r for r in stored(db, view["ids"]) if not r["undone"]]
    n = len(order)
    assert len(live) == n * (n - 1) // 2 == len(view["ids"]), live
    assert len({r["ranking"] for r in live}) == 1 and live[0]["ranking"] is not None
    for r in live:
        higher = ranked.index(quality(r["first"])) < ranked.index(quality(r["second"]))
        assert r["winner"] == ("first" if higher else "second"), (order, r)


def test_keys_rank_and_a_pair_between(page: Any, served: Site) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sign_in(page, served.url, served.tokens["keys"])
    assert page.execute_script("return Object.keys(I18N.en).filter((k) => !(k in I18N.zh))") == []
    seen = []
    while (view := screen(page))["kind"] != "done":
        if view["kind"] == "pair":  # two answers stay a pair: the pair screen, not the ranking one
            assert page.find_element(By.ID, "a").is_displayed()
            assert not page.find_element(By.ID, "ranks").is_displayed()
            assert not page.find_element(By.ID, "rank-submit").is_displayed()
            press(page, "a" if view["a"].startswith("great") else "b")
            seen.append(2)
            continue
        n = len(view["answers"])
        assert not page.find_element(By.CSS_SELECTOR, "[data-choice='A']").is_displayed()
        tops = page.execute_script(
            "return new Set([...document.querySelectorAll('.rank-card')].map((c) => c.offsetTop)).size"
        )
        assert tops == (1 if n == 3 else 2)  # three cards side by side; four in two rows of two
        assert view["placed"] == 0 and not view["submit"] and view["summary"] == "Your ranking: " + " > ".join("?" * n)
        press(page, "k")  # nothing placed: K says so, sends nothing
        assert screen(page)["message"].startswith("Place every answer first")
        best = best_first(view)
        wrong = best[1].lower()
        press(page, wrong, Keys.BACKSPACE)  # a letter taken back with Backspace
        assert screen(page)["placed"] == 0
        press(page, *[letter.lower() for letter in best[:-1]])  # n-1 letters: the last one is implied
        placed = screen(page)
        assert placed["order"] == best and placed["placed"] == n and placed["submit"]
        assert placed["summary"] == "Your ranking: " + " > ".join(best)
        page.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        press(page, "k")
        assert screen(page)["message"] == f"Saved: {' > '.join(best)}."
        assert page.execute_script("return scrollY") == 0  # the next screen starts at its prompt
        assert_ranked(served.db, view, best)
        seen.append(n)
    assert sorted(seen) == [2, 3, 4]


def test_drag_and_the_move_buttons_rank(page: Any, served: Site) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    viewport(page, 1280, 1000, phone=True)  # a touch screen first (the grid's first row: A and B side by side)
    sign_in(page, served.url, served.tokens["drag"])
    view = reach(page, 4)
    grip = lambda letter: page.find_element(By.CSS_SELECTOR, f".rank-card[data-letter='{letter}'] .grip")  # noqa: E731

    def centre(letter: str) -> tuple[float, float]:
        box = grip(letter).rect
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    # B's header dragged by a finger onto A: B takes A's place, and the arrangement is the whole ranking.
    (x0, y0), (x1, y1) = centre("B"), centre("A")
    for kind, steps in (("touchStart", [0]), ("touchMove", [0.25, 0.5, 0.75, 1]), ("touchEnd", [1])):
        for f in steps:
            point = [] if kind == "touchEnd" else [{"x": x0 + f * (x1 - x0), "y": y0 + f * (y1 - y0)}]
            page.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": kind, "touchPoints": point})
    dragged = screen(page)
    assert dragged["order"] == ["B", "A", "C", "D"] and dragged["placed"] == 4 and dragged["submit"]
    # Then C by the mouse onto B: C first.
    viewport(page, 1280, 1000)
    ActionChains(page).click_and_hold(grip("C")).move_to_element(grip("B")).move_by_offset(3, 3).release().perform()
    assert screen(page)["order"] == ["C", "B", "A", "D"]
    best = best_first(view)
    for place, letter in enumerate(best):  # the rest with the ↑ buttons
        while screen(page)["order"].index(letter) > place:
            click(page, f".rank-card[data-letter='{letter}'] .up")
    assert screen(page)["order"] == best
    assert page.execute_script("return document.activeElement === document.body")  # a clicked button lets go
    click(page, "#rank-submit")
    assert_ranked(served.db, view, best)


def test_enter_and_space_never_submit(page: Any, served: Site) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sign_in(page, served.url, served.tokens["enter"])
    view = reach(page)
    press(page, "r", "a b k s", Keys.ESCAPE)  # typed into the reason box: ranks nothing
    assert screen(page)["placed"] == 0
    press(page, "c", "a")  # complete (for three answers the last is implied; for four, one more)
    if len(view["answers"]) == 4:
        press(page, "d")
    assert screen(page)["submit"]
    js = page.execute_script
    for init in ("{key: 'k', repeat: true}", "{key: 'k', ctrlKey: true}", "{key: 'k', metaKey: true}"):
        js(f"document.body.dispatchEvent(new KeyboardEvent('keydown', {{bubbles: true, ...{init}}}))")
    press(page, Keys.ENTER, Keys.SPACE)
    page.find_element(By.CSS_SELECTOR, ".rank-card[data-letter='B'] .up").click()  # a mouse click drops the focus
    press(page, Keys.ENTER, Keys.SPACE)
    for button in ("rank-submit", "rank-skip"):  # even a focused Submit or Skip takes no Enter or Space
        js(f"document.getElementById('{button}').focus()")
        ActionChains(page).send_keys(Keys.ENTER).pause(0.2).send_keys(Keys.SPACE).pause(0.2).perform()
        press(page)
    assert stored(served.db, view["ids"]) == []
    still = screen(page)
    assert still["ids"] == view["ids"] and still["submit"]
    press(page, "k")  # the ranking was complete all along
    assert_ranked(served.db, view, still["order"])


def test_undo_brings_the_same_screen_and_order_back(page: Any, served: Site) -> None:
    sign_in(page, served.url, served.tokens["undo"])
    view = reach(page, 4)
    best = best_first(view)
    press(page, *[letter.lower() for letter in best[:-1]], "k")
    assert_ranked(served.db, view, best)
    press(page, "u")
    back = screen(page)
    assert back["ids"] == view["ids"] and back["answers"] == view["answers"]  # same answers under the same letters
    assert back["order"] == best and back["placed"] == 4  # and the ranking sent, to correct
    assert back["message"] == "Undone: the ranking is back."
    rows = stored(served.db, view["ids"])
    assert len(rows) == 6 and all(r["undone"] for r in rows)  # undone whole: all six pairs
    press(page, "k")
    assert_ranked(served.db, view, best)


def test_skip_skips_every_pair(page: Any, served: Site) -> None:
    from selenium.webdriver.common.keys import Keys

    sign_in(page, served.url, served.tokens["skip"])
    view = reach(page)
    click(page, ".rank-card[data-letter='B'] .rank-pos")  # a card's own "Rank next" button, for a mouse or finger
    assert screen(page)["summary"].startswith("Your ranking: B > ?")
    click(page, "#rank-back")
    assert screen(page)["placed"] == 0
    press(page, "b", "r", "unclear", Keys.ESCAPE, "s")
    assert screen(page)["message"] == "Skipped."
    rows = stored(served.db, view["ids"])
    assert len(rows) == len(view["ids"]) and len({r["ranking"] for r in rows}) == 1
    assert all(r["choice"] == "skip" and r["winner"] is None and r["reason"] == "unclear" for r in rows)


BOXES = """
const box = (e) => e.getBoundingClientRect().toJSON();
return {y: scrollY, page: document.documentElement.scrollWidth, submit: box(document.getElementById('rank-submit')),
        cards: [...document.querySelectorAll('.rank-card')].map(box),
        hints: [...document.querySelectorAll('#rank-keys, .rank-bar kbd')].filter((e) => e.getClientRects().length)
          .length,
        codeScrolls: [...document.querySelectorAll('.rank-card pre')].every((p) => p.scrollWidth > p.clientWidth)};
"""


def test_phone_and_desk_layout(page: Any, served: Site) -> None:
    from selenium.webdriver.common.by import By

    viewport(page, 375, 667, phone=True)
    sign_in(page, served.url, served.tokens["phone"])
    reach(page, 4)
    page.execute_script("window.scrollTo(0, 0)")
    phone = page.execute_script(BOXES)
    screenshot(page, "rank-375.png")
    assert phone["y"] == 0 and phone["page"] <= 375, phone
    assert phone["submit"]["top"] >= 0 and phone["submit"]["bottom"] <= 667 and phone["submit"]["right"] <= 375
    for card in phone["cards"]:  # one under the other, the whole width, none past the edge
        assert card["left"] >= 0 and card["right"] <= 375 and card["width"] >= 0.85 * 375, card
    assert len({round(c["top"]) for c in phone["cards"]}) == 4
    assert phone["hints"] == 0 and phone["codeScrolls"]

    viewport(page, 1280, 900)
    sign_in(page, served.url, served.tokens["phone"])  # the same screen again: its lease is still open
    press(page, "b", "d")
    desk = page.execute_script(BOXES)
    screenshot(page, "rank-1280.png")
    assert desk["page"] <= 1280 and desk["submit"]["bottom"] <= 900 and desk["hints"] == 4, desk
    for card in desk["cards"]:  # two columns of about half the page each
        assert card["left"] >= 0 and card["right"] <= 1280 and card["width"] >= 0.4 * 1200, card
    assert desk["codeScrolls"]
    page.find_element(By.ID, "lang").click()
    zh = screen(page)
    assert zh["summary"] == "你的排序：B > D > ? > ?"
    assert page.find_element(By.ID, "rank-submit").text == "提交排序 K"
    assert page.find_element(By.CSS_SELECTOR, ".rank-card[data-letter='B'] .rank-pos").text == "第 1 名"
    screenshot(page, "rank-1280-zh.png")
    page.find_element(By.ID, "lang").click()
