"use strict";
// A reply's Markdown made into elements that can do nothing but show text: markdown-it parses it with
// raw HTML off (written as text, never as markup), DOMPurify keeps only the elements and attributes
// listed below, links open in a new tab and only http, https and mailto survive, and no image is
// made (one from another host would be a request the page does not allow).
//
// A reply grows by deltas, up to tens of thousands of them: blocks that are over (ended by a blank
// line outside a code fence) are rendered once and kept; only the block still being written is
// rendered again, at most once per animation frame. A code fence still open, or a table still
// coming, shows as text until it is whole, so nothing half-drawn jumps about.

const markdown = window.markdownit({html: false, linkify: true, breaks: true});
markdown.disable("image");
markdown.validateLink = (url) => /^(https?:|mailto:)/i.test(url.trim());
// Table cells' alignment as a class: the page's Content-Security-Policy allows no inline style.
for (const rule of ["th_open", "td_open"]) {
  markdown.renderer.rules[rule] = (tokens, index, options, env, self) => {
    const token = tokens[index];
    const style = token.attrGet("style");
    if (style) {
      token.attrs = token.attrs.filter(([name]) => name !== "style");
      token.attrJoin("class", `align-${style.split(":")[1]}`);
    }
    return self.renderToken(tokens, index, options);
  };
}

const SANITIZE = {
  ALLOWED_TAGS: ["p", "br", "strong", "em", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td", "a"],
  ALLOWED_ATTR: ["href", "class", "start"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  RETURN_DOM_FRAGMENT: true,
};
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
  if (node.hasAttribute("class") && !/^(language-[\w+#.-]+|align-(left|center|right))$/.test(node.getAttribute("class"))) {
    node.removeAttribute("class");  // only the classes the parser gives
  }
});

const FENCE = /^ {0,3}(`{3,}|~{3,})(.*)$/;

/** Markdown made safe, as a fragment: code blocks with their language and a Copy button. */
function renderMarkdown(text) {
  const fragment = DOMPurify.sanitize(markdown.render(text), SANITIZE);
  for (const code of fragment.querySelectorAll("pre > code")) decorateCode(code);
  return fragment;
}

function decorateCode(code) {
  const pre = code.parentElement;
  const box = document.createElement("div");
  box.className = "code";
  const head = document.createElement("div");
  head.className = "code-head";
  const language = document.createElement("span");
  const named = /^language-(.+)$/.exec(code.getAttribute("class") || "");
  language.textContent = named ? named[1] : "text";
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "plain copy";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", `Copy the ${language.textContent} code`);
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(code.textContent);
      copy.textContent = "Copied";
    } catch (_) {
      copy.textContent = "Copy failed";
    }
    setTimeout(() => { copy.textContent = "Copy"; }, 1500);
  });
  head.append(language, copy);
  pre.replaceWith(box);
  box.append(head, pre);
}

/** Where the blocks that are over end in `text` (from `from`, outside any fence), and whether the
 *  text ends inside a code fence (and where that fence began). */
function blocks(text, from) {
  let settled = from;
  let fence = null;  // the open fence's marker, and where its line starts
  let at = from;
  while (at < text.length) {
    let end = text.indexOf("\n", at);
    if (end < 0) end = text.length;
    const line = text.slice(at, end);
    const marker = FENCE.exec(line);
    if (fence === null && marker) {
      fence = {mark: marker[1], start: at};
    } else if (fence !== null && marker && marker[1][0] === fence.mark[0]
      && marker[1].length >= fence.mark.length && !marker[2].trim()) {
      fence = null;
    } else if (fence === null && !line.trim() && end < text.length) {
      settled = end + 1;  // a blank line outside a fence: what comes before it is over
    }
    at = end + 1;
  }
  return {settled, fence};
}

/** A reply's text shown as it grows: call `update(text)` as often as deltas come, `finish(text)`
 *  at the end; `drawn` is called after each drawing, at most once a frame. */
class MarkdownView {
  constructor(element, drawn = () => {}) {
    this.element = element;
    this.drawn = drawn;  // called after each drawing (the page keeps the newest text in view)
    this.done = document.createElement("div");  // blocks that are over, rendered once
    this.live = document.createElement("div");  // the block still being written
    this.done.className = this.live.className = "blocks";
    this.element.replaceChildren(this.done, this.live);
    this.settled = 0;
    this.text = "";
    this.frame = 0;
    this.finished = null;  // the text finish() drew last: drawn once however often it is called
    this.frames = 0;  // renders done (for the page's tests and its figures)
    this.renderMs = 0;
    this.longestMs = 0;
    element.markdownView = this;
  }

  update(text) {
    this.text = text;
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render(false));
  }

  finish(text) {
    if (text === this.finished && text === this.text && !this.frame) return;
    this.text = this.finished = text;
    if (this.frame) cancelAnimationFrame(this.frame);
    this.render(true);
  }

  render(final) {
    this.frame = 0;
    const started = performance.now();
    const text = this.text;
    const {settled, fence} = final ? {settled: text.length, fence: null} : blocks(text, this.settled);
    if (settled > this.settled) {
      const chunk = document.createElement("div");
      chunk.className = "chunk";  // drawn once; off screen, the browser skips its layout
      chunk.append(renderMarkdown(text.slice(this.settled, settled)));
      this.done.append(chunk);
      this.settled = settled;
    }
    const tail = text.slice(this.settled);
    const parts = [];
    if (fence) {
      // A code fence still open: its code as plain text until the fence closes.
      parts.push(renderMarkdown(text.slice(this.settled, fence.start)));
      const pre = document.createElement("pre");
      pre.className = "pending";
      pre.textContent = text.slice(text.indexOf("\n", fence.start) + 1 || text.length);
      parts.push(pre);
    } else if (!final && /(^|\n) {0,3}\|[^\n]*$/.test(tail) && /^ {0,3}\|/m.test(tail)) {
      // A table still coming: its lines as text until a blank line ends it.
      const start = tail.search(/(^|\n) {0,3}\|/);
      const table = start <= 0 ? 0 : start + 1;
      parts.push(renderMarkdown(tail.slice(0, table)));
      const pending = document.createElement("p");
      pending.className = "pending";
      pending.textContent = tail.slice(table);
      parts.push(pending);
    } else if (tail) {
      parts.push(renderMarkdown(tail));
    }
    this.live.replaceChildren(...parts);
    const spent = performance.now() - started;
    this.frames += 1;
    this.renderMs += spent;
    this.longestMs = Math.max(this.longestMs, spent);
    this.element.dataset.frames = this.frames;  // how often it was drawn (the page's tests read it)
    this.drawn();
  }
}

window.MarkdownView = MarkdownView;
window.renderMarkdown = renderMarkdown;
