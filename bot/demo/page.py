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
header label { font-size: 13px; opacity: .9; }
header select, header button { font-size: 13px; }
nav { background: #4a154b; color: #e8dbe8; padding: 12px; }
nav .channel { font-weight: bold; color: #fff; }
nav p { font-size: 12px; opacity: .85; }
main { display: flex; flex-direction: column; min-height: 0; }
#channel { flex: 1; overflow-y: auto; padding: 8px 16px; }
#composer { display: flex; gap: 8px; padding: 12px 16px; border-top: 1px solid #ddd; }
#composer input { flex: 1; padding: 8px; font: inherit; border: 1px solid #bbb; border-radius: 6px; }
aside { border-left: 1px solid #ddd; padding: 8px 12px; overflow-y: auto; background: #fafafa; font-size: 12px; }
aside h2 { font-size: 13px; margin: 8px 0 4px; }
aside table { border-collapse: collapse; width: 100%; }
aside td { padding: 2px 4px; border-bottom: 1px solid #eee; vertical-align: top; }
.ok { color: #007a5a; } .bad { color: #e01e5a; } .new { background: #fff4c2; }
.message { padding: 6px 0; border-bottom: 1px solid #f0f0f0; }
.message .who { font-weight: bold; } .message .when { color: #888; font-size: 12px; margin-left: 6px; }
.message.ephemeral { background: #f4f8ff; border-left: 3px solid #1264a3; padding-left: 8px; }
.only-you { color: #1264a3; font-size: 12px; }
.edited { color: #888; font-size: 11px; }
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
.bk-button.danger { background: #e01e5a; color: #fff; border-color: #e01e5a; }
pre { background: #f8f8f8; border: 1px solid #e1e1e1; padding: 6px; white-space: pre-wrap; font-size: 12px; }
code { background: #f3f3f3; color: #c01343; padding: 0 3px; border-radius: 3px; }
.mention { background: #e8f5fa; color: #1264a3; }
.file { border: 1px solid #ddd; border-radius: 6px; padding: 4px 8px; margin: 4px 0; }
.file.image img { display: block; max-width: 100%; height: auto; }
.file.image figcaption { font-size: 12px; color: #555; }
#dialog { position: fixed; inset: 0; background: rgba(0,0,0,.4); display: none; align-items: center;
          justify-content: center; }
#dialog.open { display: flex; }
#dialog .box { background: #fff; border-radius: 8px; padding: 16px 20px; width: 420px; }
#dialog h3 { margin: 0 0 8px; } #dialog .buttons { text-align: right; margin-top: 16px; }
#status { font-size: 12px; opacity: .9; }
.emoji { font-weight: bold; } .emoji.red { color: #e01e5a; } .emoji.orange { color: #e8912d; }
.emoji.yellow { color: #ecb22e; } .emoji.blue { color: #1264a3; } .emoji.green { color: #007a5a; }
.emoji.grey { color: #616061; }
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

async function refresh() {
  try {
    const answer = await fetch("/console/state?user=" + encodeURIComponent(user()));
    const state = await answer.json();
    const key = state.version + "/" + state.user;
    if (key !== shownVersion) {
      const box = $("channel");
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      box.innerHTML = state.channel;   // server-rendered, every value escaped
      box.dataset.user = state.user;   // whose view this is (tests wait for it after switching)
      if (atBottom || shownVersion === null) box.scrollTop = box.scrollHeight;
      shownVersion = key;
    }
    $("cluster").innerHTML = state.cluster;
  } catch (e) {
    $("status").textContent = "console not reachable";
  }
}

function openDialog(confirm, action) {
  pendingAction = action;
  $("dialog-title").textContent = confirm.title || "Are you sure?";
  $("dialog-text").textContent = confirm.text || "";
  $("dialog-confirm").textContent = confirm.confirm || "Confirm";
  $("dialog-deny").textContent = confirm.deny || "Cancel";
  $("dialog").classList.add("open");
}

function closeDialog() { $("dialog").classList.remove("open"); pendingAction = null; }

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
<span id="status"></span></header>
<nav><div class="channel"># {name}</div>
<p>An embedded Slack workspace. The bot is the real meshbot; the cluster is the bundled 3&nbsp;AM outage
in an embedded Kubernetes API. Send an alert, type <code>/mesh help</code>, switch users to approve.</p></nav>
<main><div id="channel"></div>
<form id="composer" autocomplete="off"><input id="command" placeholder="/mesh diagnose prod" maxlength="3000">
<button id="send" type="submit">Send</button></form></main>
<aside><div id="cluster"></div></aside>
<div id="dialog" role="dialog" aria-modal="true"><div class="box"><h3 id="dialog-title"></h3><p id="dialog-text"></p>
<div class="buttons"><button id="dialog-deny" type="button"></button>
<button id="dialog-confirm" class="bk-button primary" type="button"></button></div></div></div>
<script src="/console.js"></script></body></html>"""


def _where(alert: DemoAlert) -> str:
    place = alert.labels.get("pod") or alert.labels.get("destination_service_name") or alert.labels.get("namespace")
    return f" ({place})" if place else ""
