#include "hylo/serve/chat_page.h"

namespace hylo::serve {

namespace {

// Self-contained: the page is served by a machine that may have no network, and loads nothing else.
constexpr std::string_view kPage = R"HYLO_PAGE(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hylo chat</title>
<style>
  :root { --bg: #f6f7f9; --fg: #1d2330; --muted: #6b7280; --accent: #2563eb; --card: #fff; --line: #e5e7eb; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg);
         color: var(--fg); display: flex; flex-direction: column; height: 100vh; }
  header { padding: 10px 16px; background: var(--card); border-bottom: 1px solid var(--line);
           display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
  header h1 { font-size: 17px; margin: 0; }
  #model { color: var(--muted); font-size: 13px; }
  #ctx { margin-left: auto; font-size: 13px; color: var(--muted); display: flex; align-items: center; gap: 8px; }
  #ctxbar { width: 140px; height: 8px; background: var(--line); border-radius: 4px; overflow: hidden; }
  #ctxfill { height: 100%; width: 0; background: var(--accent); }
  #log { flex: 1; overflow-y: auto; padding: 16px; display: flex; flex-direction: column; gap: 10px; }
  .msg { max-width: 80%; padding: 8px 12px; border-radius: 10px; white-space: pre-wrap; word-wrap: break-word; }
  .user { align-self: flex-end; background: var(--accent); color: #fff; }
  .assistant { align-self: flex-start; background: var(--card); border: 1px solid var(--line); }
  .error { align-self: center; color: #b91c1c; font-size: 13px; }
  .stats { font-size: 12px; color: var(--muted); align-self: flex-start; }
  form { display: flex; gap: 8px; padding: 12px 16px; background: var(--card); border-top: 1px solid var(--line); }
  textarea { flex: 1; resize: none; height: 60px; padding: 8px; font: inherit; border: 1px solid var(--line);
             border-radius: 8px; }
  button { padding: 0 18px; border: 0; border-radius: 8px; background: var(--accent); color: #fff; font: inherit; }
  button:disabled { opacity: .5; }
  details { font-size: 13px; color: var(--muted); }
  details input { width: 90px; }
</style>
</head>
<body>
<header>
  <h1>hylo</h1>
  <span id="model">loading model info...</span>
  <details><summary>settings</summary>
    temperature <input id="temperature" type="number" step="0.1" min="0" max="2" value="0.7">
    max tokens <input id="max_tokens" type="number" min="1" value="256">
    API key <input id="api_key" type="password" placeholder="(none)">
  </details>
  <span id="ctx"><span id="ctxtext">context: 0</span><span id="ctxbar"><span id="ctxfill"></span></span></span>
</header>
<main id="log"></main>
<form id="form">
  <textarea id="input" placeholder="Message (Enter to send, Shift+Enter for a new line)"></textarea>
  <button id="send" type="submit">Send</button>
</form>
<script>
const $ = (id) => document.getElementById(id);
const messages = [];
let model = null, maxContext = 0;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api_key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function add(cls, text) {
  const div = document.createElement("div");
  div.className = "msg " + cls;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

function showContext(used) {
  $("ctxtext").textContent = "context: " + used + (maxContext ? " / " + maxContext + " tokens" : " tokens");
  $("ctxfill").style.width = maxContext ? Math.min(100, 100 * used / maxContext) + "%" : "0";
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    const m = body.data[0];
    model = m.id;
    maxContext = m.max_model_len;
    const info = m.hylo || {};
    const layers = Object.entries(info.layers || {}).map(([k, n]) => n + " " + k).join(" + ");
    $("model").textContent = m.id + " \u00b7 " + (info.architecture || "") + " \u00b7 " + layers +
        " layers \u00b7 context " + maxContext + " tokens";
    showContext(0);
  } catch (e) {
    $("model").textContent = "model info unavailable: " + e.message;
  }
}

async function send(text) {
  messages.push({ role: "user", content: text });
  add("user", text);
  const out = add("assistant", "");
  out.dataset.streaming = "1";
  $("send").disabled = true;
  const t0 = performance.now();
  let answer = "", usage = null, firstToken = 0;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(),
      body: JSON.stringify({ model, messages, stream: true, stream_options: { include_usage: true },
                             temperature: parseFloat($("temperature").value),
                             max_tokens: parseInt($("max_tokens").value, 10) }),
    });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : r.status + " " + r.statusText);
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const piece = (choice.delta && choice.delta.content) || "";
          if (piece && !firstToken) firstToken = performance.now();
          if (piece) out.dataset.pieces = (parseInt(out.dataset.pieces || "0", 10) + 1).toString();
          answer += piece;
          out.textContent = answer;
          $("log").scrollTop = $("log").scrollHeight;
        }
      }
    }
    messages.push({ role: "assistant", content: answer });
    if (usage) {
      showContext(usage.total_tokens);
      const secs = (performance.now() - t0) / 1000;
      const stats = document.createElement("div");
      stats.className = "stats";
      stats.textContent = usage.completion_tokens + " tokens in " + secs.toFixed(2) + " s, first token after " +
          ((firstToken - t0) / 1000).toFixed(2) + " s";
      $("log").appendChild(stats);
    }
  } catch (e) {
    add("error", "error: " + e.message);
    messages.pop();
  } finally {
    delete out.dataset.streaming;
    out.dataset.done = "1";
    $("send").disabled = false;
  }
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});
$("api_key").addEventListener("change", loadModel);
loadModel();
</script>
</body>
</html>
)HYLO_PAGE";

}  // namespace

std::string_view chat_page_html() { return kPage; }

}  // namespace hylo::serve
