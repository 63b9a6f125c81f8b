"""The console's static assets: one HTML page, its stylesheet and its script (no build step).

The page holds no message content: the script polls ``/console/state`` for
server-rendered, already escaped HTML (``bot.demo.render``) and posts commands,
clicks and alerts as JSON.  Text that the script itself shows (confirmation
dialogs) is set with ``textContent``, never parsed as HTML.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from bot.demo.alerts import DemoAlert
from bot.demo.workspace import Person

STYLE = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1d1c1d;
       display: grid; grid-template-columns: 220px 1fr 320px; grid-template-rows: 48px 1fr; height: 100vh; }
header { grid-column: 1 / 4; background: #3f0e40; color: #fff; display: flex; align-items: center; gap: 16px;
         padding: 0 16px; }
header h1 { font-size: 16px; margin: 0 16px 0 0; }
header label { font-size: 13px; }
header select, header button { font-size: 13px; }
nav { background: #4a154b; color: #e8dbe8; padding: 12px; }
nav .channel { font-weight: bold; color: #fff; }
nav p { font-size: 12px; }
main { display: flex; flex-direction: column; min-height: 0; }
#channel { flex: 1; overflow-y: auto; padding: 8px 16px; }
#composer { display: flex; gap: 8px; padding: 12px 16px; border-top: 1px solid #ddd; }
#composer input { flex: 1; padding: 8px; font: inherit; border: 1px solid #bbb; border-radius: 6px; }
aside { border-left: 1px solid #ddd; padding: 8px 12px; overflow-y: auto; background: #fafafa; font-size: 12px; }
aside h2 { font-size: 13px; margin: 8px 0 4px; }
aside table { border-collapse: collapse; width: 100%; }
aside td { padding: 2px 4px; border-bottom: 1px solid #eee; vertical-align: top; }
.ok { color: #007a5a; } .bad { color: #b3134a; } .new { background: #fff4c2; }
.message { padding: 6px 0; border-bottom: 1px solid #f0f0f0; }
.message .who { font-weight: bold; } .message .when { color: #616061; font-size: 12px; margin-left: 6px; }
.message.ephemeral { background: #f4f8ff; border-left: 3px solid #1264a3; padding-left: 8px; }
.only-you { color: #1264a3; font-size: 12px; }
.edited { color: #616061; font-size: 11px; }
.thread { margin: 4px 0 4px 24px; border-left: 2px solid #ddd; padding-left: 10px; }
.thread-count { color: #1264a3; font-size: 12px; font-weight: bold; }
.bk-header { font-size: 17px; font-weight: bold; margin: 4px 0; }
.bk-section, .bk-context, .bk-actions { margin: 4px 0; }
.bk-context { color: #616061; font-size: 12px; } .bk-context span { margin-right: 8px; }
.bk-fields { display: grid; grid-template-columns: 1fr 1fr; gap: 4px 16px; }
.bk-divider { border: 0; border-top: 1px solid #ddd; margin: 6px 0; }
.bk-button { margin: 2px 6px 2px 0; padding: 4px 12px; border-radius: 4px; border: 1px solid #bbb; background: #fff;
             cursor: pointer; font-weight: bold; }
.bk-button.primary { background: #007a5a; color: #fff; border-color: #007a5a; }
.bk-button.danger { background: #b3134a; color: #fff; border-color: #b3134a; }
pre { background: #f8f8f8; border: 1px solid #e1e1e1; padding: 6px; white-space: pre-wrap; font-size: 12px; }
code { background: #f3f3f3; color: #c01343; padding: 0 3px; border-radius: 3px; }
.mention { background: #e8f5fa; color: #1264a3; }
.file { border: 1px solid #ddd; border-radius: 6px; padding: 4px 8px; margin: 4px 0; }
.file.image img { display: block; max-width: 100%; height: auto; }
.file.image figcaption { font-size: 12px; color: #555; }
#dialog { position: fixed; inset: 0; background: rgba(0,0,0,.4); display: none; align-items: center;
          justify-content: center; }
#dialog.open { display: flex; }
#dialog .box { background: #fff; border-radius: 8px; padding: 16px 20px; width: min(420px, 92vw); }
#dialog h3 { margin: 0 0 8px; } #dialog .buttons { text-align: right; margin-top: 16px; }
#status { font-size: 12px; }
.emoji { font-weight: bold; } .emoji.red { color: #b3134a; } .emoji.orange { color: #9a4a00; }
.emoji.yellow { color: #7a5a00; } .emoji.blue { color: #1264a3; } .emoji.green { color: #007a5a; }
.emoji.grey { color: #616061; }
/* Accessibility (issue 27): text at WCAG AA contrast (4.5:1; the greys are #616061, 6:1 on white), a visible
   focus ring, text that wraps instead of scrolling sideways, and one column on a narrow screen. */
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
:focus-visible { outline: 3px solid #1264a3; outline-offset: 2px; }
.message, .bk-section, .bk-context, code { overflow-wrap: anywhere; }
pre { overflow-x: auto; }
@media (max-width: 700px) {
  body { grid-template-columns: minmax(0, 1fr); grid-template-rows: auto auto minmax(60vh, 1fr) auto;
         height: auto; min-height: 100vh; }
  header { grid-column: 1; flex-wrap: wrap; gap: 8px; padding: 8px; }
  header label { display: flex; gap: 4px; align-items: center; max-width: 100%; }
  header select { flex: 1; min-width: 0; max-width: 100%; }
  nav { padding: 8px; } nav p { display: none; }
  aside { border-left: 0; border-top: 1px solid #ddd; }
  .bk-fields { grid-template-columns: 1fr; }
}
"""


SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
let shownVersion = null;
let pendingAction = null;

function user() { return $("user").value; }

async function postJSON(path, body) {
  const answer = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                    body: JSON.stringify(body)});
  const data = await answer.json().catch(() => ({}));
  $("status").textContent = answer.ok ? "" : (data.error || ("HTTP " + answer.status));
  return data;
}

function focusKey(element) {
  // What identifies a focused button across a re-render: its message and its action.
  if (!element || !element.dataset) return null;
  return {ts: element.dataset.ts, action: element.dataset.action};
}

function refocus(key, within) {
  if (!key || !key.ts || !key.action) return;
  for (const candidate of within.querySelectorAll(".bk-button")) {
    if (candidate.dataset.ts === key.ts && candidate.dataset.action === key.action) { candidate.focus(); return; }
  }
}

function announce(text) {
  // A polite live region: screen readers read new messages without moving focus.
  $("live").textContent = text.slice(0, 300);
}

function patchChannel(box, html) {
  // Only messages that changed are replaced, so focus, open files and the reader's place survive an update.
  const next = document.createElement("div");
  next.innerHTML = html;   // server-rendered, every value escaped
  const old = new Map();
  for (const element of box.children) old.set(element.dataset.ts || element.outerHTML, element);
  const focused = focusKey(document.activeElement);
  let previous = null;
  const added = [];
  for (const element of [...next.children]) {
    const key = element.dataset.ts || element.outerHTML;
    const current = old.get(key);
    old.delete(key);
    if (current && current.outerHTML === element.outerHTML) { previous = current; continue; }
    if (current) {
      const hadFocus = current.contains(document.activeElement);
      const before = current.querySelectorAll(".message").length;
      current.replaceWith(element);
      if (hadFocus) refocus(focused, element);
      const replies = element.querySelectorAll(".message");
      if (replies.length > before) added.push(replies[replies.length - 1]);
    } else {
      if (previous) previous.after(element); else box.prepend(element);
      added.push(element);
    }
    previous = element;
  }
  for (const gone of old.values()) gone.remove();
  if (added.length) {
    const last = added[added.length - 1];
    const who = last.querySelector(".who");
    const body = last.querySelector(".body");
    announce((who ? who.textContent + ": " : "") + (body ? body.textContent : ""));
  }
}

async function refresh() {
  try {
    const answer = await fetch("/console/state?user=" + encodeURIComponent(user()));
    const state = await answer.json();
    const key = state.version + "/" + state.user;
    if (key !== shownVersion) {
      const box = $("channel");
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      if (shownVersion === null || box.dataset.user !== state.user) box.innerHTML = state.channel;  // another view
      else patchChannel(box, state.channel);
      box.dataset.user = state.user;   // whose view this is (tests wait for it after switching)
      if (atBottom || shownVersion === null) box.scrollTop = box.scrollHeight;
      shownVersion = key;
    }
    if ($("cluster").innerHTML !== state.cluster) $("cluster").innerHTML = state.cluster;
  } catch (e) {
    $("status").textContent = "console not reachable";
  }
}

let opener = null;

function openDialog(confirm, action) {
  pendingAction = action;
  opener = document.activeElement;
  $("dialog-title").textContent = confirm.title || "Are you sure?";
  $("dialog-text").textContent = confirm.text || "";
  $("dialog-confirm").textContent = confirm.confirm || "Confirm";
  $("dialog-deny").textContent = confirm.deny || "Cancel";
  $("dialog").classList.add("open");
  $("dialog-deny").focus();   // focus moves into the dialog, onto the safe choice
}

function closeDialog() {
  $("dialog").classList.remove("open");
  pendingAction = null;
  if (opener && opener.isConnected) opener.focus();   // back where the person was
  opener = null;
}

$("dialog").addEventListener("keydown", (event) => {
  if (event.key === "Escape") { event.preventDefault(); closeDialog(); return; }
  if (event.key !== "Tab") return;
  // A modal dialog keeps focus inside: Tab and Shift+Tab cycle between its two buttons.
  const first = $("dialog-deny"), last = $("dialog-confirm");
  if (event.shiftKey && document.activeElement === first) { event.preventDefault(); last.focus(); }
  else if (!event.shiftKey && document.activeElement === last) { event.preventDefault(); first.focus(); }
});

async function click(action) {
  await postJSON("/console/click", {user: user(), ts: action.ts, action: action.action});
  refresh();
}

document.addEventListener("click", (event) => {
  const button = event.target.closest(".bk-button");
  if (!button) return;
  const action = {ts: button.dataset.ts, action: JSON.parse(button.dataset.action)};
  if (button.dataset.confirm) openDialog(JSON.parse(button.dataset.confirm), action);
  else click(action);
});

$("dialog-confirm").addEventListener("click", () => { const a = pendingAction; closeDialog(); if (a) click(a); });
$("dialog-deny").addEventListener("click", closeDialog);

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("command").value.trim();
  if (!text) return;
  $("command").value = "";
  await postJSON("/console/command", {user: user(), text: text});
  refresh();
});

$("fire").addEventListener("click", async () => {
  const [key, state] = $("alert").value.split("|");
  await postJSON("/console/alert", {key: key, state: state});
  refresh();
});

$("user").addEventListener("change", () => { shownVersion = null; refresh(); });
refresh();
setInterval(refresh, 700);
"""


def page(people: Iterable[Person], alerts: Iterable[DemoAlert], channel_name: str) -> str:
    """The console's HTML; every name in it is escaped (they are the demo's own, but a habit is a habit)."""
    options = "".join(
        f'<option value="{html.escape(p.id, quote=True)}">{html.escape(p.name)}'
        f'{" (approver)" if p.approver else ""}</option>' for p in people)
    alert_options = "".join(
        f'<option value="{html.escape(a.key, quote=True)}|{state}">{html.escape(a.name)} \u2014 {state}'
        f'{html.escape(_where(a))}</option>'
        for a in alerts for state in ("firing", "resolved"))
    name = html.escape(channel_name)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>meshbot demo \u2014 #{name}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/console.css"></head>
<body>
<header><h1>meshbot demo</h1>
<label>You are <select id="user">{options}</select></label>
<label>Alertmanager: <select id="alert">{alert_options}</select></label>
<button id="fire" type="button">Send alert</button>
<span id="status" role="status"></span></header>
<nav aria-label="Channels"><div class="channel"># {name}</div>
<p>An embedded Slack workspace. The bot is the real meshbot; the cluster is the bundled 3&nbsp;AM outage
in an embedded Kubernetes API. Send an alert, type <code>/mesh help</code>, switch users to approve.</p></nav>
<main><div id="channel" aria-label="Messages in #{name}" role="region"></div>
<div id="live" class="sr-only" aria-live="polite" aria-atomic="true"></div>
<form id="composer" autocomplete="off"><label class="sr-only" for="command">Message #{name}</label>
<input id="command" placeholder="/mesh diagnose prod" maxlength="3000">
<button id="send" type="submit">Send</button></form></main>
<aside aria-label="Cluster"><div id="cluster"></div></aside>
<div id="dialog" role="dialog" aria-modal="true" aria-labelledby="dialog-title" aria-describedby="dialog-text">
<div class="box"><h3 id="dialog-title"></h3><p id="dialog-text"></p>
<div class="buttons"><button id="dialog-deny" type="button"></button>
<button id="dialog-confirm" class="bk-button primary" type="button"></button></div></div></div>
<script src="/console.js"></script></body></html>"""


def _where(alert: DemoAlert) -> str:
    place = alert.labels.get("pod") or alert.labels.get("destination_service_name") or alert.labels.get("namespace")
    return f" ({place})" if place else ""
