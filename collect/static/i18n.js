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
