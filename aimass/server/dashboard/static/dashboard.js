// aimass dashboard: fetches JSON from /dashboard/api/ and lays it out. No library, no build step.
// Charts arrive as SVG drawn by the server (aimass.charts); data is put in the page as text only.
// The bearer token, when the server needs one, lives in sessionStorage and travels in a header only.
"use strict";

const API = "/dashboard/api/";
const TOKEN = "aimass.dashboard.token";
const REFRESH_MS = 2000;
let timer = null;
let overview = null;

class AuthNeeded extends Error {}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(API + path, { headers, cache: "no-store" });
  if (response.status === 401) throw new AuthNeeded("the token was refused");
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// -- building blocks --------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function svg(text) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = doc.documentElement;
  return root && root.nodeName === "svg" ? document.importNode(root, true) : el("p", { class: "error" }, "chart unreadable");
}

function charts(list, id) {
  const box = el("div", { class: "charts", id });
  for (const text of list || []) box.append(svg(text));
  return box;
}

function table(head, rows, id) {
  const t = el("table", { id });
  t.append(el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))));
  const body = el("tbody");
  for (const row of rows) body.append(el("tr", {}, ...row.map((c) => (c instanceof Node && c.nodeName === "TD" ? c : el("td", {}, c)))));
  t.append(body);
  return t;
}

function num(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toPrecision(digits).replace(/\.?0+(e|$)/, "$1");
}

function size(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = bytes, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(2) : String(v)) + " " + units[i];
}

function when(iso) { return iso ? iso.slice(0, 19).replace("T", " ") : "–"; }

function metrics(m) {
  return Object.entries(m || {}).map(([k, v]) => k + "=" + num(v, 4)).join("  ");
}

function aliasTags(aliases) {
  const box = el("span");
  for (const [alias, targets] of Object.entries(aliases || {})) {
    const split = Object.entries(targets).map(([v, w]) => "v" + v + (w < 1 ? " " + Math.round(w * 100) + "%" : "")).join(", ");
    box.append(el("span", { class: "tag" }, alias + " → " + split));
  }
  return box;
}

function link(text, href) { return el("a", { href }, text); }
const enc = encodeURIComponent;

// -- pages ------------------------------------------------------------------------------------

async function modelsPage(view) {
  const data = await api("models");
  view.append(el("h1", {}, "Models"));
  if (!data.models.length) {
    view.append(el("p", { class: "muted", id: "empty" }, "No models yet: publish one with aimass store publish."));
    return;
  }
  view.append(table(
    ["model", "versions", "latest", "backend", "aliases (canary weights)", "served"],
    data.models.map((m) => [
      link(m.name, "#/m/" + enc(m.name)),
      m.versions.length,
      m.latest === null ? "–" : link("v" + m.latest, "#/m/" + enc(m.name) + "/" + enc(m.latest)),
      m.backend || "–",
      // One model's broken files show on its own row (as text), the others list as usual.
      m.error ? el("span", { class: "muted model-error" }, m.error) : aliasTags(m.aliases),
      m.served.length ? m.served.map((v) => "v" + v).join(", ") : "–",
    ]),
    "models-table",
  ));
  view.append(el("h2", {}, "Sizes and recorded metrics"), charts(data.charts, "models-charts"));
}

async function modelPage(view, name) {
  const data = await api("models/" + enc(name));
  view.append(el("h1", {}, data.name));
  view.append(el("h2", {}, "Aliases"));
  if (Object.keys(data.aliases).length) {
    view.append(table(
      ["alias", "versions and traffic share", "gate"],
      Object.entries(data.aliases).map(([a, t]) => [
        a,
        Object.entries(t).map(([v, w]) => "v" + v + " " + Math.round(w * 100) + "%").join(", "),
        Object.entries(data.gates[a] || {}).map(([k, c]) => k + " " + c).join(", ") || "–",
      ]),
      "aliases-table",
    ));
  } else {
    view.append(el("p", { class: "muted" }, "No aliases."));
  }
  view.append(el("h2", {}, "Versions"));
  view.append(table(
    ["version", "created", "backend", "size", "metrics", "aliases", "served"],
    data.versions.map((r) => [
      link("v" + r.version, "#/m/" + enc(name) + "/" + enc(r.version)),
      when(r.created), r.backend, size(r.size), metrics(r.metrics),
      Object.entries(r.aliases || {}).map(([a, w]) => a + (w < 1 ? " " + Math.round(w * 100) + "%" : "")).join(", ") || "–",
      r.served ? "yes" : "–",
    ]),
    "versions-table",
  ));
  view.append(charts(data.charts, "model-charts"));
}

function schemaTable(schema) {
  const rows = [];
  for (const [kind, list] of [["input", schema.inputs], ["output", schema.outputs]]) {
    for (const t of list || []) rows.push([kind, t.name, t.datatype || t.dtype, "[" + (t.shape || []).join(", ") + "]"]);
  }
  return table(["", "tensor", "dtype", "shape"], rows, "schema-table");
}

async function versionPage(view, name, version) {
  const d = await api("models/" + enc(name) + "/versions/" + enc(version));
  view.append(el("h1", {}, d.name + " v" + d.version));
  const facts = el("dl", { class: "facts", id: "version-facts" });
  const fact = (k, v) => facts.append(el("dt", {}, k), el("dd", { "data-fact": k }, v));
  fact("backend", d.backend);
  fact("framework", d.framework || "–");
  fact("size", size(d.size));
  fact("created", when(d.created));
  fact("aliases", Object.entries(d.aliases || {}).map(([a, w]) => a + (w < 1 ? " " + Math.round(w * 100) + "%" : "")).join(", ") || "–");
  fact("tags", Object.entries(d.tags || {}).map(([k, v]) => k + "=" + v).join(" ") || "–");
  fact("served", d.served ? "yes, by this server" : "no");
  fact("reference profile", d.has_profile ? "recorded" + (d.profile_rows ? " (" + d.profile_rows + " rows): drift is monitored when served" : "") : "none");
  view.append(facts);
  view.append(el("h2", {}, "Schema"), schemaTable(d.schema));
  view.append(el("h2", {}, "Metrics" + (d.evaluation ? " (evaluation: " + d.evaluation.task + ", " + d.evaluation.rows + " rows)" : "")));
  if (Object.keys(d.metrics).length) {
    view.append(table(["metric", "value"], Object.entries(d.metrics).map(([k, v]) => [k, el("td", { class: "num" }, num(v, 4))]), "metrics-table"));
    view.append(charts(d.charts, "metric-charts"));
  } else {
    view.append(el("p", { class: "muted" }, "No metrics recorded."));
  }
  view.append(el("h2", {}, "Gates"));
  const gates = Object.entries(d.gates || {});
  if (gates.length) {
    view.append(table(["alias", "gate", "this version"], gates.map(([a, g]) => [
      a,
      Object.entries(g.gate).map(([k, c]) => k + " " + c).join(", "),
      g.failures.length ? el("td", { class: "error" }, "fails: " + g.failures.join("; ")) : el("td", { class: "ok" }, "passes"),
    ]), "gates-table"));
  } else {
    view.append(el("p", { class: "muted" }, "No gates stored for this model's aliases."));
  }
  view.append(el("h2", {}, "Compression / conversion report"));
  if (d.report) {
    view.append(el("pre", { id: "report" }, d.report.text), charts(d.report.charts, "report-charts"));
  } else {
    view.append(el("p", { class: "muted" }, "This package carries no report (it was not made by compress or convert)."));
  }
}

async function livePage(view) {
  view.append(el("h1", {}, "Live service"));
  const body = el("div", { id: "live" });
  view.append(body);
  const draw = async () => {
    const d = await api("live?window=300");
    body.replaceChildren(
      el("p", { class: "muted" }, "Last " + d.window_s / 60 + " minutes, sampled every " + d.interval_s +
        " s from the server's metrics; refreshed every " + REFRESH_MS / 1000 + " s."),
      table(
        ["model", "version", "requests", "errors", "in flight", "p50 (since start)", "p99 (since start)"],
        d.models.map((m) => [m.model, m.version, num(m.requests, 6), num(m.errors, 6), num(m.in_flight),
          num(m.p50_ms) + " ms", num(m.p99_ms) + " ms"]),
        "live-table",
      ),
      charts(Object.values(d.charts), "live-charts"),
    );
  };
  await draw();
  timer = setInterval(() => draw().catch(show), REFRESH_MS);
}

async function driftPage(view) {
  const d = await api("drift");
  view.append(el("h1", {}, "Input drift"));
  if (!d.models.length) {
    view.append(el("p", { class: "muted", id: "no-drift" }, "No monitored model: a served version is monitored when its package carries a reference profile (publish(..., reference=rows))."));
    return;
  }
  for (const m of d.models) {
    view.append(el("h2", {}, m.model + " v" + m.version));
    view.append(el("p", {}, m.requests + " requests, window of " + m.window_rows + " rows; drifted: " + (m.drifted.length ? m.drifted.join(", ") : "none")));
    view.append(table(["feature", "PSI", "KS"], m.features.map((f) => [f.feature, el("td", { class: "num" }, num(f.psi)), el("td", { class: "num" }, num(f.ks))]), "drift-" + m.model + "-" + m.version));
    view.append(charts(m.charts));
  }
}

// -- routing and the token --------------------------------------------------------------------

function show(error) {
  if (error instanceof AuthNeeded) {
    sessionStorage.removeItem(TOKEN);
    login("The token was refused: enter it again.");
    return;
  }
  const view = document.getElementById("view");
  view.replaceChildren(el("p", { class: "error", id: "error" }, String(error.message || error)));
}

function login(message) {
  if (timer) { clearInterval(timer); timer = null; }
  document.getElementById("view").replaceChildren();
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

async function route() {
  if (timer) { clearInterval(timer); timer = null; }
  const view = document.getElementById("view");
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === (parts[0] || "models") || (a.dataset.nav === "models" && parts[0] === "m"));
  view.replaceChildren();
  try {
    if (!overview) {
      overview = await api("overview");
      for (const a of document.querySelectorAll("nav a[data-nav=live], nav a[data-nav=drift]")) a.hidden = !overview.live;
      document.getElementById("where").textContent = overview.title + (overview.library ? " · " + overview.library : "");
    }
    const page = el("div", { id: "page" });
    if (parts[0] === "m" && parts.length === 2) await modelPage(page, parts[1]);
    else if (parts[0] === "m" && parts.length === 3) await versionPage(page, parts[1], parts[2]);
    else if (parts[0] === "live") await livePage(page);
    else if (parts[0] === "drift") await driftPage(page);
    else await modelsPage(page);
    view.replaceChildren(page);
    document.body.dataset.ready = location.hash || "#/";
  } catch (e) {
    show(e);
  }
}

async function start() {
  const session = await (await fetch(API + "session", { cache: "no-store" })).json();
  document.title = session.title;
  const signout = document.getElementById("signout");
  signout.hidden = !session.auth;
  signout.addEventListener("click", () => { sessionStorage.removeItem(TOKEN); overview = null; login(""); });
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN, document.getElementById("token").value.trim());
    document.getElementById("token").value = "";
    document.getElementById("login").hidden = true;
    route();
  });
  window.addEventListener("hashchange", route);
  if (session.auth && !sessionStorage.getItem(TOKEN)) login("");
  else route();
}

start();
