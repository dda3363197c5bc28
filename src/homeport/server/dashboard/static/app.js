// Homeport dashboard: one live event stream, pages drawn from plain DOM nodes.
// Everything a container wrote (log lines, tracebacks, names) is set as text, never as HTML.
"use strict";

const S = { snapshot: null, calls: [], logs: [], fn: null, callDetail: null, filters: {} };
const main = document.getElementById("main");

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v;  // CSSOM: allowed by the page's CSP, unlike style attributes
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
const fmtMs = (ms) => (ms === null || ms === undefined ? "—" : ms < 10 ? ms.toFixed(2) + " ms" : Math.round(ms) + " ms");
const fmtBytes = (b) => (b === null || b === undefined ? "—" : (b / 1048576).toFixed(1) + " MiB");
const fmtDur = (s) => (s < 60 ? s.toFixed(0) + " s" : s < 3600 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h");
const state = (s) => h("span", { class: "state " + s }, s);
const table = (head, rows) => h("table", {}, h("thead", {}, h("tr", {}, head.map((x) => h("th", {}, x)))), h("tbody", {}, rows));

function route() {
  const parts = (location.hash || "#/apps").slice(2).split("/");
  return { page: parts[0] || "apps", arg: decodeURIComponent(parts.slice(1).join("/")) };
}

// --- pages ------------------------------------------------------------------------------------------
function appsPage() {
  const apps = (S.snapshot && S.snapshot.apps) || [];
  const rows = apps.map((a) =>
    h("tr", {},
      h("td", {}, h("b", {}, a.name || "(ephemeral)"), h("div", { class: "muted mono" }, a.app_id)),
      h("td", {}, state(a.state), a.crash_looping && a.crash_looping.length ? h("div", { class: "state failure" }, "crash-looping: " + a.crash_looping.join(", ")) : null),
      h("td", {}, a.version ? "v" + a.version : "—"),
      h("td", {}, a.containers),
      h("td", {}, a.functions.map((f) => h("div", {}, h("a", { href: "#/function/" + encodeURIComponent(f.function_id) }, f.tag)))),
      h("td", {}, a.schedules.length ? a.schedules.map((s) => h("div", {}, s.function + ": next " + fmtTime(s.next_run))) : "—"),
      h("td", {}, a.versions.length ? a.versions.slice(0, 5).map((v) => h("div", {}, "v" + v.version + " · " + fmtTime(v.created_at) + " · " + v.functions.join(", "),
        a.state === "deployed" && v.version !== a.version ? h("button", { class: "rollback", "data-version": v.version, onclick: () => rollback(a.name, v.version) }, "roll back to v" + v.version) : null)) : "—"),
      h("td", {}, fmtTime(a.created_at))));
  return [h("h1", {}, "Apps"), table(["App", "State", "Version", "Containers", "Functions", "Schedules", "Versions", "Created"], rows)];
}

function chart(title, points, key, color) {
  const W = 320, H = 90;
  const vals = points.map((p) => p[key]);
  const max = Math.max(1, ...vals);
  const n = Math.max(1, vals.length - 1);
  const d = vals.map((v, i) => (i ? "L" : "M") + ((i / n) * W).toFixed(1) + "," + (H - (v / max) * (H - 6) - 3).toFixed(1)).join(" ");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", d || "M0," + H); path.setAttribute("fill", "none"); path.setAttribute("stroke", color); path.setAttribute("stroke-width", "2");
  svg.appendChild(path);
  return h("div", { class: "chart" }, h("div", { class: "t" }, `${title} (max ${max})`), svg);
}

function functionPage(fid) {
  const f = S.fn && S.fn.function_id === fid ? S.fn : null;
  if (!f) return [h("h1", {}, "Function"), h("p", { class: "muted" }, S.fnMissing === fid ? "This function is not running any more." : "loading…")];
  const g = f.figures || { total: 0, errors: 0, inputs_per_s: 0, p50_ms: null, p99_ms: null, cold_starts: [], series: [] };
  const cold = g.cold_starts.map((c) => ({ ms: Math.round(c.ms) }));
  const containers = ((S.snapshot && S.snapshot.containers) || []).filter((c) => c.function_id === fid);
  return [
    h("h1", {}, f.tag, " ", h("span", { class: "muted" }, "in " + (f.app_name || f.app_id))),
    h("div", { class: "cards" },
      [["containers", f.containers], ["queued", f.queued], ["inputs/s", g.inputs_per_s.toFixed(2)], ["p50", fmtMs(g.p50_ms)],
       ["p99", fmtMs(g.p99_ms)], ["inputs", g.total], ["errors", g.errors], ["cold starts", g.cold_starts.length]]
        .map(([k, v]) => h("div", { class: "card" }, h("div", { class: "v" }, v), h("div", { class: "k" }, k)))),
    h("div", { class: "charts" },
      chart("containers over time", g.series, "containers", "#2f8f5b"),
      chart("queue depth", g.series, "queued", "#d08a00"),
      chart("cold starts (ms)", cold, "ms", "#2f6fb0")),
    h("h2", {}, "Settings"),
    h("pre", {}, JSON.stringify({ ...f.settings, retries: f.retries }, null, 2)),
    h("h2", {}, "Containers"), containersTable(containers),
    h("h2", {}, "Recent calls"), callsTable(S.calls.filter((c) => c.function === f.tag && c.app_id === f.app_id).slice(0, 50)),
  ];
}

function timeline(t) {
  const phases = Object.entries(t || {}).filter(([k]) => k !== "ready");
  return h("span", { title: JSON.stringify(t) },
    phases.map(([k, v]) => h("span", {}, h("span", { class: "phase", style: `width:${Math.max(2, Math.min(120, v * 1000))}px` }), " " + k + " " + fmtMs(v * 1000) + " ")),
    t && t.ready !== undefined ? h("b", {}, "ready " + fmtMs(t.ready * 1000)) : null);
}

function containersTable(list) {
  return table(["Container", "Function", "State", "Up", "Inputs", "CPU", "Memory", "Node", "Start-up"],
    list.map((c) => h("tr", {},
      h("td", { class: "mono" }, c.container_id),
      h("td", {}, c.function_id ? h("a", { href: "#/function/" + encodeURIComponent(c.function_id) }, c.function) : c.function, h("div", { class: "muted" }, c.app_name || c.app_id)),
      h("td", {}, state(c.state)),
      h("td", {}, fmtDur(c.uptime)),
      h("td", {}, c.inputs_served + (c.running ? ` (${c.running} running)` : "")),
      h("td", {}, c.cpu_seconds === null ? "—" : c.cpu_seconds.toFixed(2) + " s"),
      h("td", {}, fmtBytes(c.memory_bytes)),
      h("td", {}, c.node),
      h("td", {}, timeline(c.timeline)))));
}

function containersPage() {
  return [h("h1", {}, "Containers"), containersTable((S.snapshot && S.snapshot.containers) || [])];
}

function callsTable(list) {
  return table(["Call", "Function", "Kind", "Status", "Duration", "Inputs", "Retries", "Finished", "Error"],
    list.map((c) => h("tr", { class: "clickable", onclick: () => { location.hash = "#/call/" + encodeURIComponent(c.call_id); } },
      h("td", { class: "mono" }, c.call_id, c.idx >= 0 && c.kind === "map" ? "#" + c.idx : ""),
      h("td", {}, c.function),
      h("td", {}, c.kind),
      h("td", {}, state(c.status)),
      h("td", {}, fmtMs(c.seconds * 1000)),
      h("td", {}, c.inputs),
      h("td", {}, c.retries),
      h("td", {}, fmtTime(c.finished_at)),
      h("td", { class: "mono" }, c.error ? String(c.error).slice(0, 120) : ""))));
}

function callsPage() {
  const f = S.filters;
  const search = h("input", { placeholder: "search id, function, error", value: f.q || "", id: "call-search" });
  const status = h("select", { id: "call-status" }, ["", "success", "failure", "timeout", "terminated", "internal", "init_failure"].map((s) => {
    const o = h("option", { value: s }, s || "any status"); if ((f.status || "") === s) o.selected = true; return o;
  }));
  const apply = () => { f.q = search.value; f.status = status.value; loadCalls().then(render); };
  search.addEventListener("change", apply); status.addEventListener("change", apply);
  return [h("h1", {}, "Calls"), h("div", { class: "filters" }, search, status), callsTable(S.calls)];
}

function callPage(id) {
  const rows = S.callDetail && S.callDetail.id === id ? S.callDetail.rows : null;
  if (!rows) return [h("h1", {}, "Call " + id), h("p", { class: "muted" }, "loading…")];
  return [h("h1", {}, "Call ", h("span", { class: "mono" }, id)),
    ...rows.map((r) => h("div", {},
      h("div", { class: "cards" }, [["function", r.function], ["status", r.status], ["duration", fmtMs(r.seconds * 1000)], ["retries", r.retries], ["inputs", r.inputs], ["finished", fmtTime(r.finished_at)]]
        .map(([k, v]) => h("div", { class: "card" }, h("div", { class: "v" }, v), h("div", { class: "k" }, k)))),
      r.error ? h("h2", {}, "Error") : null, r.error ? h("pre", { class: "error" }, r.error) : null,
      r.traceback ? h("h2", {}, "Remote traceback") : null, r.traceback ? h("pre", { class: "traceback" }, r.traceback) : null)),
    h("h2", {}, "Logs of this call"), logLines(S.logs.filter((l) => l.call_id === id))];
}

function logMatches(l) {
  const f = S.filters;
  return (!f.app || l.app_id === f.app) && (!f.fn || l.function === f.fn) && (!f.container || l.container_id === f.container)
    && (!f.call || l.call_id === f.call) && (!f.text || l.text.includes(f.text));
}
function logLine(l) {
  return h("div", { class: l.stream }, h("span", { class: "tag" }, `[${l.function} ${l.container_id}] `), l.text.replace(/\n$/, ""));
}
function logLines(list) { return h("div", { class: "logs", id: "log-lines" }, list.map(logLine)); }

function logsPage() {
  const f = S.filters;
  const input = (key, ph) => {
    const el = h("input", { placeholder: ph, value: f[key] || "", "data-filter": key });
    el.addEventListener("input", () => { f[key] = el.value; redrawLogs(); });
    return el;
  };
  return [h("h1", {}, "Logs"),
    h("div", { class: "filters" }, input("app", "app id"), input("fn", "function"), input("container", "container id"), input("call", "call id"), input("text", "search")),
    logLines(S.logs.filter(logMatches))];
}
function redrawLogs() {
  const box = document.getElementById("log-lines");
  if (!box) return;
  box.replaceChildren(...S.logs.filter(logMatches).map(logLine));
  box.scrollTop = box.scrollHeight;
}

function storagePage() {
  const st = S.storage || { volumes: [], secrets: [] };
  const eps = (S.snapshot && S.snapshot.endpoints) || [];
  return [h("h1", {}, "Volumes, secrets and web endpoints"),
    h("h2", {}, "Volumes"), table(["Name", "Created"], st.volumes.map((v) => h("tr", {}, h("td", {}, v.name), h("td", {}, fmtTime(v.created_at))))),
    h("h2", {}, "Secrets"), table(["Name", "Keys", "Created", "Updated"], st.secrets.map((s) => h("tr", {}, h("td", {}, s.name), h("td", { class: "mono" }, s.keys.join(", ")), h("td", {}, fmtTime(s.created_at)), h("td", {}, fmtTime(s.updated_at))))),
    h("h2", {}, "Web endpoints"), table(["Label", "URL", "App", "Function", "Auth"], eps.map((e) => h("tr", {}, h("td", {}, e.label), h("td", {}, h("a", { href: e.url }, e.url)), h("td", {}, e.app_name || e.app_id), h("td", {}, e.function), h("td", {}, e.requires_auth ? "proxy token" : "none"))))];
}

// --- data and live updates ----------------------------------------------------------------------------
async function get(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (r.status === 401) { location.reload(); throw new Error("signed out"); }
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}
async function rollback(name, version) {
  if (!confirm(`Deploy version ${version} of ${name} again, as a new version?`)) return;
  const r = await fetch(`/api/apps/${encodeURIComponent(name)}/rollback?version=${version}`, { method: "POST", credentials: "same-origin" });
  const body = await r.json();
  if (!r.ok) alert(body.detail || r.status);
}

async function loadCalls() {
  const f = S.filters;
  S.calls = await get(`/api/calls?q=${encodeURIComponent(f.q || "")}&status=${encodeURIComponent(f.status || "")}`);
}

async function loadFunction(fid) {
  try { S.fn = await get("/api/functions/" + encodeURIComponent(fid)); S.fnMissing = null; }
  catch (e) { S.fn = null; S.fnMissing = fid; }
}

function render() {
  const r = route();
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === r.page || (r.page === "call" && a.dataset.page === "calls") || (r.page === "function" && a.dataset.page === "apps")));
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.filter : null;
  const pages = { apps: appsPage, containers: containersPage, calls: callsPage, logs: logsPage, storage: storagePage,
    function: () => functionPage(r.arg), call: () => callPage(r.arg) };
  if (r.page === "logs" && document.getElementById("log-lines")) { redrawLogs(); return; }
  if (r.page === "calls" && document.getElementById("call-search") && document.activeElement && document.activeElement.id === "call-search") return;
  main.replaceChildren(...(pages[r.page] || appsPage)());
  if (focused) { const el = document.querySelector(`[data-filter="${focused}"]`); if (el) el.focus(); }
  if (r.page === "logs") redrawLogs();
}

async function onRoute() {
  const r = route();
  if (r.page === "calls") await loadCalls();
  if (r.page === "call") S.callDetail = { id: r.arg, rows: await get("/api/calls/" + encodeURIComponent(r.arg)).catch(() => []) };
  if (r.page === "function") await loadFunction(r.arg);
  if (r.page === "storage") S.storage = await get("/api/storage");
  main.replaceChildren();
  render();
}

function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/api/events");
  es.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
  es.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
  es.addEventListener("snapshot", async (e) => {
    S.snapshot = JSON.parse(e.data);
    const r = route();
    if (r.page === "function") await loadFunction(r.arg);
    render();
  });
  es.addEventListener("call", (e) => {
    const c = JSON.parse(e.data);
    const f = S.filters;
    if ((!f.status || c.status === f.status) && (!f.q || JSON.stringify(c).includes(f.q))) {
      S.calls.unshift(c); S.calls.length = Math.min(S.calls.length, 500);
    }
    if (route().page === "calls") render();
  });
  es.addEventListener("log", (e) => {
    const l = JSON.parse(e.data);
    S.logs.push(l); if (S.logs.length > 5000) S.logs.splice(0, S.logs.length - 5000);
    const r = route();
    if (r.page === "logs") {
      const box = document.getElementById("log-lines");
      if (box && logMatches(l)) { box.appendChild(logLine(l)); box.scrollTop = box.scrollHeight; }
    }
  });
}

(async function start() {
  S.logs = await get("/api/logs");
  window.addEventListener("hashchange", onRoute);
  await onRoute();
  connect();
})();
