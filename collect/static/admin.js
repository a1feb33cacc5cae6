// The admin page (admin token only), in English and Chinese: progress, each annotator's counts, pace and agreement,
// disputed pairs, disagreements with their reasons, exports, and adding or revoking annotators. Everything that
// came from annotators or models is set with textContent only.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("collect-admin-token") || "";
let timer = null;
let last = null;

const WORDS = {
  en: {
    heading: "Preference collection: progress and agreement", token: "Admin token", show: "Show", lang: "中文",
    annotators: "Annotators", name: "annotator", answered: "answered", ties: "ties", skipped: "skipped",
    undone: "undone", median: "median s / pair", per_hour: "pairs / hour",
    agreement_col: "agreement with the others' majority", compared: "compared", access: "access",
    new_annotator: "New annotator", add: "Add", token_once: "Token (shown once; send it privately):",
    export: "Export", export_tutorial: "Tutorial JSON", export_trl: "TRL JSONL", export_ranked: "Ranked JSONL",
    export_rankings: "Rankings JSONL", export_votes: "Every vote (JSONL)", disagreements: "Disagreements",
    revoke: "Revoke", revoked: "revoked", active: "active", confirm_revoke: "Revoke {name}'s token?",
    progress: "{done} of {needed} answers ({pct}); {complete} of {items} pairs complete; {k} annotators per pair",
    strategy: "Next-pair strategy: {s}", fallback: " (falling back to random: {why})",
    agreement: "Pairs with 2+ answers: {n}; percent agreement {pa}; Krippendorff's alpha {alpha}",
    kendall: "; rankings: mean Kendall's tau {tau} over {pairs} annotator pairs",
    disputes: "Split after {k} votes: {split}; settled by more votes: {resolved}; waiting for votes: {waiting}; " +
      "still split at {most} votes: {unresolved} (a pair needs {m} votes for its leading answer)",
    none: "No disagreements yet.", first: "First answer", second: "Second answer", prompt: "Prompt",
    vote: "{who}: {label}", no_reason: "(no reason given)", downloaded: "Downloaded {name} ({n} records).",
    labels: { first: "first is better", second: "second is better", tie: "tie" },
  },
  zh: {
    heading: "偏好数据收集：进度与一致性", token: "管理员令牌", show: "显示", lang: "English",
    annotators: "标注员", name: "标注员", answered: "已回答", ties: "一样好", skipped: "已跳过",
    undone: "已撤销", median: "每对中位用时（秒）", per_hour: "每小时对数",
    agreement_col: "与其他人多数意见一致率", compared: "可比较数", access: "权限",
    new_annotator: "新标注员", add: "添加", token_once: "令牌（只显示一次，请私下发送）：",
    export: "导出", export_tutorial: "教程 JSON", export_trl: "TRL JSONL", export_ranked: "排序 JSONL",
    export_rankings: "排名 JSONL", export_votes: "全部投票（JSONL）", disagreements: "分歧",
    revoke: "撤销权限", revoked: "已撤销", active: "有效", confirm_revoke: "撤销 {name} 的令牌？",
    progress: "已收集 {done} / {needed} 个回答（{pct}）；{complete} / {items} 对已完成；每对 {k} 位标注员",
    strategy: "选题策略：{s}", fallback: "（已退回随机：{why}）",
    agreement: "有 2 个以上回答的对：{n}；一致率 {pa}；Krippendorff's alpha {alpha}",
    kendall: "；排名：平均 Kendall's tau {tau}（{pairs} 组标注员）",
    disputes: "{k} 票后仍有分歧：{split}；追加投票后解决：{resolved}；等待投票：{waiting}；" +
      "{most} 票仍有分歧：{unresolved}（领先答案需要 {m} 票）",
    none: "暂无分歧。", first: "第一个回答", second: "第二个回答", prompt: "问题",
    vote: "{who}：{label}", no_reason: "（未填写理由）", downloaded: "已下载 {name}（{n} 条）。",
    labels: { first: "第一个更好", second: "第二个更好", tie: "一样好" },
  },
};

let lang = localStorage.getItem("collect-lang") === "zh" ? "zh" : "en";

function w(key, values) {
  let text = WORDS[lang][key] ?? WORDS.en[key] ?? key;
  for (const [name, value] of Object.entries(values || {})) text = text.split("{" + name + "}").join(String(value));
  return text;
}

function applyLang() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-w]")) el.textContent = w(el.dataset.w);
  $("lang").textContent = w("lang");
  document.title = w("heading");
  if (last) render(last);
}

function pct(x) {
  return x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%";
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text === null ? "—" : String(text);
  if (cls) node.className = cls;
  return node;
}

async function api(path, options) {
  const response = await fetch(path, { ...options, headers: { Authorization: "Bearer " + token,
    ...(options && options.body ? { "Content-Type": "application/json" } : {}) } });
  return response;
}

function signOut(message) {
  $("message").textContent = message;
  $("view").hidden = true;
  $("login").hidden = false;
  sessionStorage.removeItem("collect-admin-token");
  clearInterval(timer);
}

function annotatorRow(c, ag) {
  const row = document.createElement("tr");
  for (const value of [c.name, c.answered, c.ties, c.skipped, c.undone, c.median_seconds_per_pair,
    c.pairs_per_hour, pct(ag.agreement_with_majority), ag.compared_with_majority]) row.appendChild(el("td", value ?? null));
  const access = el("td");
  if (c.revoked) access.textContent = w("revoked");
  else {
    const button = el("button", w("revoke"));
    button.type = "button";
    button.addEventListener("click", () => revoke(c.name));
    access.append(w("active") + " ", button);
  }
  row.appendChild(access);
  return row;
}

function disagreement(d) {
  const box = el("article", undefined, "disagreement");
  box.appendChild(el("h3", `#${d.item}`));
  for (const [key, text] of [["prompt", d.prompt], ["first", d.first], ["second", d.second]]) {
    const part = el("details");
    part.appendChild(el("summary", w(key)));
    part.appendChild(el("pre", text, "text"));
    box.appendChild(part);
  }
  const list = el("ul");
  for (const v of d.votes) {
    const item = el("li", w("vote", { who: v.annotator, label: WORDS[lang].labels[v.label] || v.label }));
    item.append(" — ");
    item.appendChild(el("q", v.reason || w("no_reason")));
    list.appendChild(item);
  }
  box.appendChild(list);
  return box;
}

function render(data) {
  const p = data.progress;
  $("bar").value = p.fraction;
  $("progress-text").textContent = w("progress", { done: p.answers_done, needed: p.answers_needed,
    pct: pct(p.fraction), complete: p.items_complete, items: p.items, k: p.annotations_per_item });
  const s = data.strategy;
  $("strategy").textContent = w("strategy", { s: s.strategy }) + (s.degraded ? w("fallback", { why: s.degraded }) : "");
  const a = data.agreement;
  let agreement = w("agreement", { n: a.items_with_2_or_more_votes, pa: pct(a.percent_agreement),
    alpha: a.krippendorff_alpha === null ? "—" : a.krippendorff_alpha });
  const r = data.rankings;
  if (r && r.annotator_pairs) agreement += w("kendall", { tau: r.mean_kendall_tau, pairs: r.annotator_pairs });
  $("agreement").textContent = agreement;
  const d = data.disputes;
  $("disputes").textContent = w("disputes", { k: d.annotations_per_item, split: d.split_at_first,
    resolved: d.resolved_by_more_votes, waiting: d.waiting_for_votes, most: d.most_annotations,
    unresolved: d.unresolved_at_most, m: d.majority });
  const agreementOf = Object.fromEntries(a.annotators.map((x) => [x.name, x]));
  $("rows").replaceChildren(...data.annotators.map((c) => annotatorRow(c, agreementOf[c.name] || {})));
  const split = data.disagreements.map(disagreement);
  $("disagreements").replaceChildren(...(split.length ? split : [el("p", w("none"))]));
}

async function refresh() {
  const response = await api("/api/admin/stats");
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) return signOut(data.error || response.statusText);
  sessionStorage.setItem("collect-admin-token", token);
  $("login").hidden = true;
  $("view").hidden = false;
  last = data;
  render(data);
}

async function addAnnotator(event) {
  event.preventDefault();
  const name = $("new-name").value.trim();
  if (!name) return;
  const response = await api("/api/admin/annotators", { method: "POST", body: JSON.stringify({ name }) });
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) { $("message").textContent = data.error; return; }
  $("new-name").value = "";
  $("new-token-value").textContent = data.token;
  $("new-token").hidden = false;
  $("message").textContent = "";
  refresh();
}

async function revoke(name) {
  if (!window.confirm(w("confirm_revoke", { name }))) return;
  const response = await api("/api/admin/annotators/" + encodeURIComponent(name), { method: "DELETE" });
  const data = await response.json().catch(() => ({ error: response.statusText }));
  $("message").textContent = response.ok ? "" : data.error;
  refresh();
}

async function download(format) {
  // The token travels in a header, so the file is fetched here and handed to the browser as a blob.
  const response = await api("/api/admin/export?format=" + encodeURIComponent(format));
  if (!response.ok) {
    const data = await response.json().catch(() => ({ error: response.statusText }));
    $("message").textContent = data.error;
    return;
  }
  const name = (/filename="([^"]+)"/.exec(response.headers.get("content-disposition") || "") || [])[1] || format;
  const url = URL.createObjectURL(await response.blob());
  const link = el("a");
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
  $("message").textContent = w("downloaded", { name, n: response.headers.get("x-export-records") });
}

function start() {
  token = $("token").value.trim() || token;
  if (!token) return;
  clearInterval(timer);
  refresh();
  timer = setInterval(refresh, 5000);
}

document.addEventListener("DOMContentLoaded", () => {
  applyLang();
  $("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("collect-lang", lang);
    applyLang();
  });
  $("start").addEventListener("click", start);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") start(); });
  $("add-form").addEventListener("submit", addAnnotator);
  for (const button of document.querySelectorAll("[data-format]")) {
    button.addEventListener("click", () => download(button.dataset.format));
  }
  if (token) start();
});
