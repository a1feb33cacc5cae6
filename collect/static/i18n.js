// The page's own words in English and Chinese; candidate text is never translated or touched.
"use strict";
window.I18N = {
  en: {
    title: "Which answer is better?", switch: "中文", token_label: "Your annotator token", start: "Start",
    prompt: "Prompt", answer_a: "Answer A", answer_b: "Answer B",
    criteria: "Judge accuracy, completeness, relevance, fluency and safety.",
    reason: "Reason (optional)", a_better: "A is better", b_better: "B is better", tie: "Tie", skip: "Skip",
    undo: "Undo last",
    keys: "Keys: A / B (or 1 / 2), T tie, S skip, U undo, R write a reason, Esc leave the reason box.",
    done: "Nothing left for you to compare. Thank you!",
    signed_in: "Annotator: {name}", counts: "You: {answered} answered, {skipped} skipped",
    progress: "{done} of {needed} answers collected ({complete} of {items} pairs complete)",
    saved: "Saved: {choice}.", skipped: "Skipped.", undone: "Undone: the pair is back.",
    bad_token: "That token is not valid.",
    error: "Error: {error}", guidelines: "Guidelines", close: "Close",
    // The ranking screen (rank.js): 3-4 answers at once.
    rank_title: "Rank the answers, best first", answer_n: "Answer {letter}", rank_next: "Rank next",
    rank_pos: "Rank {n}", rank_order: "Your ranking: {order}", rank_back: "Take back", rank_submit: "Submit ranking",
    rank_saved: "Saved: {order}.", rank_undone: "Undone: the ranking is back.",
    rank_incomplete: "Place every answer first (the last one goes last by itself).",
    rank_card: "Answer {letter}, rank {n} of {total}", rank_card_open: "Answer {letter}, not ranked yet",
    move_up: "Move {letter} up", move_down: "Move {letter} down",
    rank_keys: "Keys: A–{last} (or 1–{n}) the answers best first (the last goes last by itself), Backspace take " +
      "back, K submit the ranking, S skip, U undo, R write a reason, Esc leave the reason box. Or drag a card by " +
      "its header, or move it with ↑ ↓.",
  },
  zh: {
    title: "哪个回答更好？", switch: "English", token_label: "你的标注令牌", start: "开始",
    prompt: "问题", answer_a: "回答 A", answer_b: "回答 B",
    criteria: "请从准确性、完整性、相关性、流畅性和安全性来判断。",
    reason: "理由（可选）", a_better: "A 更好", b_better: "B 更好", tie: "一样好", skip: "跳过",
    undo: "撤销上一步",
    keys: "快捷键：A / B（或 1 / 2），T 一样好，S 跳过，U 撤销，R 填写理由，Esc 离开理由框。",
    done: "没有需要你比较的内容了。谢谢！",
    signed_in: "标注员：{name}", counts: "你：已回答 {answered}，已跳过 {skipped}",
    progress: "已收集 {done} / {needed} 个回答（{complete} / {items} 对已完成）",
    saved: "已保存：{choice}。", skipped: "已跳过。", undone: "已撤销：这一对已返回。", bad_token: "令牌无效。",
    error: "错误：{error}", guidelines: "标注指南", close: "关闭",
    rank_title: "给回答排序，最好的在前", answer_n: "回答 {letter}", rank_next: "排为下一名",
    rank_pos: "第 {n} 名", rank_order: "你的排序：{order}", rank_back: "退回一步", rank_submit: "提交排序",
    rank_saved: "已保存：{order}。", rank_undone: "已撤销：这次排序已返回。",
    rank_incomplete: "请先给每个回答排好位置（最后一个会自动排在最后）。",
    rank_card: "回答 {letter}，第 {n} 名（共 {total} 个）", rank_card_open: "回答 {letter}，尚未排序",
    move_up: "把 {letter} 上移", move_down: "把 {letter} 下移",
    rank_keys: "快捷键：A–{last}（或 1–{n}）按从好到差依次选择回答（最后一个自动排在最后），Backspace 退回一步，" +
      "K 提交排序，S 跳过，U 撤销，R 填写理由，Esc 离开理由框。也可以按住卡片标题拖动，或用 ↑ ↓ 移动。",
  },
};

window.t = function (key, values) {
  const lang = document.documentElement.lang === "zh" ? "zh" : "en";
  let text = window.I18N[lang][key] || window.I18N.en[key] || key;
  for (const [name, value] of Object.entries(values || {})) text = text.split("{" + name + "}").join(String(value));
  return text;
};

window.applyLang = function (lang) {
  document.documentElement.lang = lang === "zh" ? "zh" : "en";
  localStorage.setItem("collect-lang", document.documentElement.lang);
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = window.t(el.dataset.i18n);
  document.title = window.t("title");
};
