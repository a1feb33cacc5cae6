// The annotator's page: log in with a token, compare two answers with the keyboard or the answer bar (3-4 answers:
// rank.js's screen), undo, read the guidelines. Candidate text is untrusted model output: markdown.js builds it from
// DOM nodes (never innerHTML), so markup in it is shown, not run; the server's Content-Security-Policy forbids inline
// script besides.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("collect-token") || "";
let current = null; // the pair on screen: {assignment_id, prompt, a, b}
let busy = false;
let message = () => ""; // the status line, as a function so that switching language can say it again
let messageOk = false;
let guidelines = null; // {en, zh} from /api/guidelines; null when the server has none

const CHOICE_LABEL = { A: "a_better", B: "b_better", tie: "tie" };
const KEYS = { a: "A", 1: "A", ArrowLeft: "A", b: "B", 2: "B", ArrowRight: "B", t: "tie", "=": "tie", s: "skip" };

function say(text, ok) {
  message = typeof text === "function" ? text : () => text;
  messageOk = Boolean(ok);
  $("message").textContent = message();
  $("message").className = messageOk ? "ok" : "";
}

// A button keeps the focus after a click, and Enter or Space would then press it again on the next pair.
function dropFocus() {
  if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) {
    const error = new Error(data.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

function showStatus(view) {
  $("who").textContent = t("signed_in", { name: view.name });
  $("counts").textContent = t("counts", { answered: view.counts.answered || 0, skipped: view.counts.skipped || 0 });
  const p = view.progress;
  $("bar").value = p.fraction;
  $("progress-text").textContent = t("progress", {
    done: p.answers_done, needed: p.answers_needed, complete: p.items_complete, items: p.items,
  });
}

async function loadNext() {
  const view = await api("GET", "/api/next");
  showStatus(view);
  current = (!view.done && view.pair) || null;
  const ranking = (!view.done && view.ranking) || null; // 3-4 answers at once: rank.js's screen
  $("task").hidden = view.done;
  $("done").hidden = !view.done;
  window.Rank.show(ranking);
  if (current || ranking) {
    for (const id of current ? ["prompt", "a", "b"] : ["prompt"]) {
      renderMarkdown($(id), (current || ranking)[id]);
      $(id).scrollTop = 0;
      $(id).scrollLeft = 0;
    }
    $("task").dataset.assignment = current ? String(current.assignment_id) : "rank:" + ranking.assignment_ids;
    $("reason").value = "";
  }
  window.scrollTo(0, 0); // a new pair starts at its prompt, not where the last one was left
  dropFocus();
}

async function act(work, okText) {
  if (busy) return;
  busy = true;
  dropFocus();
  try {
    await work();
    await loadNext();
    say(okText, true);
  } catch (e) {
    if (e.status === 401) logout(() => t("bad_token"));
    else say(() => t("error", { error: e.message }));
  } finally {
    busy = false;
  }
}

function choose(choice) {
  if (!current) return;
  const body = { assignment_id: current.assignment_id, choice, reason: $("reason").value };
  const saved = () => (choice === "skip" ? t("skipped") : t("saved", { choice: t(CHOICE_LABEL[choice]) }));
  act(() => api("POST", "/api/answer", body), saved);
}

function undo() {
  act(() => api("POST", "/api/undo"), () => t(window.Rank.active() ? "rank_undone" : "undone"));
}

// ---- guidelines: the current language's, else the other one's; no button when there are none ----

function guideText() {
  if (!guidelines) return "";
  const lang = document.documentElement.lang === "zh" ? "zh" : "en";
  const other = lang === "zh" ? "en" : "zh";
  return String(guidelines[lang] || "").trim() || String(guidelines[other] || "").trim();
}

function showGuidelines() {
  const text = guideText();
  $("guide-button").hidden = !text;
  renderMarkdown($("guide-text"), text);
  if (!text) $("guide").hidden = true;
}

async function loadGuidelines() {
  try {
    guidelines = await api("GET", "/api/guidelines");
  } catch (e) {
    guidelines = null; // 404 from a server without guidelines, or any failure: the page works without them
  }
  showGuidelines();
}

function toggleGuide(open) {
  const show = open === undefined ? $("guide").hidden : open;
  if (show && !guideText()) return;
  $("guide").hidden = !show;
  if (show) $("guide").focus(); // so that the arrow and page keys scroll the guidelines
  else dropFocus();
}

// ---- signing in and out ----

function logout(text) {
  token = "";
  sessionStorage.removeItem("collect-token");
  guidelines = null;
  showGuidelines();
  $("login").hidden = false;
  $("work").hidden = true;
  say(text || "");
}

async function login() {
  token = $("token").value.trim() || token;
  if (!token) return;
  try {
    await api("GET", "/api/me");
  } catch (e) {
    logout(e.status === 401 ? () => t("bad_token") : () => t("error", { error: e.message }));
    return;
  }
  sessionStorage.setItem("collect-token", token);
  $("token").value = "";
  $("token").blur(); // the keys now answer pairs instead of typing into a hidden box
  $("login").hidden = true;
  $("work").hidden = false;
  say("");
  await loadGuidelines(); // before the first pair, so that the header does not shift under the annotator's eyes
  await act(async () => {}, "");
}

// ---- keys: one key one action; Enter and Space are never answers (they press whatever button has the focus) ----

document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (target.id === "token") {
    if (event.key === "Enter") login();
    return;
  }
  if (target.id === "reason") {
    if (event.key === "Escape") target.blur();
    return; // typing a reason must not answer
  }
  if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
  if (event.repeat || event.ctrlKey || event.metaKey || event.altKey || $("work").hidden) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (key === "g" || (key === "Escape" && !$("guide").hidden)) {
    event.preventDefault();
    toggleGuide(key === "g" ? undefined : false);
    return;
  }
  if (!$("guide").hidden) return; // the guidelines cover the answers: no answering blind
  const ranking = window.Rank.active(); // its letters, Backspace, K and S are rank.js's
  if (ranking && window.Rank.key(key)) {
    event.preventDefault();
  } else if (!ranking && KEYS[key]) {
    event.preventDefault();
    choose(KEYS[key]);
  } else if (key === "u") {
    event.preventDefault();
    undo();
  } else if (key === "r" && (current || ranking)) {
    event.preventDefault();
    $("reason").focus();
  }
});

document.addEventListener("DOMContentLoaded", () => {
  applyLang(localStorage.getItem("collect-lang") || (navigator.language.startsWith("zh") ? "zh" : "en"));
  $("lang").addEventListener("click", () => {
    applyLang(document.documentElement.lang === "zh" ? "en" : "zh");
    if (!$("work").hidden) api("GET", "/api/me").then(showStatus).catch(() => {});
    showGuidelines();
    say(message, messageOk);
    $("lang").blur(); // keep the keys for answering, not for pressing this button again
  });
  $("start").addEventListener("click", login);
  for (const button of document.querySelectorAll("[data-choice]")) {
    button.addEventListener("click", () => choose(button.dataset.choice));
  }
  $("undo").addEventListener("click", undo);
  $("guide-button").addEventListener("click", () => toggleGuide());
  $("guide-close").addEventListener("click", () => toggleGuide(false));
  if (token) login();
});
