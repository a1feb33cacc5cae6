// The ranking screen: 3-4 answers as cards A-D, ranked best first by letter keys, drag or buttons, sent to /api/rank.
"use strict";

(function () {
  const LETTERS = "ABCD";
  const byId = (id) => document.getElementById(id);
  let shown = null; // the ranking on screen: {assignment_ids, prompt, answers}
  let list = []; // the cards' letters in their order on screen: the placed ones first, best first
  let placed = 0; // how many of `list` the annotator has placed; at n-1 the last one is placed too (no choice left)
  let lastSent = null; // {key, order} of the last ranking sent: an undo brings that screen back with its order
  let drag = null; // {letter, over, pointer} while a card is being dragged

  const keyOf = (ids) => ids.slice().sort((x, y) => x - y).join(",");
  const complete = () => shown !== null && placed >= list.length - 1;
  const rankOf = (letter) => list.indexOf(letter);
  const isPlaced = (letter) => complete() || rankOf(letter) < placed;

  // The answers not placed yet keep their shown order (A before B), after the placed ones.
  function tidy() {
    list = list.slice(0, placed).concat(list.slice(placed).sort());
  }

  function place(letter) {
    if (complete() || isPlaced(letter)) return;
    list.splice(rankOf(letter), 1);
    list.splice(placed, 0, letter);
    placed += 1;
    tidy();
    render();
  }

  function takeBack() {
    if (placed === 0) return;
    placed = Math.min(placed, list.length - 1) - 1;
    tidy();
    render();
  }

  // Arranging the cards by hand (drag or the buttons) makes the whole arrangement the ranking.
  function moveTo(letter, index) {
    if (index < 0 || index >= list.length) return;
    list.splice(rankOf(letter), 1);
    list.splice(index, 0, letter);
    placed = list.length - 1;
    render();
  }

  function orderText() {
    return list.map((letter) => (isPlaced(letter) ? letter : "?")).join(" > ");
  }

  function render() {
    if (!shown) return;
    const n = list.length;
    for (const card of byId("ranks").children) {
      const letter = card.dataset.letter;
      const rank = rankOf(letter);
      const done = isPlaced(letter);
      card.style.order = String(rank); // CSS order, not a DOM move: a card keeps its scroll position and focus
      card.classList.toggle("placed", done);
      card.setAttribute(
        "aria-label",
        done ? t("rank_card", { letter, n: rank + 1, total: n }) : t("rank_card_open", { letter }),
      );
      card.querySelector("h3").textContent = t("answer_n", { letter });
      const pos = card.querySelector(".rank-pos");
      pos.textContent = done ? t("rank_pos", { n: rank + 1 }) : t("rank_next");
      pos.disabled = done;
      for (const [cls, step] of [["up", -1], ["down", 1]]) {
        const button = card.querySelector("." + cls);
        button.disabled = rank + step < 0 || rank + step >= n;
        button.title = t("move_" + cls, { letter });
        button.setAttribute("aria-label", button.title);
      }
    }
    byId("rank-order").textContent = t("rank_order", { order: orderText() });
    byId("rank-back").disabled = placed === 0;
    byId("rank-submit").disabled = !complete();
    const last = LETTERS[n - 1];
    byId("rank-keys").textContent = t("rank_keys", { last, n });
  }

  function card(letter, text) {
    const article = document.createElement("article");
    article.className = "rank-card";
    article.dataset.letter = letter;
    const head = document.createElement("div");
    head.className = "rank-head";
    const grip = document.createElement("span");
    grip.className = "grip";
    grip.textContent = "⠿";
    grip.setAttribute("aria-hidden", "true");
    head.append(grip, document.createElement("h3"));
    for (const [cls, label] of [["rank-pos", ""], ["up", "↑"], ["down", "↓"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = cls;
      button.textContent = label;
      head.append(button);
    }
    const body = document.createElement("div");
    body.className = "text";
    renderMarkdown(body, text);
    article.append(head, body);
    head.querySelector(".rank-pos").addEventListener("click", (e) => clicked(e, () => place(letter)));
    head.querySelector(".up").addEventListener("click", (e) => clicked(e, () => moveTo(letter, rankOf(letter) - 1)));
    head.querySelector(".down").addEventListener("click", (e) => clicked(e, () => moveTo(letter, rankOf(letter) + 1)));
    head.addEventListener("pointerdown", (e) => startDrag(e, letter));
    return article;
  }

  // A mouse click drops the focus, as on the pair screen; a button pressed from the keyboard (detail 0) keeps it,
  // so that a keyboard-only annotator can press Move up again.
  function clicked(event, work) {
    work();
    if (event.detail > 0) dropFocus();
  }

  // ---- drag: pointer events, so that a mouse, a pen and a finger all work (HTML5 drag and drop has no touch) ----

  function startDrag(event, letter) {
    if (event.button !== 0 || event.target.closest("button") || busy) return;
    event.preventDefault(); // no text selection while dragging
    drag = { letter, over: letter, pointer: event.pointerId };
    cardOf(letter).classList.add("dragging");
  }

  const cardOf = (letter) => byId("ranks").querySelector(`[data-letter="${letter}"]`);

  function markOver(letter) {
    if (drag.over !== letter) cardOf(drag.over).classList.remove("drop-here");
    drag.over = letter;
    if (letter !== drag.letter) cardOf(letter).classList.add("drop-here");
  }

  document.addEventListener("pointermove", (event) => {
    if (!drag || event.pointerId !== drag.pointer) return;
    const under = document.elementFromPoint(event.clientX, event.clientY);
    const over = under && under.closest(".rank-card");
    if (over && over.parentElement === byId("ranks")) markOver(over.dataset.letter);
    // Stacked cards on a phone run past the screen: near its edges the page scrolls along with the finger.
    const bar = byId("rank-bar").getBoundingClientRect().height;
    if (event.clientY < 40) window.scrollBy(0, -24);
    else if (event.clientY > window.innerHeight - bar - 40) window.scrollBy(0, 24);
  });

  function endDrag(event, drop) {
    if (!drag || event.pointerId !== drag.pointer) return;
    const { letter, over } = drag;
    cardOf(letter).classList.remove("dragging");
    cardOf(over).classList.remove("drop-here");
    drag = null;
    if (drop && over !== letter) moveTo(letter, rankOf(over));
  }

  document.addEventListener("pointerup", (event) => endDrag(event, true));
  document.addEventListener("pointercancel", (event) => endDrag(event, false));

  // ---- sending ----

  function submit() {
    if (!shown) return;
    if (!complete()) {
      say(() => t("rank_incomplete"));
      return;
    }
    const order = list.slice();
    const ids = shown.assignment_ids;
    const body = { assignment_ids: ids, order, reason: byId("reason").value };
    act(async () => {
      await api("POST", "/api/rank", body);
      lastSent = { key: keyOf(ids), order };
    }, () => t("rank_saved", { order: order.join(" > ") }));
  }

  function skip() {
    if (!shown) return;
    const body = { assignment_ids: shown.assignment_ids, skip: true, reason: byId("reason").value };
    act(() => api("POST", "/api/rank", body), () => t("skipped"));
  }

  // ---- what app.js calls ----

  function show(ranking) {
    byId("task").classList.toggle("ranking", Boolean(ranking));
    shown = ranking;
    drag = null;
    if (!ranking) {
      byId("ranks").replaceChildren();
      return;
    }
    const n = ranking.answers.length;
    const again = lastSent && lastSent.key === keyOf(ranking.assignment_ids);
    list = again ? lastSent.order.slice() : LETTERS.slice(0, n).split("");
    placed = again ? n - 1 : 0;
    byId("ranks").className = "ranks n" + n;
    byId("ranks").replaceChildren(...ranking.answers.map((text, i) => card(LETTERS[i], text)));
    render();
  }

  // One key, one action; Enter and Space are not among them. Returns whether the key was the screen's.
  function key(name) {
    const index = "abcd".indexOf(name) >= 0 ? "abcd".indexOf(name) : "1234".indexOf(name);
    if (index >= 0 && index < list.length) place(LETTERS[index]);
    else if (name === "Backspace") takeBack();
    else if (name === "k") submit();
    else if (name === "s") skip();
    else return false;
    return true;
  }

  // app.js shows a ranking that /api/next sends with show(), and hands the keys of its screen to key().
  window.Rank = { show, key, active: () => shown !== null && !byId("task").hidden };

  // Enter or Space on a focused bar button would submit or skip: they never do (the bar's buttons take clicks only).
  document.addEventListener("keydown", (event) => {
    if ((event.key === "Enter" || event.key === " ") && event.target.closest && event.target.closest("#rank-bar")) {
      event.preventDefault();
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    byId("rank-submit").addEventListener("click", submit);
    byId("rank-skip").addEventListener("click", skip);
    byId("rank-undo").addEventListener("click", () => undo());
    byId("rank-back").addEventListener("click", (e) => clicked(e, takeBack));
    // The words on the cards follow the language switch (app.js's button sets <html lang>).
    new MutationObserver(render).observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });
  });
})();
