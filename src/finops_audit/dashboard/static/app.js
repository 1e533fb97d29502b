// finops-audit dashboard. Plain DOM, no framework, no build step, nothing from another origin.
// Every number shown comes from the server's analytics endpoints; this script only draws them.
// Text from the trail is always set with textContent, never parsed as HTML.
"use strict";

(function () {
  const FILTERS = ["tool", "status", "user", "client", "session", "since", "until", "param"];
  const MAX_ROWS = 200;
  const REFRESH_MS = 15000;
  // Without a "since", the analytics views cover the last 24 h: over a whole
  // 1,000,000-row trail they take seconds (see the docs); set since to widen them.
  const DEFAULT_WINDOW = "24h";
  const $ = (id) => document.getElementById(id);

  const state = {
    filters: {},
    paused: false,
    held: [], // entries that arrived while paused, oldest first
    heldCount: 0,
    source: null,
    lastId: 0,
    seen: new Set(),
    refreshing: false,
  };

  // ------------------------------------------------------------------ helpers

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function utc(iso) {
    // "2026-12-06T00:03:57.123456Z" -> "2026-12-06 00:03:57.123"
    return iso ? iso.replace("T", " ").replace(/(\.\d{3})\d*/, "$1").replace(/(Z|\+00:00)$/, "") : "";
  }

  function local(iso) {
    return iso ? new Date(iso).toLocaleString() : "";
  }

  function ms(value) {
    return value === null || value === undefined ? "" : Number(value).toFixed(value < 10 ? 3 : 1);
  }

  function windowed(extra) {
    return state.filters.since ? extra || {} : Object.assign({ since: DEFAULT_WINDOW }, extra || {});
  }

  function query(extra) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(state.filters)) if (v) params.set(k, v);
    for (const [k, v] of Object.entries(extra || {})) if (v !== undefined && v !== null) params.set(k, v);
    const text = params.toString();
    return text ? "?" + text : "";
  }

  async function api(path, extra, init) {
    const response = await fetch("api/" + path + query(extra), init || {});
    const body = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  function showError(err) {
    $("filter-error").textContent = err ? String(err.message || err) : "";
  }

  // ------------------------------------------------------------------ filters in the URL

  function readFilters() {
    const params = new URLSearchParams(location.search);
    const filters = {};
    for (const name of FILTERS) {
      const value = params.get(name);
      if (value) filters[name] = value;
    }
    state.filters = filters;
    const form = $("filters");
    for (const name of FILTERS) form.elements[name].value = filters[name] || "";
  }

  function applyForm(event) {
    if (event) event.preventDefault();
    const form = $("filters");
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    const text = params.toString();
    history.pushState(null, "", location.pathname + (text ? "?" + text : ""));
    readFilters();
    reload();
  }

  function setFilter(name, value) {
    $("filters").elements[name].value = value;
    applyForm();
  }

  // ------------------------------------------------------------------ entries

  function entryRow(entry, fresh) {
    const tr = el("tr", null, fresh ? "fresh" : "");
    tr.dataset.id = entry.id;
    if (entry.tool_name === "__audit_gap__") tr.classList.add("gap");
    tr.append(
      el("td", entry.id, "num"),
      Object.assign(el("td", utc(entry.timestamp)), { title: local(entry.timestamp) }),
      el("td", entry.tool_name, "tool"),
      el("td", entry.status, entry.status),
      el("td", ms(entry.execution_time_ms), "num"),
      el("td", entry.user || ""),
      el("td", entry.client_name || ""),
      Object.assign(el("td", entry.error_message || "", "err"), { title: entry.error_message || "" }),
    );
    tr.addEventListener("click", () => openEntry(entry.id));
    return tr;
  }

  function showEntries(entries) {
    const body = $("logs").tBodies[0];
    body.replaceChildren(...entries.map((e) => entryRow(e, false)));
    state.seen = new Set(entries.map((e) => e.id));
  }

  function addLive(entries) {
    const body = $("logs").tBodies[0];
    for (const entry of entries) {
      if (state.seen.has(entry.id)) continue;
      state.seen.add(entry.id);
      body.insertBefore(entryRow(entry, true), body.firstChild);
    }
    while (body.rows.length > MAX_ROWS) {
      state.seen.delete(Number(body.lastChild.dataset.id));
      body.removeChild(body.lastChild);
    }
  }

  async function loadEntries() {
    const page = await api("logs", { limit: 100 });
    showEntries(page.entries);
    return page.last_id;
  }

  async function openEntry(id) {
    const entry = await api("logs/" + encodeURIComponent(id));
    $("entry-title").textContent = "Entry " + entry.id;
    const fields = $("entry-fields");
    const rows = [
      ["id", entry.id], ["event id", entry.event_id], ["time (UTC)", utc(entry.timestamp)],
      ["local time", local(entry.timestamp)], ["tool", entry.tool_name], ["status", entry.status],
      ["ms", ms(entry.execution_time_ms)], ["error", entry.error_message], ["user", entry.user],
      ["client", [entry.client_name, entry.client_version].filter(Boolean).join(" ")],
      ["session", entry.session_id], ["request", entry.request_id],
      ["auth client", entry.auth_client_id], ["trace id", entry.trace_id],
      ["span id", entry.span_id], ["replica", entry.replica_id],
      ["labels", entry.labels && Object.keys(entry.labels).length ? JSON.stringify(entry.labels) : ""],
    ];
    fields.replaceChildren();
    for (const [name, value] of rows) {
      fields.append(el("dt", name), el("dd", value === null || value === undefined ? "" : value));
    }
    $("entry-params").textContent = JSON.stringify(entry.parameters, null, 2);
    $("entry").hidden = false;
  }

  // ------------------------------------------------------------------ live stream, pause

  function connect(afterId) {
    if (state.source) state.source.close();
    const source = new EventSource("api/stream" + query({ after_id: afterId }));
    state.source = source;
    source.addEventListener("open", () => setLive());
    source.addEventListener("error", () => setLive("reconnecting"));
    source.addEventListener("hello", () => setLive());
    source.addEventListener("heartbeat", (event) => {
      const beat = JSON.parse(event.data);
      $("heartbeat").textContent = "heartbeat " + new Date(beat.at * 1000).toLocaleTimeString();
    });
    source.addEventListener("entry", (event) => {
      const entry = JSON.parse(event.data);
      state.lastId = Math.max(state.lastId, entry.id);
      if (state.paused) {
        state.held.push(entry);
        state.heldCount += 1;
        const badge = $("paused-count");
        badge.textContent = state.heldCount + " new";
        badge.hidden = false;
      } else {
        addLive([entry]);
      }
    });
  }

  function setLive(problem) {
    const live = $("live");
    if (problem) {
      live.textContent = problem;
      live.className = "live off";
    } else if (state.paused) {
      live.textContent = "paused";
      live.className = "live paused";
    } else {
      live.textContent = "live";
      live.className = "live on";
    }
  }

  function togglePause() {
    state.paused = !state.paused;
    const button = $("pause");
    button.textContent = state.paused ? "Resume" : "Pause";
    button.setAttribute("aria-pressed", String(state.paused));
    if (!state.paused) {
      addLive(state.held);
      state.held = [];
      state.heldCount = 0;
      $("paused-count").hidden = true;
      refreshAnalytics();
    }
    setLive();
  }

  // ------------------------------------------------------------------ analytics views

  async function loadTools() {
    $("tools-status").textContent = "computing…";
    const started = performance.now();
    const body = await api("tools", windowed());
    const rows = body.tools.map((t) => {
      const tr = el("tr");
      tr.dataset.tool = t.tool_name;
      tr.append(
        el("td", t.tool_name, "tool"), el("td", t.calls.toLocaleString(), "num"),
        el("td", t.failures.toLocaleString(), "num"),
        el("td", (t.failure_rate * 100).toFixed(1) + " %", "num"),
        el("td", ms(t.p50_ms), "num"), el("td", ms(t.p95_ms), "num"),
        el("td", ms(t.p99_ms), "num"), el("td", ms(t.max_ms), "num"),
      );
      tr.addEventListener("click", () => setFilter("tool", t.tool_name));
      return tr;
    });
    $("tools").tBodies[0].replaceChildren(...rows);
    $("tool-names").replaceChildren(...body.tools.map((t) => Object.assign(el("option"), { value: t.tool_name })));
    $("tools-status").textContent =
      "in " + Math.round(body.elapsed_ms) + " ms (" + Math.round(performance.now() - started) + " ms here)";
  }

  async function loadTimeline() {
    const body = await api("timeline", windowed({ bucket: "auto" }));
    $("bucket").textContent = "per " + duration(body.bucket_seconds);
    $("window").textContent = state.filters.since ? "" : "(last " + DEFAULT_WINDOW + "; set since to widen)";
    drawChart(body.buckets, body.bucket_seconds);
  }

  function duration(seconds) {
    if (seconds % 86400 === 0) return seconds / 86400 + " d";
    if (seconds % 3600 === 0) return seconds / 3600 + " h";
    if (seconds % 60 === 0) return seconds / 60 + " min";
    return seconds + " s";
  }

  function drawChart(buckets, bucketSeconds) {
    const box = $("chart");
    const width = Math.max(box.clientWidth, 300);
    const height = Math.max(box.clientHeight, 120);
    const pad = { left: 48, right: 8, top: 8, bottom: 22 };
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "calls over time");
    const top = buckets.reduce((m, b) => (b.calls > m ? b.calls : m), 0) || 1;
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const step = plotW / Math.max(buckets.length, 1);
    const y = (v) => pad.top + plotH - (v / top) * plotH;
    const shape = (name, attrs, cls) => {
      const node = document.createElementNS(ns, name);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (cls) node.setAttribute("class", cls);
      svg.append(node);
      return node;
    };
    shape("line", { x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0) }, "axis");
    shape("text", { x: pad.left - 6, y: pad.top + 10, "text-anchor": "end" }).textContent = top.toLocaleString();
    shape("text", { x: pad.left - 6, y: y(0), "text-anchor": "end" }).textContent = "0";
    const bars = [];
    buckets.forEach((b, i) => {
      const x = pad.left + i * step + step * 0.1;
      const w = Math.max(step * 0.8, 1);
      // Failures drawn from the baseline over the calls bar: the two stack visually.
      const calls = shape("rect", { x, y: y(b.calls), width: w, height: y(0) - y(b.calls) }, "calls");
      shape("rect", { x, y: y(b.failures), width: w, height: y(0) - y(b.failures) }, "fails");
      bars.push(calls);
    });
    const ticks = Math.min(buckets.length, 6);
    for (let t = 0; t < ticks; t++) {
      const i = Math.floor((t * (buckets.length - 1)) / Math.max(ticks - 1, 1));
      const text = utc(buckets[i].start);
      const label = bucketSeconds >= 86400 ? text.slice(0, 10) : bucketSeconds >= 60 ? text.slice(5, 16) : text.slice(11, 19);
      shape("text", { x: pad.left + i * step + step / 2, y: height - 6, "text-anchor": "middle" }).textContent = label;
    }
    const tip = $("chart-tip");
    svg.addEventListener("mousemove", (event) => {
      const rect = svg.getBoundingClientRect();
      const i = Math.floor(((event.clientX - rect.left) * (width / rect.width) - pad.left) / step);
      bars.forEach((bar, j) => bar.classList.toggle("hot", j === i));
      if (i < 0 || i >= buckets.length) {
        tip.hidden = true;
        return;
      }
      const b = buckets[i];
      tip.replaceChildren(
        el("div", utc(b.start) + " UTC"), el("div", local(b.start) + " local", "muted"),
        el("div", b.calls.toLocaleString() + " calls, " + b.failures.toLocaleString() + " failed"),
      );
      tip.style.left = event.clientX + 12 + "px";
      tip.style.top = event.clientY + 12 + "px";
      tip.hidden = false;
    });
    svg.addEventListener("mouseleave", () => {
      tip.hidden = true;
      bars.forEach((bar) => bar.classList.remove("hot"));
    });
    if (!buckets.length) shape("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }).textContent = "no calls";
    box.replaceChildren(svg);
  }

  async function loadSlowest() {
    const body = await api("slowest", windowed({ limit: 10 }));
    $("slowest").tBodies[0].replaceChildren(...body.entries.map((e) => {
      const tr = el("tr");
      tr.dataset.id = e.id;
      tr.append(el("td", ms(e.execution_time_ms), "num"), el("td", e.tool_name),
        Object.assign(el("td", utc(e.timestamp)), { title: local(e.timestamp) }), el("td", e.id, "num"));
      tr.addEventListener("click", () => openEntry(e.id));
      return tr;
    }));
  }

  async function loadErrors() {
    const body = await api("errors", windowed({ limit: 10 }));
    $("errors").tBodies[0].replaceChildren(...body.errors.map((g) => {
      const tr = el("tr");
      tr.append(el("td", g.tool_name), Object.assign(el("td", g.error_message || "", "err"), { title: g.error_message || "" }),
        el("td", g.count.toLocaleString(), "num"),
        Object.assign(el("td", utc(g.first_seen).slice(5, 19)), { title: local(g.first_seen) }),
        Object.assign(el("td", utc(g.last_seen).slice(5, 19)), { title: local(g.last_seen) }));
      return tr;
    }));
  }

  async function loadHealth() {
    const body = await api("health");
    $("trail").textContent = body.trail + (body.central ? " (fleet)" : "");
    const s = body.stats;
    const rows = [
      ["pending", s.pending], ["dropped", s.dropped], ["gap rows", body.gap_rows],
      ["lost", s.lost], ["last write error", s.last_error || "none"],
      ["open streams", body.streams],
    ];
    if (body.central || Object.keys(s.forwarding || {}).length) {
      rows.push(["forwarding lag", s.forward_lag_entries + " entries, " + Number(s.forward_lag_seconds).toFixed(1) + " s"]);
      rows.push(["forwarding error", s.forward_last_error || "none"]);
    }
    const v = body.last_verify;
    rows.push(["last verify", v ? verifyText(v) : "not run since the dashboard started"]);
    const list = $("health");
    list.replaceChildren();
    for (const [name, value] of rows) {
      const warn = (name === "dropped" || name === "gap rows" || name === "lost") && value > 0;
      list.append(el("dt", name), el("dd", value, warn || (name === "last verify" && v && !v.ok) ? "warn" : ""));
    }
  }

  function verifyText(v) {
    const when = v.checked_at ? " at " + new Date(v.checked_at).toLocaleTimeString() : "";
    return v.ok
      ? "ok: " + v.rows_checked.toLocaleString() + " rows" + when
      : "BROKEN at id " + v.first_bad_id + ": " + (v.problem || "") + when;
  }

  async function runVerify() {
    const button = $("verify");
    button.disabled = true;
    $("verify-result").textContent = "verifying…";
    try {
      const report = await api("verify", null, { method: "POST" });
      $("verify-result").textContent = verifyText(report);
      await loadHealth();
    } catch (err) {
      $("verify-result").textContent = String(err.message || err);
    } finally {
      button.disabled = false;
    }
  }

  async function refreshAnalytics() {
    if (state.refreshing) return;
    state.refreshing = true;
    try {
      // tool_stats may take seconds over a whole large trail: it never blocks the rest.
      const tools = loadTools().catch(showError);
      await Promise.all([loadTimeline(), loadSlowest(), loadErrors(), loadHealth()]).catch(showError);
      await tools;
    } finally {
      state.refreshing = false;
    }
  }

  async function reload() {
    showError(null);
    state.held = [];
    state.heldCount = 0;
    $("paused-count").hidden = true;
    try {
      const mark = await loadEntries();
      state.lastId = mark;
      connect(mark);
    } catch (err) {
      showError(err);
    }
    refreshAnalytics();
  }

  function start() {
    readFilters();
    $("filters").addEventListener("submit", applyForm);
    $("clear").addEventListener("click", () => {
      for (const name of FILTERS) $("filters").elements[name].value = "";
      applyForm();
    });
    $("pause").addEventListener("click", togglePause);
    $("verify").addEventListener("click", runVerify);
    $("entry-close").addEventListener("click", () => { $("entry").hidden = true; });
    window.addEventListener("popstate", () => { readFilters(); reload(); });
    setInterval(() => { if (!state.paused && !document.hidden) refreshAnalytics(); }, REFRESH_MS);
    reload();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
