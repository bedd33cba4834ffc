// The operations console: plain JavaScript over the gateway's HTTP API (no build step).
// Every value from the API is put on the page with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "gateway-token";
const $ = (id) => document.getElementById(id);
const state = { tab: "dashboard", timer: null, file: null, original: "", validateTimer: null, validation: 0 };

// -- API ----------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.details = error.details || {};
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => null);
  if (response.status === 401 && path !== "/api/whoami") logout("Your session ended: log in again.");
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === null || cell === undefined ? "" : String(cell);
    tr.appendChild(td);
  }
  return tr;
}

function fill(tableId, rows) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows);
}

function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

// -- login --------------------------------------------------------------------------------------
async function login(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    const who = await api("GET", "/api/whoami");
    $("who").textContent = `${who.name} (${who.role})`;
    document.body.dataset.role = who.role;
    $("login").hidden = true;
    $("tabs").hidden = false;
    $("logout").hidden = false;
    $("login-error").textContent = "";
    const health = await api("GET", "/api/health");
    $("node").textContent = `node ${health.node}`;
    show(state.tab);
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("login-error").textContent = error.status === 401 ? "That token is not valid." : `Cannot log in: ${error.message}`;
  }
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(state.timer);
  for (const section of document.querySelectorAll(".tab")) section.hidden = true;
  $("tabs").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

function show(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.tab === tab);
  for (const section of document.querySelectorAll(".tab")) section.hidden = section.id !== tab;
  clearInterval(state.timer);
  const refresh = { dashboard: refreshDashboard, dialplan: loadDialplans, accounts: refreshAccounts, calls: refreshCalls, sites: refreshSites, directory: searchDirectory, bans: refreshBans, billing: showStatement }[tab];
  refresh().catch((error) => toast(error.message));
  if (tab === "dashboard" || tab === "calls" || tab === "sites" || tab === "bans") {
    state.timer = setInterval(() => refresh().catch(() => {}), 2000);
  }
}

// -- dashboard ----------------------------------------------------------------------------------
function drawChart(canvas, points, key, format, floor) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#d8dee6";
  ctx.fillStyle = "#6b7785";
  const values = points.map((p) => p[key]);
  const max = Math.max(floor, ...values) * 1.1;
  for (let i = 0; i <= 2; i++) {
    const y = pad / 2 + (h - pad) * (i / 2);
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(format(max * (1 - i / 2)), 0, y + 4);
  }
  if (points.length < 2) { ctx.fillText("collecting…", w / 2 - 30, h / 2); return; }
  const t0 = points[0].t, t1 = points[points.length - 1].t;
  ctx.strokeStyle = "#1f6feb";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach((p, i) => {
    const x = pad + (w - pad) * ((p.t - t0) / Math.max(1, t1 - t0));
    const y = pad / 2 + (h - pad) * (1 - p[key] / max);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.lineWidth = 1;
}

async function refreshDashboard() {
  const stats = await api("GET", "/api/stats?seconds=300");
  const last = stats.last || { cps: 0, failure_rate: 0 };
  $("stat-registrations").textContent = stats.registrations === null ? "?" : stats.registrations;
  $("stat-calls").textContent = stats.active_calls;
  $("stat-cps").textContent = last.cps.toFixed(1);
  $("stat-failures").textContent = `${(last.failure_rate * 100).toFixed(1)} %`;
  $("stat-lag").textContent = `${stats.loop_lag_ms.toFixed(1)} ms`;
  drawChart($("chart-cps"), stats.history, "cps", (v) => v.toFixed(1), 1);
  drawChart($("chart-failures"), stats.history, "failure_rate", (v) => `${Math.round(v * 100)}%`, 0.1);
  drawChart($("chart-active"), stats.history, "active_calls", (v) => v.toFixed(0), 1);
  fill("trunks", stats.trunks.map((t) => {
    const toggle = el("button", t.enabled ? "Disable" : "Enable", t.enabled ? "danger admin-only" : "admin-only");
    toggle.addEventListener("click", async () => {
      if (t.enabled && !confirm(`Disable trunk ${t.name}? Its calls and registrations will be refused.`)) return;
      try { await api("PATCH", `/api/trunks/${encodeURIComponent(t.name)}`, { enabled: !t.enabled }); refreshDashboard(); }
      catch (error) { toast(error.message); }
    });
    return row([t.name, t.kind, el("span", t.health, t.health === "up" ? "ok" : t.health === "down" ? "bad" : "warn"),
      `${t.active_calls} / ${t.max_calls}`, toggle]);
  }));
  await refreshRegistrations();
}

async function refreshRegistrations() {
  const params = new URLSearchParams({ limit: "200" });
  if ($("reg-group").value) params.set("group", $("reg-group").value);
  if ($("reg-number").value) params.set("number", $("reg-number").value);
  const data = await api("GET", `/api/registrations?${params}`);
  fill("registrations", data.registrations.map((r) => {
    const remove = el("button", "Remove", "danger admin-only");
    remove.addEventListener("click", async () => {
      if (!confirm(`Remove the registration of ${r.aor} (${r.contact})?`)) return;
      try { await api("DELETE", `/api/registrations/${encodeURIComponent(r.aor)}?key=${encodeURIComponent(r.key)}`); refreshRegistrations(); }
      catch (error) { toast(error.message); }
    });
    return row([r.aor, r.contact, r.source, `${r.expires_in} s`, r.trunk, remove]);
  }));
}

// -- dialplan -----------------------------------------------------------------------------------
async function loadDialplans() {
  const data = await api("GET", "/api/dialplans");
  const select = $("dp-file");
  const current = state.file || (data.dialplans.find((d) => d.kind === "group") || data.dialplans[0] || {}).name;
  select.replaceChildren(...data.dialplans.map((d) => {
    const option = el("option", d.kind === "group" ? `${d.name} (group ${d.group})` : `${d.name} (${d.kind})`);
    option.value = d.name;
    return option;
  }));
  select.value = current;
  $("dp-version").textContent = data.version === null ? "serving the seed files" :
    `version ${data.version} (${data.source}, by ${data.applied_by}, ${data.applied_at})`;
  if (!$("ex-group").value && data.groups.length) $("ex-group").value = data.groups[0];
  await openFile(current);
  await loadVersions();
}

async function openFile(name) {
  if (!name) return;
  const data = await api("GET", `/api/dialplans/${encodeURIComponent(name)}`);
  state.file = name;
  state.original = data.text;
  $("dp-text").value = data.text;
  setValidation("ok", "Unchanged: this is the live text.", []);
  $("dp-apply").disabled = true;
}

function setValidation(kind, text, errors) {
  const status = $("dp-status");
  status.textContent = text;
  status.className = `status ${kind}`;
  status.dataset.state = kind;
  $("dp-errors").replaceChildren(...errors.map((p) => {
    const item = el("li", `${p.file}:${p.line ?? "?"}: ${p.field || "(top level)"}: ${p.message}`);
    if (p.line && p.file === `${state.file}.yaml`) {
      item.title = "show this line";
      item.classList.add("link");
      item.addEventListener("click", () => selectLine(p.line));
    }
    return item;
  }));
}

function selectLine(line) {
  const area = $("dp-text");
  const lines = area.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  area.focus();
  area.setSelectionRange(start, start + (lines[line - 1] || "").length);
  const lineHeight = area.scrollHeight / Math.max(1, lines.length);
  area.scrollTop = Math.max(0, (line - 5) * lineHeight);
}

function scheduleValidation() {
  clearTimeout(state.validateTimer);
  const text = $("dp-text").value;
  if (text === state.original) {
    setValidation("ok", "Unchanged: this is the live text.", []);
    $("dp-apply").disabled = true;
    return;
  }
  setValidation("pending", "Checking…", []);
  $("dp-apply").disabled = true;
  state.validateTimer = setTimeout(() => validateDraft(text), 400);
}

async function validateDraft(text) {
  const ticket = ++state.validation;
  try {
    const result = await api("POST", `/api/dialplans/${encodeURIComponent(state.file)}/validate`, { text });
    if (ticket !== state.validation) return; // a newer edit is being checked
    if (result.ok) {
      const warn = result.warnings.length ? ` (${result.warnings.length} warning(s))` : "";
      setValidation("ok", `Valid${warn}: ready to apply.`, result.warnings);
      $("dp-apply").disabled = false;
    } else {
      setValidation("bad", `${result.errors.length} error(s): this draft cannot be applied.`, result.errors);
    }
  } catch (error) {
    if (ticket === state.validation) setValidation("bad", error.message, error.details.errors || []);
  }
}

async function applyDraft() {
  const text = $("dp-text").value;
  $("dp-apply").disabled = true;
  try {
    const result = await api("PUT", `/api/dialplans/${encodeURIComponent(state.file)}`, { text, comment: $("dp-comment").value });
    $("dp-result").textContent = `Applied as version ${result.version.number}. New calls use it now.`;
    $("dp-result").className = "ok";
    $("dp-comment").value = "";
    await loadDialplans();
  } catch (error) {
    $("dp-result").textContent = `Refused: ${error.message}`;
    $("dp-result").className = "bad";
    if (error.details.errors) setValidation("bad", "Refused by the gateway.", error.details.errors);
  }
}

async function loadVersions() {
  const data = await api("GET", "/api/dialplan-versions");
  fill("dp-versions", data.versions.map((v) => {
    const button = el("button", v.number === data.current ? "active" : "Roll back", "admin-only");
    button.disabled = v.number === data.current;
    button.addEventListener("click", async () => {
      if (!confirm(`Roll back to version ${v.number}?`)) return;
      try {
        const result = await api("POST", `/api/dialplan-versions/${v.number}/rollback`, {});
        toast(`Rolled back: now version ${result.version.number}`);
        await loadDialplans();
      } catch (error) { toast(error.message); }
    });
    return row([v.number, v.source, v.applied_by, v.applied_at, v.comment, button]);
  }));
}

function describe(decision) {
  if (decision.result === "refused") return `REFUSE ${decision.status} ${decision.reason}`;
  const lines = [
    `ROUTE as ${decision.call_class}`,
    `called:            ${decision.called}${decision.phone_context ? ` (phone-context ${decision.phone_context})` : ""}`,
    `presented calling: ${decision.presented_calling}`,
    `asserted calling:  ${decision.asserted_calling}`,
    "targets:",
    ...decision.targets.map((t) => `  - ${t.kind} ${t.user}${t.trunk ? ` trunk=${t.trunk}` : ""}${t.member ? ` member=${t.member}` : ""}${t.service ? ` service=${t.service}` : ""}${t.mode ? ` mode=${t.mode}` : ""}`),
  ];
  for (const warning of decision.warnings || []) lines.push(`warning: ${warning}`);
  return lines.join("\n");
}

async function explain(event) {
  event.preventDefault();
  const body = { from: $("ex-from").value.trim(), to: $("ex-to").value.trim() };
  if ($("ex-at").value) body.at = $("ex-at").value;
  if ($("ex-group").value.trim()) body.group = $("ex-group").value.trim();
  if ($("ex-trunk").value.trim()) body.trunk = $("ex-trunk").value.trim();
  if ($("ex-draft").checked && state.file) body.draft = { name: state.file, text: $("dp-text").value };
  const out = $("ex-decision");
  try {
    const result = await api("POST", "/api/explain", body);
    out.textContent = `[${result.against} plan, origin ${result.request.origin}, ${result.request.at}]\n${describe(result.decision)}`;
    out.dataset.result = result.decision.result;
    $("ex-trace").replaceChildren(...result.trace.map((s) => el("li", `${s.step}: ${s.detail}`)));
  } catch (error) {
    out.textContent = `Error: ${error.message}`;
    out.dataset.result = "error";
    $("ex-trace").replaceChildren();
  }
}

// -- accounts -----------------------------------------------------------------------------------
async function refreshAccounts() {
  const data = await api("GET", "/api/accounts");
  const select = $("acct-state");
  if (!select.options.length) select.replaceChildren(...data.states.map((s) => { const o = el("option", s); o.value = s; return o; }));
  const rows = [];
  for (const [key, value] of Object.entries(data.numbers)) rows.push(row(["number", key, value]));
  for (const [key, value] of Object.entries(data.groups)) rows.push(row(["group", key, value]));
  fill("acct-list", rows);
}

async function setAccount(event) {
  event.preventDefault();
  const scope = $("acct-scope").value, key = $("acct-key").value.trim(), value = $("acct-state").value;
  try {
    const result = await api("PUT", `/api/accounts/${scope}/${encodeURIComponent(key)}`, { state: value });
    $("acct-result").textContent = `${result.scope} ${result.key}: ${result.previous} → ${result.state}`;
    $("acct-result").className = "ok";
    await refreshAccounts();
  } catch (error) {
    $("acct-result").textContent = error.message;
    $("acct-result").className = "bad";
  }
}

async function getAccount() {
  const scope = $("acct-scope").value, key = $("acct-key").value.trim();
  try {
    const result = await api("GET", `/api/accounts/${scope}/${encodeURIComponent(key)}`);
    $("acct-result").textContent = `${result.scope} ${result.key}: ${result.state}`;
    $("acct-result").className = "";
  } catch (error) {
    $("acct-result").textContent = error.message;
    $("acct-result").className = "bad";
  }
}

// -- calls --------------------------------------------------------------------------------------
async function refreshCalls() {
  const data = await api("GET", "/api/calls?limit=500");
  $("calls-summary").textContent = `${data.count} active, ${data.completed} completed, ${data.failed} failed since start`;
  fill("call-list", data.calls.map((c) => {
    const hang = el("button", "Hang up", "danger admin-only");
    hang.addEventListener("click", async () => {
      if (!confirm(`Hang up call ${c.id}?`)) return;
      try { await api("DELETE", `/api/calls/${encodeURIComponent(c.id)}`); toast(`Call ${c.id} hung up`); refreshCalls(); }
      catch (error) { toast(error.message); }
    });
    return row([c.id, c.state, c.call_class, c.from, c.to, c.inbound_trunk, c.outbound_trunk, `${c.age_s.toFixed(0)} s`, hang]);
  }));
}

// -- edge sites ---------------------------------------------------------------------------------
function ago(ts) {
  if (ts === null || ts === undefined) return "never";
  const s = Math.max(0, Date.now() / 1000 - ts);
  return s < 90 ? `${s.toFixed(0)} s ago` : `${(s / 60).toFixed(0)} min ago`;
}

function yesNo(value) {
  return value === null || value === undefined ? "–" : (value ? "yes" : "no");
}

async function refreshSites() {
  const data = await api("GET", "/api/sites");
  $("sites-summary").textContent = !data.following
    ? "Not following edge sites (no edge: section in the gateway configuration)."
    : `${data.sites.length} site(s); broker ${data.broker_connected ? "connected" : "not connected"}`;
  fill("site-list", data.sites.map((s) => {
    const reach = el("span", s.reachability, `pill ${s.reachability}`);
    const version = s.pending_confirm ? `${s.applied_version} (v${s.pending_confirm.version} on trial)` : s.applied_version;
    const survivable = s.survivable ? (s.survivable.active ? "active" : "standby") : "–";
    const last = s.last_event ? `${s.last_event.type} ${ago(s.last_event.ts)}` : "";
    return row([s.site, reach, version, yesNo(s.converged), yesNo(s.core_reachable), survivable, ago(s.last_seen), last]);
  }));
}

// -- directory (企业通信录, number lookup) ----------------------------------------------------------
async function searchDirectory() {
  const q = $("dir-q").value.trim();
  const data = await api("GET", `/api/directory?q=${encodeURIComponent(q)}&limit=200`);
  $("dir-summary").textContent = `${data.count}${data.truncated ? "+" : ""} found`;
  fill("dir-list", data.entries.map((e) => row([e.name, e.department, e.title, e.short, e.long, e.group])));
}

// -- bans ---------------------------------------------------------------------------------------
async function refreshBans() {
  const data = await api("GET", "/api/bans");
  $("ban-summary").textContent = `${data.bans.length} banned (${data.store} store)`;
  fill("ban-list", data.bans.map((b) => {
    const lift = el("button", "Lift", "admin-only");
    lift.addEventListener("click", async () => {
      try { await api("DELETE", `/api/bans/${encodeURIComponent(b.host)}`); toast(`Ban of ${b.host} lifted`); refreshBans(); }
      catch (error) { toast(error.message); }
    });
    return row([b.host, b.reason, `${b.remaining.toFixed(0)} s`, b.by, lift]);
  }));
  fill("locked-list", data.locked_users.map((u) => row([u.username, new Date(u.until * 1000).toISOString()])));
}

async function addBan(event) {
  event.preventDefault();
  const body = { host: $("ban-host").value.trim() };
  const seconds = $("ban-seconds").value.trim();
  if (seconds) body.seconds = Number(seconds);
  try {
    const ban = await api("POST", "/api/bans", body);
    $("ban-result").textContent = `${ban.host} banned for ${ban.remaining.toFixed(0)} s`;
    $("ban-result").className = "ok";
    await refreshBans();
  } catch (error) {
    $("ban-result").textContent = error.message;
    $("ban-result").className = "bad";
  }
}

// -- billing ------------------------------------------------------------------------------------
function yuan(fen) {
  return `${(fen / 100).toFixed(2)} yuan`;
}

async function showStatement() {
  if (!$("bill-month").value) $("bill-month").value = new Date().toISOString().slice(0, 7);
  const params = new URLSearchParams({ group: $("bill-group").value.trim(), month: $("bill-month").value });
  if ($("bill-version").value) params.set("version", $("bill-version").value);
  const s = await api("GET", `/api/billing/statement?${params}`);
  const t = s.totals;
  const version = s.version === null ? "draft, not issued" : `version ${s.version} (${s.reason})`;
  $("bill-summary").textContent = `${s.group} ${s.month}, ${version}: total ${yuan(t.total_fen)} = fees ${yuan(t.fees_fen)} + package ${yuan(t.package_fen)} + usage ${yuan(t.usage_fen)}; discounts ${yuan(t.discount_fen)}; ${t.calls} calls; account ${s.account_state}`;
  fill("bill-fees", s.fees.map((f) => row([f.item, f.detail, f.count, f.days, f.amount_fen])));
  const classes = s.package ? Object.entries(s.package.classes) : [];
  fill("bill-package", classes.map(([cls, use]) => row([cls, use.included_minutes, use.used_minutes])));
  fill("bill-usage", s.usage.map((u) => row([u.period, u.call_class, u.payer_role, u.contract, u.calls, u.charged_minutes, u.included_minutes, u.discount_fen, u.amount_fen])));
}

// -- wiring -------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => { event.preventDefault(); login($("token").value.trim()); });
  $("logout").addEventListener("click", () => logout());
  for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => show(button.dataset.tab));
  $("reg-filter").addEventListener("submit", (event) => { event.preventDefault(); refreshRegistrations().catch((e) => toast(e.message)); });
  $("dp-file").addEventListener("change", () => openFile($("dp-file").value).catch((e) => toast(e.message)));
  $("dp-text").addEventListener("input", scheduleValidation);
  $("dp-apply").addEventListener("click", applyDraft);
  $("dp-revert").addEventListener("click", () => { $("dp-text").value = state.original; scheduleValidation(); });
  $("explain-form").addEventListener("submit", explain);
  $("acct-form").addEventListener("submit", setAccount);
  $("acct-get").addEventListener("click", getAccount);
  $("dir-form").addEventListener("submit", (event) => { event.preventDefault(); searchDirectory().catch((e) => toast(e.message)); });
  $("ban-form").addEventListener("submit", addBan);
  $("bill-form").addEventListener("submit", (event) => { event.preventDefault(); showStatement().catch((e) => toast(e.message)); });
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) login(token);
});
