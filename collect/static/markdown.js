// Markdown for untrusted model text, built from DOM nodes only (createElement / textContent, never innerHTML).
// Raw HTML is never interpreted: "<img onerror=...>" stays literal text. Links become <a> only for http(s) URLs.
"use strict";

(function () {
  // Bidirectional controls can make "Hi!\u202eevil" display as "Hi!live": show each one as a visible escape.
  const BIDI = /[\u202A-\u202E\u2066-\u2069\u200E\u200F\u061C]/g;
  const visible = (text) =>
    text.replace(BIDI, (c) => "⟨U+" + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0") + "⟩");

  const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$/;
  const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
  const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  const QUOTE = /^ {0,3}> ?/;
  const LIST = /^( {0,3})([-*+]|\d{1,9}[.)])(?:([ \t]+)(.*))?$/;
  const TABLE_RULE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
  const MAX_DEPTH = 32;
  const PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const indentOf = (line) => line.length - line.trimStart().length;
  const isTableStart = (lines, i) =>
    i + 1 < lines.length && lines[i].includes("|") && TABLE_RULE.test(lines[i + 1]) &&
    splitRow(lines[i]).length === splitRow(lines[i + 1]).length;
  // Whether line i starts a block of its own (ending a paragraph, a quote or a list item). Inside a paragraph only a
  // list that starts at "1." or a bullet does, as in CommonMark: "2023. Revenue grew" goes on with the sentence.
  function startsBlock(lines, i, inParagraph = false) {
    const line = lines[i];
    const item = LIST.exec(line);
    if (item && (!inParagraph || (item[4] && /^(\D|1\D)/.test(item[2])))) return true;
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || isTableStart(lines, i);
  }

  // Cells of a table row, split on "|" outside `code` and not escaped.
  function splitRow(line) {
    let text = line.trim();
    if (text.startsWith("|")) text = text.slice(1);
    if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
    const cells = [];
    let cell = "";
    let inCode = false;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (c === "\\" && text[i + 1] === "|") {
        cell += "|";
        i++;
      } else if (c === "`") {
        inCode = !inCode;
        cell += c;
      } else if (c === "|" && !inCode) {
        cells.push(cell.trim());
        cell = "";
      } else {
        cell += c;
      }
    }
    cells.push(cell.trim());
    return cells;
  }

  // ---- blocks ----

  // Block structure of `lines`, appended to `out`. Past MAX_DEPTH quotes/lists in each other the rest is plain text:
  // each level re-reads its lines, and no one reads a reply nested that deep.
  function blocks(lines, out, depth = 0) {
    if (depth > MAX_DEPTH) {
      out.push(el("p", "", lines.join("\n")));
      return out;
    }
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (!line.trim()) {
        i++;
      } else if ((m = FENCE.exec(line))) {
        i = fence(lines, i, m, out);
      } else if ((m = HEADING.exec(line))) {
        out.push(inline(el("h" + m[1].length), m[2] || ""));
        i++;
      } else if (RULE.test(line)) {
        out.push(el("hr"));
        i++;
      } else if (QUOTE.test(line)) {
        const inner = [];
        while (i < lines.length && lines[i].trim() && (QUOTE.test(lines[i]) || !startsBlock(lines, i))) {
          inner.push(lines[i].replace(QUOTE, ""));
          i++;
        }
        const quote = el("blockquote");
        quote.append(...blocks(inner, [], depth + 1));
        out.push(quote);
      } else if (LIST.test(line)) {
        i = list(lines, i, out, depth);
      } else if (isTableStart(lines, i)) {
        i = table(lines, i, out);
      } else if (indentOf(line) >= 4) {
        const code = [];
        while (i < lines.length && (indentOf(lines[i]) >= 4 || !lines[i].trim())) code.push(lines[i++].slice(4));
        while (code.length && !code[code.length - 1].trim()) code.pop();
        out.push(codeBlock(code.join("\n"), ""));
      } else {
        const text = [line.trim()];
        for (i++; i < lines.length && lines[i].trim() && !startsBlock(lines, i, true); i++) text.push(lines[i].trim());
        out.push(inline(el("p"), text.join("\n")));
      }
    }
    return out;
  }

  function codeBlock(text, lang) {
    const box = el("div", "code-block");
    if (lang) box.appendChild(el("div", "code-lang", lang)); // the language is shown, never used as markup
    const pre = el("pre");
    pre.appendChild(el("code", "", text));
    box.appendChild(pre);
    return box;
  }

  function fence(lines, i, m, out) {
    const mark = m[1];
    const indent = indentOf(lines[i]);
    const code = [];
    let j = i + 1;
    // An unclosed fence runs to the end, as in CommonMark.
    for (; j < lines.length; j++) {
      const t = lines[j].trim();
      if (t.length >= mark.length && t === mark[0].repeat(t.length)) break;
      code.push(lines[j].slice(Math.min(indent, indentOf(lines[j]))));
    }
    out.push(codeBlock(code.join("\n"), m[2]));
    return j + 1;
  }

  function list(lines, i, out, depth) {
    const kind = (m) => /\d/.test(m[2]);
    const first = LIST.exec(lines[i]);
    const ordered = kind(first);
    const node = el(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
    let loose = false;
    for (;;) {
      const m = LIST.exec(lines[i]);
      const gap = m[3] || " ";
      const width = m[1].length + m[2].length + (gap.length > 4 ? 1 : gap.length); // where the item's text starts
      const item = [m[4] || ""];
      let j = i + 1;
      for (; j < lines.length; j++) {
        const line = lines[j];
        if (!line.trim()) {
          let k = j;
          while (k < lines.length && !lines[k].trim()) k++;
          if (k === lines.length || indentOf(lines[k]) < width) break;
          item.push("");
          loose = true;
        } else if (indentOf(line) >= width) {
          item.push(line.slice(width));
        } else if (!startsBlock(lines, j) && item[item.length - 1].trim()) {
          item.push(line.trim()); // a lazy continuation line
        } else {
          break;
        }
      }
      const li = el("li");
      li.append(...blocks(item, [], depth + 1));
      node.appendChild(li);
      let k = j;
      while (k < lines.length && !lines[k].trim()) k++;
      const next = k < lines.length && !RULE.test(lines[k]) ? LIST.exec(lines[k]) : null;
      if (!next || kind(next) !== ordered) {
        i = j;
        break;
      }
      if (k > j) loose = true; // items apart by blank lines still make one (loose) list
      i = k;
    }
    if (!loose) node.classList.add("tight");
    out.push(node);
    return i;
  }

  function table(lines, i, out) {
    const head = splitRow(lines[i]);
    const align = splitRow(lines[i + 1]).map((c) =>
      c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : "");
    const node = el("table");
    const row = (cells, tag) => {
      const tr = el("tr");
      head.forEach((_, n) => {
        const cell = inline(el(tag), cells[n] || "");
        if (align[n]) cell.className = "align-" + align[n];
        tr.appendChild(cell);
      });
      return tr;
    };
    node.appendChild(el("thead")).appendChild(row(head, "th"));
    const body = el("tbody");
    for (i += 2; i < lines.length && lines[i].trim() && !startsBlock(lines, i); i++) {
      body.appendChild(row(splitRow(lines[i]), "td"));
    }
    if (body.childNodes.length) node.appendChild(body);
    const wrap = el("div", "table-wrap"); // a wide table scrolls on its own instead of widening the page
    wrap.appendChild(node);
    out.push(wrap);
    return i;
  }

  // ---- inline ----

  const TICKS = /`+/y;
  const BARE_URL = /https?:\/\/[^\s<>`]+/y;
  const ANGLE_URL = /<(https?:\/\/[^\s<>]+)>/y;
  const WORD = /[\p{L}\p{N}]/u;
  const EMPHASIS = [["**", "strong"], ["__", "strong"], ["~~", "del"], ["*", "em"], ["_", "em"]];

  const at = (re, src, i) => {
    re.lastIndex = i;
    return re.exec(src);
  };

  // Where the code span opened by the backtick run at i ends (the index after it), or -1.
  function codeEnd(src, i, run) {
    for (let j = src.indexOf(run, i + run.length); j >= 0; j = src.indexOf(run, j + 1)) {
      const whole = at(TICKS, src, j)[0];
      if (whole.length === run.length && src[j - 1] !== "`") return j + run.length;
      j += whole.length - 1;
    }
    return -1;
  }

  // Where the emphasis `mark` opened before `from` closes, skipping code spans and escapes; -1 if it does not.
  function closing(src, from, mark) {
    for (let j = from; j < src.length; j++) {
      if (src[j] === "\\") {
        j++;
      } else if (src[j] === "`") {
        const run = at(TICKS, src, j)[0];
        const end = codeEnd(src, j, run);
        j = (end > 0 ? end : j + run.length) - 1;
      } else if (src.startsWith(mark, j) && j > from && /\S/.test(src[j - 1])) {
        const after = src[j + mark.length] || "";
        if (mark.length === 1 && (after === mark || src[j - 1] === mark)) continue; // part of ** or __
        if (mark[0] === "_" && WORD.test(after)) continue; // snake_case_names are not emphasis
        while (mark.length === 2 && src[j + 2] === mark[0]) j++; // ***both*** closes its ** last
        return j;
      }
    }
    return -1;
  }

  // The index of the bracket that closes the one at `from`, or -1. Looked for only so far ahead: "[[[[..." in a long
  // answer would otherwise cost a scan to the end per bracket.
  function matching(src, from, open, close) {
    let depth = 0;
    for (let j = from; j < Math.min(src.length, from + 2000); j++) {
      if (src[j] === "\\") j++;
      else if (src[j] === open) depth++;
      else if (src[j] === close && --depth === 0) return j;
    }
    return -1;
  }

  // The address when it is http(s), else null: javascript:, data:, relative or malformed ones never become links.
  function safeUrl(text) {
    try {
      const url = new URL(text.trim());
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  function link(href) {
    const a = el("a");
    a.href = href;
    a.title = href; // where it goes, shown on hover: the label may claim another address
    a.rel = "noopener noreferrer nofollow";
    a.target = "_blank";
    return a;
  }

  // A bare address ends before trailing punctuation; a ")" is kept only when it closes a "(" inside the address.
  function trimAddress(address) {
    const count = (c) => address.split(c).length - 1;
    for (;;) {
      const last = address[address.length - 1];
      if (!/[.,:;!?'"*_)\]]/.test(last) || (last === ")" && count("(") >= count(")"))) return address;
      address = address.slice(0, -1);
    }
  }

  // Appends the inline Markdown of `src` to `parent` (and returns it); all text goes in as text nodes.
  function inline(parent, src) {
    let text = "";
    const flush = () => {
      if (text) parent.appendChild(document.createTextNode(text));
      text = "";
    };
    const unclosed = new Set(); // marks with no closer left: later ones have none either (keeps this linear)
    let i = 0;
    outer: while (i < src.length) {
      const c = src[i];
      if (c === "\\" && PUNCT.includes(src[i + 1] || "")) {
        text += src[i + 1];
        i += 2;
        continue;
      }
      if (c === "`") {
        const run = at(TICKS, src, i)[0];
        const end = unclosed.has(run) ? -1 : codeEnd(src, i, run);
        if (end < 0) {
          unclosed.add(run);
          text += run;
          i += run.length;
          continue;
        }
        flush();
        let code = src.slice(i + run.length, end - run.length).replace(/\n/g, " ");
        if (/^ .*\S.* $/.test(code)) code = code.slice(1, -1);
        parent.appendChild(el("code", "", code));
        i = end;
        continue;
      }
      for (const [mark, tag] of EMPHASIS) {
        if (!src.startsWith(mark, i) || unclosed.has(mark) || !/\S/.test(src[i + mark.length] || "")) continue;
        if (mark[0] === "_" && WORD.test(src[i - 1] || "")) continue;
        if (src[i - 1] === mark[0] || (mark.length === 1 && src[i + 1] === mark)) continue; // in a longer run
        const end = closing(src, i + mark.length, mark);
        if (end < 0) {
          unclosed.add(mark);
          continue;
        }
        flush();
        parent.appendChild(inline(el(tag), src.slice(i + mark.length, end)));
        i = end + mark.length;
        continue outer;
      }
      const image = c === "!" && src[i + 1] === "[";
      if (c === "[" || image) {
        const open = i + (image ? 1 : 0);
        const close = matching(src, open, "[", "]");
        const paren = close > 0 && src[close + 1] === "(" ? matching(src, close + 1, "(", ")") : -1;
        if (paren > 0) {
          const label = src.slice(open + 1, close);
          const href = safeUrl(src.slice(close + 2, paren).trim().split(/\s+/)[0].replace(/^<(.*)>$/, "$1"));
          if (href) {
            flush(); // an image is never fetched: it shows as a link to its address
            parent.appendChild(inline(link(href), image ? "[image: " + label + "]" : label));
          } else {
            text += src.slice(i, paren + 1); // shown as the text it is
          }
          i = paren + 1;
          continue;
        }
      }
      const angle = c === "<" && at(ANGLE_URL, src, i);
      const bare = c === "h" && !WORD.test(src[i - 1] || "") && at(BARE_URL, src, i);
      const address = angle ? angle[1] : bare ? trimAddress(bare[0]) : "";
      const href = address && safeUrl(address);
      if (href) {
        flush();
        parent.appendChild(link(href)).textContent = address;
        i += angle ? angle[0].length : address.length;
        continue;
      }
      text += c;
      i++;
    }
    flush();
    return parent;
  }

  // Replaces the contents of `target` with the rendered Markdown of `source`.
  window.renderMarkdown = function (target, source) {
    const text = visible(String(source || ""));
    const lines = text.replace(/\r\n?/g, "\n").split("\n")
      .map((line) => line.replace(/^\t+/, (tabs) => "    ".repeat(tabs.length)));
    try {
      target.replaceChildren(...blocks(lines, []));
    } catch (e) {
      target.replaceChildren(el("p", "", text)); // nested past the stack's depth: shown as the plain text it is
    }
  };
})();
