"""Markdown on the page in headless Chromium: rendered the way chat products show it, never as HTML (hostile text
stays text, only http(s) links), bidirectional controls shown not obeyed, and the guidelines panel (key G)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_browser import chrome, console_errors, live_answers, needs_browser, screenshot, sign_in, site, viewport

from collect.candidates import Candidates

pytestmark = needs_browser
RICH = """## Plan

Use **bold**, *italic* and `inline code`; snake_case_names stay as they are.

1. First step
2. Second step

- apple
- pear
  - nested

| Name | Value |
|------|------:|
| x    | 1     |

> A quote.

```python
print("hi")
```

See [the docs](https://docs.python.org/3/)."""
HOSTILE_A = """<img src=x onerror="window.__xss = 1">
<script>window.__xss = 2</script>
[click me](javascript:window.__xss=3) [also](JAVASCRIPT:alert(1)) [data](data:text/html,<script>alert(1)</script>)
![pic](javascript:alert(1)) <a href="javascript:window.__xss=4">raw link</a>

## <img src=x onerror=alert(1)> heading

| <b>cell</b> | x |
|---|---|
| <svg onload=alert(1)> | <iframe src=javascript:alert(1)> |"""
HOSTILE_B = """[<img src=x onerror="window.__xss=5">](https://example.com/ok)

```html
</code></pre><img src=x onerror="window.__xss=6">
```"""
# What markdown.js may create: anything else (img, script, svg, iframe, style...) would be markup let through.
MADE = "p,h1,h2,h3,h4,h5,h6,strong,em,del,code,pre,div,ul,ol,li,blockquote,hr,table,thead,tbody,tr,th,td,a"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chrome(tmp_path_factory.mktemp("chrome") / "profile") as driver:
        yield driver


def test_markdown_is_rendered(browser: Any, tmp_path: Path) -> None:
    # Before: only ``` fences and `code` were rendered; "## Plan", tables and lists showed as raw Markdown.
    found = Candidates()
    found.add("# How?\nExplain *briefly*.", [RICH, "Just do it."])
    with site(tmp_path, found, ["ann"]) as s:
        viewport(browser, 1280, 900)
        sign_in(browser, s.url, s.tokens["ann"])
        screenshot(browser, "markdown-1280.png")
        got = browser.execute_script(
            """const box = [...document.querySelectorAll('.pair .text')].find((e) => e.textContent.includes('Plan'));
            const texts = (sel) => [...box.querySelectorAll(sel)].map((e) => e.textContent);
            const pre = box.querySelector('pre');
            const link = box.querySelector('a');
            return {h2: texts('h2'), strong: texts('strong'), em: texts('em'), code: texts('p code'),
              ol: texts('ol > li'), ul: texts('ul > li > ul > li'), top: box.querySelectorAll('ul > li').length,
              th: texts('th'), td: texts('td'), right: [...box.querySelectorAll('th')].map((e) => e.className)[1],
              quote: texts('blockquote'), pre: texts('pre > code'),
              label: pre && pre.previousElementSibling && pre.previousElementSibling.textContent,
              link: link && [link.href, link.textContent, link.rel, link.target],
              prompt: ['#prompt h1', '#prompt em'].map((sel) => document.querySelector(sel)?.textContent),
              page: document.documentElement.scrollWidth}"""
        )
        assert not console_errors(browser)
    assert got["h2"] == ["Plan"]
    assert got["strong"] == ["bold"] and got["em"] == ["italic"] and got["code"] == ["inline code"]
    assert got["ol"] == ["First step", "Second step"]
    assert got["ul"] == ["nested"] and got["top"] == 3
    assert got["th"] == ["Name", "Value"] and got["td"] == ["x", "1"] and got["right"] == "align-right"
    assert got["quote"] == ["A quote."]
    assert got["pre"] == ['print("hi")'] and got["label"] == "python"
    assert got["link"] == ["https://docs.python.org/3/", "the docs", "noopener noreferrer nofollow", "_blank"]
    assert got["prompt"] == ["How?", "briefly"]
    assert got["page"] <= 1280


def test_hostile_markdown_stays_text(browser: Any, tmp_path: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    found = Candidates()
    found.add("<script>window.__xss = 7</script> **Which?**", [HOSTILE_A, HOSTILE_B])
    with site(tmp_path, found, ["ann"]) as s:
        viewport(browser, 1280, 900)
        sign_in(browser, s.url, s.tokens["ann"])
        got = browser.execute_script(
            f"""const all = [...document.querySelectorAll('#prompt *, #a *, #b *')];
            return {{foreign: all.filter((e) => !e.matches('{MADE}')).map((e) => e.outerHTML),
              links: [...document.querySelectorAll('#prompt a, #a a, #b a')].map((a) => [a.href, a.rel, a.target]),
              xss: window.__xss === undefined ? null : window.__xss,
              text: ['prompt', 'a', 'b'].map((id) => document.getElementById(id).textContent).join('\\n')}}"""
        )
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 (reading it is the check)
        assert not console_errors(browser)  # nothing even tried to run (a CSP refusal would be logged)
    assert got["foreign"] == [] and got["xss"] is None
    assert got["links"] == [["https://example.com/ok", "noopener noreferrer nofollow", "_blank"]]
    for literal in (
        '<img src=x onerror="window.__xss = 1">',
        "<script>window.__xss = 2</script>",
        "[click me](javascript:window.__xss=3)",
        "[also](JAVASCRIPT:alert(1))",
        '<a href="javascript:window.__xss=4">raw link</a>',
        "<svg onload=alert(1)>",
        '</code></pre><img src=x onerror="window.__xss=6">',
        "<script>window.__xss = 7</script> Which?",
    ):
        assert literal in got["text"], literal


def test_bidirectional_controls_are_shown_not_obeyed(browser: Any, tmp_path: Path) -> None:
    # Before: "Hi!\u202eevil" displayed as "Hi!live" (the override reversed what follows it).
    found = Candidates()
    found.add("Hi!\u202eevil", ["ok \u2066x\u2069 \u200f", "fine \u061c"])
    with site(tmp_path, found, ["ann"]) as s:
        viewport(browser, 1280, 900)
        sign_in(browser, s.url, s.tokens["ann"])
        texts = browser.execute_script(
            "return ['prompt', 'a', 'b'].map((id) => document.getElementById(id).textContent)"
        )
    assert texts[0] == "Hi!⟨U+202E⟩evil"
    assert sorted(texts[1:]) == ["fine ⟨U+061C⟩", "ok ⟨U+2066⟩x⟨U+2069⟩ ⟨U+200F⟩"]


def guidelines_served(url: str, token: str) -> None:
    answer = httpx.get(url + "/api/guidelines", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    if answer.status_code == 404:
        pytest.skip("the server has no GET /api/guidelines")


def test_guidelines_panel(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    (tmp_path / "en.md").write_text("## Rules\n\n- Prefer **correct** answers.\n- Then short ones.\n")
    (tmp_path / "zh.md").write_text("## 规则\n\n1. 先看正确性。\n", encoding="utf-8")
    found = Candidates()
    found.add("q", ["x", "y"])
    extra = ["--guidelines", str(tmp_path / "en.md"), "--guidelines-zh", str(tmp_path / "zh.md")]
    with site(tmp_path / "site", found, ["ann"], 1, *extra) as s:
        guidelines_served(s.url, s.tokens["ann"])
        viewport(browser, 1280, 900)
        sign_in(browser, s.url, s.tokens["ann"])
        js = browser.execute_script
        is_open = "return !document.getElementById('guide').hidden"
        heading = "return document.querySelector('#guide-text h2').textContent"

        def keys(*pressed: str) -> None:
            ActionChains(browser).send_keys(*pressed).perform()

        assert browser.find_element(By.ID, "guide-button").is_displayed() and not js(is_open)
        keys("g")
        assert js(is_open) and js(heading) == "Rules"
        assert js("return [...document.querySelectorAll('#guide-text li strong')].map((e) => e.textContent)") == [
            "correct"
        ]
        screenshot(browser, "guidelines-1280.png")
        keys("a")  # the guidelines cover the answers: no answering while they are open
        keys("g")
        assert not js(is_open)
        browser.find_element(By.ID, "guide-button").click()
        assert js(is_open)
        keys(Keys.ESCAPE)
        assert not js(is_open)
        browser.find_element(By.ID, "lang").click()
        keys("g")
        assert js(is_open) and js(heading) == "规则"
        assert js("return document.querySelector('#guide-text ol li').textContent") == "先看正确性。"
        browser.find_element(By.ID, "guide-close").click()
        assert not js(is_open)
        assert live_answers(s.db) == 0


def test_guidelines_fall_back_to_the_other_language_or_hide(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    (tmp_path / "zh.md").write_text("## 只有中文\n", encoding="utf-8")
    found = Candidates()
    found.add("q", ["x", "y"])
    button = "return document.getElementById('guide-button').getClientRects().length > 0"
    with site(tmp_path / "zh", found, ["ann"], 1, "--guidelines-zh", str(tmp_path / "zh.md")) as s:
        guidelines_served(s.url, s.tokens["ann"])
        viewport(browser, 1280, 900)
        sign_in(browser, s.url, s.tokens["ann"])
        assert browser.execute_script(button)
        ActionChains(browser).send_keys("g").perform()
        assert browser.execute_script("return document.querySelector('#guide-text h2').textContent") == "只有中文"
    with site(tmp_path / "none", found, ["ann"]) as s:
        sign_in(browser, s.url, s.tokens["ann"])
        assert not browser.execute_script(button)
        ActionChains(browser).send_keys("g").perform()
        assert browser.execute_script("return document.getElementById('guide').hidden")
