"""The dashboard at ``/ui``: one static page that reads the JSON endpoints every two
seconds (queues by state with pause and resume, throughput, dead letters with a requeue
button, recent jobs with their progress, cancel and retry, and a job's detail). Data is
inserted as text, never as HTML."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>onewriter jobs</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 1.5rem; color: #222; }
  header { display: flex; gap: 1.5rem; align-items: baseline; }
  h1 { font-size: 1.3rem; margin: 0; }
  h2 { font-size: 1.05rem; margin: 1.5rem 0 .4rem; }
  table { border-collapse: collapse; min-width: 40rem; }
  th, td { text-align: left; padding: .2rem .6rem; border-bottom: 1px solid #ddd; }
  td.n { text-align: right; font-variant-numeric: tabular-nums; }
  td.error { color: #a00; max-width: 30rem; overflow-wrap: anywhere; }
  #status { color: #666; }
  #chart { display: flex; align-items: flex-end; gap: 4px; height: 90px; }
  #chart div { background: #4a7; width: 28px; min-height: 1px; }
  tr.paused td:first-child::after { content: " (paused)"; color: #a60; }
  button { font: inherit; padding: 0 .4rem; }
  #detail { border: 1px solid #ccc; padding: .4rem .8rem; margin-top: 1rem; max-width: 60rem; }
  #detail pre { background: #f6f6f6; padding: .4rem; overflow-x: auto; margin: .2rem 0; }
  #detail dl { display: grid; grid-template-columns: 9rem 1fr; gap: .1rem .8rem; }
  #detail dt { color: #666; }
  #detail dd { margin: 0; overflow-wrap: anywhere; }
</style>
</head>
<body>
<header>
  <h1>onewriter jobs</h1>
  <label>token <input id="token" type="password" autocomplete="off"></label>
  <span id="status">loading</span>
</header>
<h2>Queues</h2>
<table id="queues"><thead><tr><th>queue</th><th>waiting</th><th>ready</th><th>running</th>
<th>done</th><th>dead</th><th>cancelled</th><th>oldest ready (s)</th><th>done last minute</th>
<th>rate limit</th><th></th></tr></thead><tbody></tbody></table>
<h2>Jobs done per minute, last 10 minutes</h2>
<div id="chart"></div>
<h2>Dead letters</h2>
<table id="dead"><thead><tr><th>id</th><th>queue</th><th>attempts</th><th>error</th><th></th>
</tr></thead><tbody></tbody></table>
<h2>Recent jobs</h2>
<table id="recent"><thead><tr><th>id</th><th>queue</th><th>state</th><th>attempts</th>
<th>progress</th><th>worker</th><th></th></tr></thead><tbody></tbody></table>
<section id="detail" hidden>
  <h2>Job <span id="detail-id"></span> <button id="detail-close">close</button></h2>
  <dl id="detail-fields"></dl>
  <div>payload</div><pre id="detail-payload"></pre>
  <div>result</div><pre id="detail-result"></pre>
</section>
<script>
const $ = (selector) => document.querySelector(selector);
const token = $("#token");
token.value = sessionStorage.getItem("onewriter-token") || "";
token.addEventListener("change", () => {
  sessionStorage.setItem("onewriter-token", token.value);
  refresh();
});

async function api(path, options = {}) {
  const headers = {"Content-Type": "application/json"};
  if (token.value) headers["Authorization"] = "Bearer " + token.value;
  const response = await fetch(path, {...options, headers});
  const body = await response.json();
  if (!response.ok) {
    throw new Error(body.error ? body.error.code + ": " + body.error.message : response.status);
  }
  return body;
}

function fill(table, rows, build) {
  const body = $(table + " tbody");
  body.replaceChildren();
  for (const item of rows) build(body.insertRow(), item);
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

async function act(path, body) {
  try {
    await api(path, {method: "POST", body: JSON.stringify(body || {})});
  } catch (error) {
    $("#status").textContent = error.message;
  }
  refresh();
}

const requeue = (id) => act("/dead/requeue", {ids: [id]});

function button(row, label, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", onClick);
  row.append(b);
  return b;
}

function progressText(job) {
  if (job.progress === null && !job.message) return "";
  const percent = job.progress === null ? "" : Math.round(job.progress) + "%";
  return [percent, job.message || ""].filter(Boolean).join(" ");
}

let shown = null;

async function showDetail(id) {
  shown = id;
  const job = await api("/jobs/" + id);
  $("#detail-id").textContent = String(job.id);
  const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
  const fields = [
    ["queue", job.queue], ["state", job.state + (job.cancel_requested && job.state ===
      "running" ? " (cancelling)" : "")],
    ["attempts", job.attempts + " of " + job.max_attempts], ["progress", progressText(job)],
    ["last error", job.error], ["worker", job.worker], ["timeout (s)", job.timeout],
    ["depends on", (job.depends_on || []).join(", ")], ["created", when(job.created_at)],
    ["started", when(job.started_at)], ["finished", when(job.finished_at)],
  ];
  const list = $("#detail-fields");
  list.replaceChildren();
  for (const [name, value] of fields) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value === null || value === undefined ? "" : String(value);
    dd.dataset.field = name;
    list.append(dt, dd);
  }
  $("#detail-payload").textContent = JSON.stringify(job.payload, null, 2);
  $("#detail-result").textContent = JSON.stringify(job.result, null, 2);
  $("#detail").hidden = false;
}

$("#detail-close").addEventListener("click", () => {
  shown = null;
  $("#detail").hidden = true;
});

async function refresh() {
  try {
    const [stats, dead, recent, throughput] = await Promise.all([
      api("/stats"), api("/dead?limit=50"), api("/jobs?limit=30"), api("/throughput?minutes=10"),
    ]);
    fill("#queues", Object.entries(stats.queues), (row, [name, q]) => {
      row.dataset.queue = name;
      if (q.paused) row.className = "paused";
      cell(row, name);
      for (const key of ["waiting", "ready", "running", "done", "dead", "cancelled",
                         "oldest_ready_age", "done_last_minute"]) cell(row, q[key], "n");
      const rate = q.rate_limit;
      cell(row, rate ? rate.limit + " per " + rate.period + " s" : "");
      const path = "/queues/" + encodeURIComponent(name) + (q.paused ? "/resume" : "/pause");
      button(row.insertCell(), q.paused ? "resume" : "pause", () => act(path));
    });
    const most = Math.max(1, ...throughput.per_minute);
    $("#chart").replaceChildren(...throughput.per_minute.map((n) => {
      const bar = document.createElement("div");
      bar.style.height = Math.round(90 * n / most) + "px";
      bar.title = n + " jobs";
      return bar;
    }));
    fill("#dead", dead.jobs, (row, job) => {
      cell(row, job.id, "n");
      cell(row, job.queue);
      cell(row, job.attempts, "n");
      cell(row, job.error, "error");
      button(row.insertCell(), "requeue", () => requeue(job.id)).dataset.id = job.id;
    });
    fill("#recent", recent.jobs, (row, job) => {
      row.dataset.id = job.id;
      cell(row, job.id, "n");
      cell(row, job.queue);
      cell(row, job.state + (job.cancel_requested && job.state === "running" ? " (cancelling)"
                                                                             : ""));
      cell(row, job.attempts, "n");
      cell(row, progressText(job), "progress");
      cell(row, job.worker);
      const actions = row.insertCell();
      button(actions, "details", () => showDetail(job.id));
      if (["waiting", "ready", "running"].includes(job.state) && !job.cancel_requested) {
        button(actions, "cancel", () => act("/jobs/" + job.id + "/cancel"));
      }
      if (["dead", "cancelled"].includes(job.state)) {
        button(actions, "retry", () => act("/jobs/" + job.id + "/retry"));
      }
    });
    if (shown !== null) await showDetail(shown);
    $("#status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    $("#status").textContent = error.message;
  }
}

refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""
