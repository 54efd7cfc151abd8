"use strict";
// The chat page: conversations kept on the server, replies read as Server-Sent Events and shown as
// Markdown (render.js) as they grow. A reply being written follows the conversation, not the tab.
const log = document.getElementById("log");
const notice = document.getElementById("notice");
const form = document.getElementById("composer");
const box = document.getElementById("message");
const sendButton = document.getElementById("send");
const stopButton = document.getElementById("stop");
const keyBox = document.getElementById("apikey");
const heading = document.getElementById("title");
const list = document.getElementById("conversations");
const listStatus = document.getElementById("list-status");
const moreButton = document.getElementById("more");
const menuButton = document.getElementById("menu");
const announcer = document.getElementById("announce");
const PAGE_SIZE = 20;
const LIST_RECHECK_MS = 3000;  // how often the list is read again while it shows a reply being written
const RESUME_TRIES = 5;  // reconnections to a reply being written before giving up on it
const NOTES = {stopped: "Stopped.", error: "Failed.", interrupted: "Interrupted."};

let current = null;  // the open conversation's id (also in the URL as ?c=<id>)
let controller = null;  // the reply being read, while there is one
let loads = 0;  // numbers each load of a conversation, so a slow, outdated answer is dropped
let listRecheck = null;
let nextPage = null;

keyBox.value = sessionStorage.getItem("apiKey") || "";

// ---- talking to the server ----

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** fetch() with the API key and JSON body; a non-2xx answer throws its error sentence. */
async function api(path, {method = "GET", body, headers = {}, signal} = {}) {
  const options = {method, headers: {...headers}, signal};
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const key = keyBox.value.trim();
  if (key) options.headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("The server could not be reached.", 0);
  }
  if (!response.ok) {
    let sentence = `The server answered HTTP ${response.status}.`;
    try { sentence = (await response.json()).error || sentence; } catch (_) {}
    throw new ApiError(sentence, response.status);
  }
  return response;
}

/** The events of a Server-Sent Events body, parsed as JSON, as they arrive; `seen.id` follows the
 *  last `id:` the body gave (a conversation's reply numbers its events, to resume after one). */
async function* readEvents(stream, seen = {}) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {done, value} = await reader.read();
    buffer += done ? decoder.decode() : decoder.decode(value, {stream: true});
    // A CR at the end may be half of a CRLF whose LF is still on its way.
    const held = !done && buffer.endsWith("\r") ? "\r" : "";
    if (held) buffer = buffer.slice(0, -1);
    buffer = buffer.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const data = [];
      let id = null;
      for (const line of buffer.slice(0, end).split("\n")) {
        if (line === "data" || line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        else if (line.startsWith("id:")) id = line.slice(3).replace(/^ /, "");
      }
      buffer = buffer.slice(end + 2);
      if (data.length) {  // comments (": ping") carry no data
        const event = JSON.parse(data.join("\n"));
        if (id !== null) seen.id = id;
        yield event;
      }
    }
    buffer += held;
    if (done) return;
  }
}

// ---- the URL ----

function idFromUrl() {
  return new URLSearchParams(location.search).get("c");
}

function showInUrl(id, replace) {
  const url = id === null ? location.pathname : `${location.pathname}?c=${encodeURIComponent(id)}`;
  if (url === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
}

// ---- drawing ----

function bubble(role, text) {
  const element = document.createElement("div");
  element.className = `turn ${role}`;
  const body = document.createElement("div");
  body.className = "text";
  if (role === "user") body.textContent = text;  // what the user wrote is shown as written
  else if (text) body.append(renderMarkdown(text));
  element.append(body);
  log.append(element);
  log.scrollTop = log.scrollHeight;
  return element;
}

/** After a reply grew: keep the newest text in view, unless the reader scrolled up to read. */
let following = true;
log.addEventListener("scroll", () => {
  following = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
});
function keepInView() {
  if (following) log.scrollTop = log.scrollHeight;
}

/** Tell a screen reader, once, how a reply ended. */
function announce(sentence) {
  announcer.textContent = "";
  setTimeout(() => { announcer.textContent = sentence; }, 50);  // a change it will read out
}

const ENDINGS = {complete: "The reply is complete.", stopped: "The reply was stopped.",
  error: "The reply failed.", interrupted: "The reply was interrupted."};

function note(element, className, text) {
  const line = document.createElement("span");
  line.className = className;
  line.textContent = text;
  element.append(line);
}

function showTitle(title) {
  heading.textContent = title || "AI Chat";
  document.title = title ? `${title} · AI Chat` : "AI Chat";
}

function clearLog() {
  for (const turn of log.querySelectorAll(".turn")) turn.remove();
  notice.hidden = true;
}

function showNotice(sentence, offerNew) {
  clearLog();
  notice.querySelector("p").textContent = sentence;
  document.getElementById("notice-new").hidden = !offerNew;
  notice.hidden = false;
}

function busy(on) {
  sendButton.disabled = on;
  stopButton.disabled = !on;
}

function showList(open) {
  document.body.classList.toggle("list-open", open);
  menuButton.setAttribute("aria-expanded", String(open));
}

// ---- the list of conversations ----

function listItem(conversation) {
  const item = document.createElement("li");
  item.dataset.id = conversation.id;
  const title = conversation.title || "Untitled";
  const link = document.createElement("a");
  link.href = `?c=${encodeURIComponent(conversation.id)}`;
  link.textContent = title;
  link.title = title;
  const rename = document.createElement("button");
  rename.type = "button";
  rename.className = "plain rename";
  rename.textContent = "✎";
  rename.setAttribute("aria-label", `Rename ${title}`);
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "plain delete";
  remove.textContent = "×";
  remove.setAttribute("aria-label", `Delete ${title}`);
  link.addEventListener("click", (event) => {
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;  // a new tab
    event.preventDefault();
    showList(false);
    openConversation(conversation.id);
  });
  rename.addEventListener("click", () => startRename(item, link, conversation));
  remove.addEventListener("click", () => removeConversation(conversation.id, title));
  item.append(link, rename, remove);
  if (conversation.streaming) {
    const live = document.createElement("span");
    live.className = "live";
    live.textContent = "●";
    live.title = "A reply is being written";
    live.setAttribute("role", "img");
    live.setAttribute("aria-label", "A reply is being written");
    link.prepend(live);
  }
  if (conversation.id === current) item.setAttribute("aria-current", "page");
  return item;
}

function showListStatus(sentence, isError) {
  listStatus.textContent = sentence;
  listStatus.classList.toggle("error", isError);
  listStatus.hidden = !sentence;
}

/** Load the newest conversations (or, with `more`, the next page) into the side list. */
async function refreshList(more = false) {
  const query = new URLSearchParams({limit: PAGE_SIZE});
  if (more && nextPage) query.set("before", nextPage);
  try {
    const page = await (await api(`/api/conversations?${query}`)).json();
    if (!more) list.replaceChildren();
    for (const conversation of page.conversations) {
      list.append(listItem(conversation));
      if (conversation.id === current) showTitle(conversation.title);  // a new one gets its title
    }
    nextPage = page.next;
    moreButton.hidden = !nextPage;
    showListStatus(list.children.length ? "" : "No conversations yet.", false);
    // A reply being written somewhere: look again until it has ended, to take its mark off.
    clearTimeout(listRecheck);
    if (list.querySelector(".live")) listRecheck = setTimeout(() => refreshList(), LIST_RECHECK_MS);
  } catch (error) {
    showListStatus(error.message, true);
  }
}

function markOpen() {
  for (const item of list.children) {
    if (item.dataset.id === current) item.setAttribute("aria-current", "page");
    else item.removeAttribute("aria-current");
  }
}

function startRename(item, link, conversation) {
  const input = document.createElement("input");
  input.value = conversation.title || "";
  input.maxLength = 200;
  input.setAttribute("aria-label", "New title");
  link.replaceWith(input);
  input.focus();
  input.select();
  let finished = false;
  const finish = async (save) => {
    if (finished) return;
    finished = true;
    const title = input.value.trim();
    if (!save || !title || title === conversation.title) {
      input.replaceWith(link);
      return;
    }
    try {
      await api(`/api/conversations/${encodeURIComponent(conversation.id)}`, {method: "PATCH", body: {title}});
      if (conversation.id === current) showTitle(title);
      showListStatus("", false);
    } catch (error) {
      showListStatus(error.message, true);
    }
    await refreshList();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.isComposing) { event.preventDefault(); finish(true); }
    if (event.key === "Escape") { event.preventDefault(); finish(false); }
  });
  input.addEventListener("blur", () => finish(true));
}

async function removeConversation(id, title) {
  if (!confirm(`Delete “${title}” and all its messages?`)) return;
  try {
    await api(`/api/conversations/${encodeURIComponent(id)}`, {method: "DELETE"});
  } catch (error) {
    showListStatus(error.message, true);
    return;
  }
  if (id === current) newChat(true);
  await refreshList();
}

// ---- opening a conversation ----

function leaveConversation(id) {
  if (controller) controller.abort();  // only this page stops reading: the server writes the reply on
  current = id;
  loads += 1;
  clearLog();
  markOpen();
}

function newChat(replace = false) {
  leaveConversation(null);
  showInUrl(null, replace);
  showTitle(null);
  showList(false);
  box.focus();
}

function drawMessage(message) {
  const element = bubble(message.role === "user" ? "user" : "assistant", message.content);
  if (message.role !== "user") {
    element.dataset.status = message.status;
    if (NOTES[message.status]) note(element, "error", NOTES[message.status]);
  }
  return element;
}

/** Show a stored conversation (from the list or the URL); a reply being written in it is followed. */
async function openConversation(id, {push = true} = {}) {
  leaveConversation(id);
  if (push !== null) showInUrl(id, !push);
  const load = loads;
  let conversation;
  try {
    conversation = await (await api(`/api/conversations/${encodeURIComponent(id)}`)).json();
  } catch (error) {
    if (load !== loads) return;
    if (error.status === 404) current = null;  // a message sent now starts a new conversation
    showTitle(null);
    showNotice(error.message, error.status === 404);
    return;
  }
  if (load !== loads) return;
  clearLog();
  showTitle(conversation.title);
  const last = conversation.messages[conversation.messages.length - 1];
  for (const message of conversation.messages) {
    if (message !== last || message.status !== "streaming") drawMessage(message);
  }
  // A reply still being written (in another tab, on another device, or before a reload) is shown
  // from its start and followed to its end.
  if (last && last.status === "streaming") follow(id, null);
}

// ---- a reply as it is written ----

/** Show a reply growing in its bubble, from the server's events. */
class ReplyView {
  constructor(element) {
    this.element = element;
    this.text = element.querySelector(".text");
    this.markdown = new MarkdownView(this.text, keepInView);
    this.received = "";
    this.thinking = null;
    this.started = performance.now();
    this.firstToken = null;
    this.seen = {};  // the id of the last event shown, to resume after it
    this.messageId = null;  // the stored reply this is
  }

  /** Read the events of one response into the bubble: "done", "error", or "cut" if it broke off. */
  async read(response) {
    this.element.dataset.status = "streaming";
    for await (const event of readEvents(response.body, this.seen)) {
      if (event.type === "metadata") {
        this.messageId = event.message_id;
        refreshList();  // the conversation moves to the top, with its title
      } else if (event.type === "token") {
        if (this.firstToken === null) this.firstToken = performance.now() - this.started;
        this.received += event.content;
        this.markdown.update(this.received);
      } else if (event.type === "reasoning") {
        this.think(event.content);
      } else if (event.type === "done") {
        this.settle();  // the whole text before the status that says it ended
        this.element.dataset.status = event.status || "complete";
        if (event.status === "stopped") note(this.element, "error", NOTES.stopped);
        return "done";
      } else if (event.type === "error") {
        this.settle();
        this.element.dataset.status = event.status === "interrupted" ? "interrupted" : "error";
        note(this.element, "error", event.message || "The reply failed.");
        return "error";
      }
    }
    return "cut";
  }

  think(content) {
    if (!this.thinking) {
      this.thinking = document.createElement("details");
      this.thinking.className = "thinking";
      const summary = document.createElement("summary");
      summary.textContent = "Thinking";
      this.thinking.append(summary, document.createElement("div"));
      this.element.prepend(this.thinking);
    }
    this.thinking.lastChild.textContent += content;
  }

  /** The reply's text is all there: render what is left of it now. */
  settle() {
    this.markdown.finish(this.received);
  }

  fail(message, status = "error") {
    this.element.dataset.status = status;
    note(this.element, "error", message);
  }

  timings() {
    const total = performance.now() - this.started;
    const ttft = this.firstToken === null ? "–" : `${Math.round(this.firstToken)} ms`;
    note(this.element, "meta", `first token ${ttft} · total ${Math.round(total)} ms`);
    log.scrollTop = log.scrollHeight;
  }
}

/** Read a reply to its end: from `response` (the turn's own stream) or, with none, by attaching to
 *  the conversation's reply; a broken connection is picked up where it broke. */
async function readReply(id, view, response, signal) {
  const attached = response === null;  // following a reply found being written: the newest one
  for (let tries = 0; ; tries++) {
    if (response !== null) {
      let ended;
      try {
        ended = await view.read(response);
      } catch (error) {
        if (error.name === "AbortError") throw error;
        ended = "cut";  // the network dropped mid-way
      }
      if (ended !== "cut") return;
      if (tries >= RESUME_TRIES) throw new ApiError("The connection broke before the reply was complete.", 200);
      await new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** tries, 4000)));
    }
    const headers = {Accept: "text/event-stream"};
    if (view.seen.id !== undefined) headers["Last-Event-ID"] = view.seen.id;
    // Event ids count within one reply: naming it keeps a newer reply from being taken for it.
    const query = view.messageId ? `?reply=${encodeURIComponent(view.messageId)}` : "";
    try {
      response = await api(`/api/conversations/${encodeURIComponent(id)}/stream${query}`, {headers, signal});
    } catch (error) {
      if (error.name === "AbortError" || error.status !== 0 || tries >= RESUME_TRIES) throw error;
      response = null;  // unreachable for now: try again
      await new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** tries, 4000)));
      continue;
    }
    if (response.status === 204) {
      // Nothing more is being written: the stored reply says how it ended.
      const conversation = await (await api(`/api/conversations/${encodeURIComponent(id)}`, {signal})).json();
      const replies = conversation.messages.filter((message) => message.role === "assistant");
      const stored = replies.find((message) => message.id === view.messageId)
        || (attached && view.messageId === null ? replies[replies.length - 1] : undefined);
      if (!stored) throw new ApiError("The connection broke before the reply was complete.", 200);
      view.received = stored.content;
      view.markdown = new MarkdownView(view.text, keepInView);
      view.settle();
      view.element.dataset.status = stored.status;
      if (NOTES[stored.status]) note(view.element, "error", NOTES[stored.status]);
      return;
    }
  }
}

/** Follow the reply being written in conversation `id` (`view`: the bubble it goes in, else a new one). */
async function follow(id, view) {
  view = view || new ReplyView(bubble("assistant", ""));
  controller = new AbortController();
  const signal = controller.signal;
  busy(true);
  try {
    await readReply(id, view, null, signal);
  } catch (error) {
    if (error.name !== "AbortError") view.fail(error.message);
  } finally {
    finish(view, signal);
  }
}

/** After a reply: its timings, and the page ready for the next message. */
function finish(view, signal) {
  if (signal.aborted) return;  // the page moved on to another conversation
  view.settle();
  view.timings();
  announce(ENDINGS[view.element.dataset.status] || ENDINGS.error);
  if (controller && controller.signal === signal) {
    controller = null;
    busy(false);
    refreshList();
    box.focus();
  }
}

/** Ask the server to stop the reply being written in the open conversation, wherever it runs. */
async function stopReply() {
  if (current === null || !controller) return;
  stopButton.disabled = true;
  try {
    await api(`/api/conversations/${encodeURIComponent(current)}/stop`, {method: "POST"});
  } catch (error) {
    stopButton.disabled = false;
    showListStatus(error.message, true);
  }
  // The reply's own stream ends with it, marked as stopped.
}

// ---- sending a message ----

async function send(message) {
  notice.hidden = true;
  bubble("user", message);
  const view = new ReplyView(bubble("assistant", ""));
  view.element.dataset.status = "waiting";
  controller = new AbortController();
  const signal = controller.signal;
  loads += 1;  // a load still on its way would redraw the log over this turn
  busy(true);
  try {
    if (current === null) {
      const conversation = await (await api("/api/conversations", {method: "POST", body: {}, signal})).json();
      current = conversation.id;
      showInUrl(current, true);
    }
    const id = current;
    const response = await api("/api/chat/stream", {
      method: "POST",
      headers: {Accept: "text/event-stream"},
      body: {conversation_id: id, message},
      signal,
    });
    await readReply(id, view, response, signal);
  } catch (error) {
    if (error.name !== "AbortError") view.fail(error.message);
  } finally {
    finish(view, signal);
  }
}

// ---- wiring ----

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const message = box.value;
  if (!message.trim() || controller) return;
  box.value = "";
  send(message);
});

box.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

stopButton.addEventListener("click", stopReply);
document.getElementById("new-chat").addEventListener("click", () => newChat());
document.getElementById("notice-new").addEventListener("click", () => newChat());
moreButton.addEventListener("click", () => refreshList(true));
menuButton.addEventListener("click", () => showList(!document.body.classList.contains("list-open")));
// Escape closes the side list if it is open, else stops the reply being written.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.defaultPrevented) return;
  if (document.body.classList.contains("list-open")) showList(false);
  else if (controller && !stopButton.disabled) stopReply();
});
document.querySelector(".chat").addEventListener("click", (event) => {
  if (!menuButton.contains(event.target)) showList(false);
});

keyBox.addEventListener("change", () => {
  sessionStorage.setItem("apiKey", keyBox.value.trim());
  refreshList();
  if (current !== null && !controller && !log.querySelector(".turn")) openConversation(current, {push: null});
});

window.addEventListener("popstate", () => {
  const id = idFromUrl();
  if (id === null) newChat(true);
  else openConversation(id, {push: null});
});

refreshList();
if (idFromUrl() !== null) openConversation(idFromUrl(), {push: null});
