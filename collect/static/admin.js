// The admin page: progress, per-annotator counts and agreement, refreshed every 5 seconds (admin token only).
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("collect-admin-token") || "";
let timer = null;

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "—" : String(text);
  row.appendChild(td);
}

function pct(x) {
  return x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%";
}

async function refresh() {
  const response = await fetch("/api/admin/stats", { headers: { Authorization: "Bearer " + token } });
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) {
    $("message").textContent = data.error || response.statusText;
    $("view").hidden = true;
    $("login").hidden = false;
    sessionStorage.removeItem("collect-admin-token");
    clearInterval(timer);
    return;
  }
  sessionStorage.setItem("collect-admin-token", token);
  $("login").hidden = true;
  $("view").hidden = false;
  $("message").textContent = "";
  const p = data.progress;
  $("bar").value = p.fraction;
  $("progress-text").textContent = `${p.answers_done} of ${p.answers_needed} answers (${pct(p.fraction)}); ` +
    `${p.items_complete} of ${p.items} pairs complete; ${p.annotations_per_item} annotators per pair`;
  const s = data.strategy;
  $("strategy").textContent = `Next-pair strategy: ${s.strategy}` + (s.degraded ? ` (falling back to random: ${s.degraded})` : "");
  const a = data.agreement;
  $("agreement").textContent = `Pairs with 2+ answers: ${a.items_with_2_or_more_votes}; percent agreement ` +
    `${pct(a.percent_agreement)}; Krippendorff's alpha ${a.krippendorff_alpha === null ? "—" : a.krippendorff_alpha}`;
  const agreementOf = Object.fromEntries(a.annotators.map((x) => [x.name, x]));
  const rows = data.annotators.map((c) => {
    const row = document.createElement("tr");
    const ag = agreementOf[c.name] || {};
    for (const value of [c.name, c.answered, c.ties, c.skipped, c.undone, pct(ag.agreement_with_majority),
      ag.compared_with_majority]) cell(row, value);
    return row;
  });
  $("rows").replaceChildren(...rows);
}

function start() {
  token = $("token").value.trim() || token;
  if (!token) return;
  clearInterval(timer);
  refresh();
  timer = setInterval(refresh, 5000);
}

document.addEventListener("DOMContentLoaded", () => {
  $("start").addEventListener("click", start);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") start(); });
  if (token) start();
});
