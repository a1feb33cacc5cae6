// The annotator's page: log in with a token, compare two answers with the keyboard, undo. Candidate text is
// untrusted model output: it is only ever inserted with textContent (never innerHTML), so markup in it is shown,
// not run; the server's Content-Security-Policy forbids inline script besides.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("collect-token") || "";
let current = null; // the pair on screen: {assignment_id, prompt, a, b}
let busy = false;

function say(text, ok) {
  $("message").textContent = text;
  $("message").className = ok ? "ok" : "";
}

// Readable Markdown without HTML: ``` fences become <pre><code>, `inline code` becomes <code>, the rest keeps its
// line breaks. Every piece of text goes in through textContent.
function render(el, text) {
  el.replaceChildren();
  const parts = text.split(/^```[^\n]*$/m);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      code.textContent = part.replace(/^\n/, "").replace(/\n$/, "");
      pre.appendChild(code);
      el.appendChild(pre);
      return;
    }
    if (!part.trim()) return;
    const p = document.createElement("p");
    part.replace(/^\n+|\n+$/g, "").split("`").forEach((piece, j) => {
      if (j % 2 === 1) {
        const code = document.createElement("code");
        code.textContent = piece;
        p.appendChild(code);
      } else {
        p.appendChild(document.createTextNode(piece));
      }
    });
    el.appendChild(p);
  });
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
  current = view.done ? null : view.pair;
  $("task").hidden = view.done;
  $("done").hidden = !view.done;
  if (current) {
    render($("prompt"), current.prompt);
    render($("a"), current.a);
    render($("b"), current.b);
    $("task").dataset.assignment = String(current.assignment_id);
    $("reason").value = "";
  }
}

async function act(work, okText) {
  if (busy) return;
  busy = true;
  try {
    await work();
    await loadNext();
    say(okText, true);
  } catch (e) {
    if (e.status === 401) logout(t("bad_token"));
    else say(t("error", { error: e.message }));
  } finally {
    busy = false;
  }
}

function choose(choice) {
  if (!current) return;
  const body = { assignment_id: current.assignment_id, choice, reason: $("reason").value };
  act(() => api("POST", "/api/answer", body), t("saved"));
}

function undo() {
  act(() => api("POST", "/api/undo"), t("undone"));
}

function logout(text) {
  token = "";
  sessionStorage.removeItem("collect-token");
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
    logout(e.status === 401 ? t("bad_token") : t("error", { error: e.message }));
    return;
  }
  sessionStorage.setItem("collect-token", token);
  $("token").value = "";
  $("token").blur(); // the keys now answer pairs instead of typing into a hidden box
  $("login").hidden = true;
  $("work").hidden = false;
  say("");
  await act(async () => {}, "");
}

const KEYS = { a: "A", 1: "A", ArrowLeft: "A", b: "B", 2: "B", ArrowRight: "B", t: "tie", "=": "tie", s: "skip" };

document.addEventListener("keydown", (event) => {
  if (event.target.id === "token") {
    if (event.key === "Enter") login();
    return;
  }
  if (event.target.id === "reason") {
    if (event.key === "Escape") event.target.blur();
    return; // typing a reason must not answer
  }
  if (event.ctrlKey || event.metaKey || event.altKey || $("work").hidden) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (KEYS[key]) {
    event.preventDefault();
    choose(KEYS[key]);
  } else if (key === "u") {
    event.preventDefault();
    undo();
  } else if (key === "r") {
    event.preventDefault();
    $("reason").focus();
  }
});

document.addEventListener("DOMContentLoaded", () => {
  applyLang(localStorage.getItem("collect-lang") || (navigator.language.startsWith("zh") ? "zh" : "en"));
  $("lang").addEventListener("click", () => {
    applyLang(document.documentElement.lang === "zh" ? "en" : "zh");
    if (!$("work").hidden) api("GET", "/api/me").then(showStatus).catch(() => {});
    $("lang").blur(); // keep the keys for answering, not for pressing this button again
  });
  $("start").addEventListener("click", login);
  for (const button of document.querySelectorAll("[data-choice]")) {
    button.addEventListener("click", () => choose(button.dataset.choice));
  }
  $("undo").addEventListener("click", undo);
  if (token) login();
});
