"""The dashboard at ``/ui``: one static page that reads the JSON endpoints every two
seconds (queues by state, throughput, dead letters with a requeue button, recent jobs).
Data is inserted as text, never as HTML."""

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
</style>
</head>
<body>
<header>
  <h1>onewriter jobs</h1>
  <label>token <input id="token" type="password" autocomplete="off"></label>
  <span id="status">loading</span>
</header>
<h2>Queues</h2>
<table id="queues"><thead><tr><th>queue</th><th>ready</th><th>running</th><th>done</th>
<th>dead</th><th>oldest ready (s)</th><th>done last minute</th></tr></thead><tbody></tbody></table>
<h2>Jobs done per minute, last 10 minutes</h2>
<div id="chart"></div>
<h2>Dead letters</h2>
<table id="dead"><thead><tr><th>id</th><th>queue</th><th>attempts</th><th>error</th><th></th>
</tr></thead><tbody></tbody></table>
<h2>Recent jobs</h2>
<table id="recent"><thead><tr><th>id</th><th>queue</th><th>state</th><th>attempts</th>
<th>worker</th></tr></thead><tbody></tbody></table>
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

async function requeue(id) {
  try {
    await api("/dead/requeue", {method: "POST", body: JSON.stringify({ids: [id]})});
  } catch (error) {
    $("#status").textContent = error.message;
  }
  refresh();
}

async function refresh() {
  try {
    const [stats, dead, recent, throughput] = await Promise.all([
      api("/stats"), api("/dead?limit=50"), api("/jobs?limit=30"), api("/throughput?minutes=10"),
    ]);
    fill("#queues", Object.entries(stats.queues), (row, [name, q]) => {
      cell(row, name);
      for (const key of ["ready", "running", "done", "dead", "oldest_ready_age",
                         "done_last_minute"]) cell(row, q[key], "n");
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
      const button = document.createElement("button");
      button.textContent = "requeue";
      button.dataset.id = job.id;
      button.addEventListener("click", () => requeue(job.id));
      row.insertCell().append(button);
    });
    fill("#recent", recent.jobs, (row, job) => {
      cell(row, job.id, "n");
      cell(row, job.queue);
      cell(row, job.state);
      cell(row, job.attempts, "n");
      cell(row, job.worker);
    });
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
