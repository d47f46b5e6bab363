// quiv dashboard: live updates over one websocket, and the action buttons.
// Everything user-supplied is written with textContent, never as HTML.
(() => {
  "use strict";
  const body = document.body;
  const base = body.dataset.base;
  const csrf = body.dataset.csrf;
  const page = body.dataset.page;
  const jobFilter = body.dataset.jobId || "";
  const actions = body.dataset.actions === "on";
  const live = document.getElementById("live");
  const flash = document.getElementById("flash");
  const FINAL = new Set(["completed", "cancelled", "failed", "missed"]);

  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const byAttr = (name, value) => document.querySelectorAll(`[${name}="${CSS.escape(value)}"]`);
  const when = (iso) => (iso ? new Date(iso).toISOString().slice(0, 19).replace("T", " ") + " UTC" : "");
  const duration = (s) => (s === null || s === undefined ? "" : `${s.toFixed(2)} s`);
  const errorText = (job) =>
    job.error_message ? (job.error_type ? `${job.error_type}: ` : "") + job.error_message : "";

  function say(text) {
    flash.textContent = text;
    flash.hidden = !text;
  }

  // -- progress ---------------------------------------------------------------

  function percentOf(payload) {
    const { current, total, percent } = payload;
    if (typeof current === "number" && typeof total === "number" && total > 0) {
      return Math.max(0, Math.min(100, (100 * current) / total));
    }
    if (typeof percent === "number") return Math.max(0, Math.min(100, percent));
    return null;
  }

  function drawProgress(cell, payload) {
    const pct = percentOf(payload);
    if (pct === null) {
      cell.replaceChildren(el("code", { class: "payload" }, JSON.stringify(payload)));
      return;
    }
    const rounded = Math.round(pct);
    let bar = cell.querySelector(".bar");
    if (!bar) {
      // Built once per cell and then updated, so the bar slides rather than redraws.
      bar = el("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" });
      bar.append(el("span"));
      cell.replaceChildren(bar, el("span", { class: "pct" }), el("span", { class: "muted note" }));
    }
    bar.setAttribute("aria-valuenow", String(rounded));
    bar.firstElementChild.style.width = `${pct}%`;
    cell.querySelector(".pct").textContent = `${rounded} %`;
    cell.querySelector(".note").textContent = typeof payload.message === "string" ? payload.message : "";
  }

  function onProgress(message) {
    for (const cell of byAttr("data-progress-job", message.job_id)) drawProgress(cell, message.payload);
  }

  // -- rows -------------------------------------------------------------------

  function statusBadge(node, status) {
    node.textContent = status;
    node.className = `status s-${status}`;
  }

  function outcomeCell(cell, job) {
    cell.replaceChildren();
    const link = el("a", { href: `${base}/jobs/${encodeURIComponent(job.id)}`, class: `status s-${job.status}` }, job.status);
    cell.append(link);
    const error = errorText(job);
    if (error) cell.append(" ", el("span", { class: "error" }, error));
  }

  function actionButton(action, attrs, label, hidden) {
    const button = el("button", { type: "button", "data-action": action, ...attrs }, label);
    if (action === "remove" || action === "cancel") button.className = "danger";
    button.hidden = Boolean(hidden);
    return button;
  }

  function taskRow(task) {
    const row = el("tr", { "data-task-id": task.id });
    const name = el("td", { class: "name" });
    name.append(el("a", { href: `${base}/jobs?task_id=${encodeURIComponent(task.id)}` }, task.task_name));
    const args = [...task.args.map((a) => JSON.stringify(a)), ...Object.entries(task.kwargs).map(([k, v]) => `${k}=${JSON.stringify(v)}`)];
    if (args.length) name.append(el("div", { class: "muted args" }, args.join(", ")));
    const status = el("span", { "data-field": "status" });
    statusBadge(status, task.status);
    const statusCell = el("td");
    statusCell.append(status);
    const outcome = el("td", { "data-field": "outcome" });
    outcome.append(el("span", { class: "muted" }, "never ran"));
    row.append(
      name,
      el("td", { class: "trigger" }, task.trigger),
      statusCell,
      el("td", { "data-field": "next_run_at" }, when(task.next_run_at)),
      outcome,
      el("td", { class: "progress", "data-progress-task": task.id, "data-progress-job": "" }),
    );
    if (actions) {
      const cell = el("td", { class: "actions" });
      const paused = task.status === "paused";
      const attrs = { "data-task-id": task.id };
      cell.append(
        actionButton("run", attrs, "Run now"),
        actionButton("pause", attrs, "Pause", paused),
        actionButton("resume", attrs, "Resume", !paused),
        actionButton("remove", attrs, "Remove"),
      );
      row.append(cell);
    }
    return row;
  }

  function updateTask(task, job) {
    const table = document.getElementById("tasks");
    if (!table) return;
    let row = table.querySelector(`tr[data-task-id="${CSS.escape(task.id)}"]`);
    if (!row) {
      const empty = table.querySelector("tr.empty");
      if (empty) empty.remove();
      row = taskRow(task);
      table.tBodies[0].append(row);
    }
    statusBadge(row.querySelector('[data-field="status"]'), task.status);
    row.querySelector('[data-field="next_run_at"]').textContent = when(task.next_run_at);
    const paused = task.status === "paused";
    const pause = row.querySelector('[data-action="pause"]');
    const resume = row.querySelector('[data-action="resume"]');
    if (pause) pause.hidden = paused;
    if (resume) resume.hidden = !paused;
    if (job) {
      outcomeCell(row.querySelector('[data-field="outcome"]'), job);
      const progress = row.querySelector("[data-progress-task]");
      if (job.status === "running" && progress.dataset.progressJob !== job.id) {
        progress.dataset.progressJob = job.id;
        progress.replaceChildren();
      }
    }
  }

  function jobMatchesFilter(table, job) {
    return (
      table.dataset.offset === "0" &&
      (!table.dataset.status || table.dataset.status === job.status) &&
      (!table.dataset.taskFilter || table.dataset.taskFilter === job.task_id)
    );
  }

  function jobRow(job) {
    const row = el("tr", { "data-job-id": job.id });
    const idCell = el("td");
    const link = el("a", { href: `${base}/jobs/${encodeURIComponent(job.id)}` });
    link.append(el("code", {}, job.id.slice(0, 8)));
    idCell.append(link);
    const status = el("span", { "data-field": "status" });
    const statusCell = el("td");
    statusCell.append(status);
    row.append(
      idCell,
      el("td", {}, job.task_name),
      statusCell,
      el("td", { "data-field": "started_at" }),
      el("td", { "data-field": "duration" }),
      el("td", { "data-field": "error", class: "error" }),
      el("td", { class: "progress", "data-progress-job": job.id }),
    );
    if (actions) {
      const cell = el("td", { class: "actions" });
      cell.append(actionButton("cancel", { "data-job-id": job.id }, "Cancel"));
      row.append(cell);
    }
    return row;
  }

  function updateJob(job) {
    // The jobs table and the job page share the data-field cells.
    let scope = document.querySelector(`#jobs tr[data-job-id="${CSS.escape(job.id)}"], #job[data-job-id="${CSS.escape(job.id)}"]`);
    const table = document.getElementById("jobs");
    if (!scope && table && jobMatchesFilter(table, job)) {
      const empty = table.querySelector("tr.empty");
      if (empty) empty.remove();
      scope = jobRow(job);
      table.tBodies[0].prepend(scope);
      const limit = Number(table.dataset.limit);
      while (table.tBodies[0].rows.length > limit) table.tBodies[0].lastElementChild.remove();
    }
    if (!scope) return;
    const field = (name) => scope.querySelector(`[data-field="${name}"]`);
    statusBadge(field("status"), job.status);
    if (field("started_at")) field("started_at").textContent = when(job.started_at);
    if (field("ended_at")) field("ended_at").textContent = when(job.ended_at);
    field("duration").textContent = duration(job.duration_seconds);
    field("error").textContent = errorText(job);
    if (FINAL.has(job.status)) {
      for (const button of scope.querySelectorAll('[data-action="cancel"]')) button.remove();
    }
  }

  // The snapshots in an event are taken as it happens, before the scheduler plans
  // the task's next run; fetch the tasks again once a burst of events is over.
  let tasksTimer = null;
  function refreshTasksSoon() {
    if (tasksTimer !== null || !document.getElementById("tasks")) return;
    tasksTimer = setTimeout(async () => {
      tasksTimer = null;
      const reply = await fetch(`${base}/api/tasks`, { headers: { Accept: "application/json" } });
      if (!reply.ok) return;
      const tasks = await reply.json();
      const known = new Set(tasks.map((task) => task.id));
      for (const row of document.querySelectorAll("#tasks tr[data-task-id]")) {
        if (!known.has(row.dataset.taskId)) row.remove();
      }
      for (const task of tasks) updateTask(task, task.last_job);
    }, 300);
  }

  // -- stats --------------------------------------------------------------------

  let statsPending = false;
  async function refreshStats() {
    // Called on events, at most once per animation frame: no polling.
    if (statsPending || !document.getElementById("stats")) return;
    statsPending = true;
    await new Promise((resolve) => requestAnimationFrame(resolve));
    statsPending = false;
    const reply = await fetch(`${base}/api/stats`, { headers: { Accept: "application/json" } });
    if (!reply.ok) return;
    const s = await reply.json();
    const set = (name, text) => {
      const cell = document.querySelector(`[data-stat="${name}"]`);
      if (cell) cell.textContent = text;
    };
    const pairs = (obj) => Object.entries(obj).map(([k, v]) => `${k} ${v}`).join(", ");
    const secs = (v) => (v === null ? "–" : `${v.toFixed(3)} s`);
    set("pool", `${s.pool_in_use} / ${s.pool_size} in use`);
    for (const name of ["jobs_running", "jobs_queued", "jobs_overrunning", "retries_waiting", "store_backlog"]) {
      set(name, String(s[name]));
    }
    set("tasks_by_status", pairs(s.tasks_by_status));
    set("jobs_ended", pairs(s.jobs_ended));
    set("lag", `${secs(s.start_lag_p50)} / ${secs(s.start_lag_p99)} (last ${s.lag_window} starts)`);
    set("oldest_queued_wait", secs(s.oldest_queued_wait));
  }

  // -- the websocket --------------------------------------------------------------

  function onMessage(message) {
    switch (message.type) {
      case "resync":
        location.reload(); // this page fell behind and missed messages
        break;
      case "progress":
        onProgress(message);
        break;
      case "job":
        updateTask(message.task, message.job);
        updateJob(message.job);
        refreshTasksSoon();
        refreshStats();
        break;
      case "task":
        if (message.event === "task_removed") {
          for (const row of document.querySelectorAll(`#tasks tr[data-task-id="${CSS.escape(message.task.id)}"]`)) row.remove();
        } else {
          updateTask(message.task, null);
        }
        refreshTasksSoon();
        refreshStats();
        break;
    }
  }

  let wasOpen = false;
  let retry = 500;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams({ token: csrf });
    if (jobFilter) query.set("job_id", jobFilter);
    const socket = new WebSocket(`${scheme}://${location.host}${base}/ws?${query}`);
    socket.onopen = () => {
      if (wasOpen) location.reload(); // reconnected: what was missed meanwhile is unknown
      wasOpen = true;
      retry = 500;
      live.textContent = "live";
      live.className = "live on";
    };
    socket.onmessage = (event) => onMessage(JSON.parse(event.data));
    socket.onclose = () => {
      live.textContent = "offline";
      live.className = "live off";
      setTimeout(connect, retry); // reconnect after a restart, backing off
      retry = Math.min(retry * 2, 30000);
    };
  }

  // -- actions --------------------------------------------------------------------

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || !actions) return;
    const action = button.dataset.action;
    const url =
      action === "cancel"
        ? `${base}/api/jobs/${encodeURIComponent(button.dataset.jobId)}/cancel`
        : `${base}/api/tasks/${encodeURIComponent(button.dataset.taskId)}/${action}`;
    button.disabled = true;
    try {
      const reply = await fetch(url, { method: "POST", headers: { "X-CSRF-Token": csrf } });
      const data = await reply.json().catch(() => ({}));
      say(reply.ok ? "" : `${action} refused: ${data.detail || reply.status}`);
    } catch (error) {
      say(`${action} failed: ${error}`);
    } finally {
      button.disabled = false;
    }
  });

  connect();
})();
