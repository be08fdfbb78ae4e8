// ringkv console: polls this node every POLL_MS and draws what it sees.
//
// Sources: GET /cluster (members, ownership, hints, transfers), GET /metrics (parsed
// here: request rates and p50/p99 are differences of successive scrapes over the last
// RATE_WINDOW_S seconds), GET /ui/state.json (anti-entropy, hints by target, admin
// mode) and GET /ui/ring.json (the ring as arcs; revalidated with its ETag).
//
// Rules: server data reaches the DOM only as text (textContent, createElement, SVG
// attributes), never as markup: node ids are chosen by users. The tokens live in their
// fields only and are never stored: the read token (a node with client tokens,
// --tokens-file, answers every poll 401 without one) is read from its field for each
// poll and sent with the polls alone; the admin token is read from its field when an
// admin action is sent, and sent with that action alone.
"use strict";

(() => {
  const POLL_MS = 1500;
  const FETCH_TIMEOUT_MS = 4000;
  const RATE_WINDOW_S = 10;
  const HISTORY_S = 120;
  const ARM_MS = 5000; // a destructive button stays armed this long after its first click
  const SVG_NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
    "#9c755f", "#ff9da7", "#86bcb6", "#d4a6c8"];
  const STATUSES = ["up", "down", "joining", "leaving", "left"];
  const SIBLING_LABELS = { "1": "1", "2": "2", "3": "3", "4": "4", "5": "5", "8": "6-8",
    "16": "9-16", "32": "17-32", "64": "33-64", "+Inf": ">64" };

  const $ = (id) => document.getElementById(id);

  // --- DOM helpers: text only ----------------------------------------------------------

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function s(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setText(id, value) {
    const node = $(id);
    const text = String(value);
    if (node.textContent !== text) node.textContent = text;
  }

  function setBar(id, fraction) {
    const f = Number.isFinite(fraction) ? Math.max(0, Math.min(1, fraction)) : 0;
    $(id).style.width = (f * 100).toFixed(1) + "%";
  }

  // --- formatting ----------------------------------------------------------------------

  function fmtInt(n) {
    return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "\u2013";
  }

  function fmtPct(f) {
    return Number.isFinite(f) ? (f * 100).toFixed(1) + " %" : "\u2013";
  }

  function fmtRate(r) {
    if (!Number.isFinite(r)) return "\u2013";
    if (r === 0) return "0";
    if (r < 10) return r.toFixed(2);
    if (r < 100) return r.toFixed(1);
    return fmtInt(r);
  }

  function fmtSeconds(sec) {
    if (sec === null || !Number.isFinite(sec)) return "\u2013";
    if (sec < 0.001) return (sec * 1000).toFixed(2) + " ms";
    if (sec < 0.01) return (sec * 1000).toFixed(1) + " ms";
    if (sec < 1) return Math.round(sec * 1000) + " ms";
    return sec.toFixed(2) + " s";
  }

  function fmtBytes(n) {
    if (!Number.isFinite(n)) return "\u2013";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(1)) + " " + units[i];
  }

  // --- fetching ------------------------------------------------------------------------

  // The one place a token becomes a header. Throws (a TypeError) for a token an HTTP
  // header cannot carry.
  function withToken(token) {
    const headers = new Headers();
    if (token) headers.set("Authorization", "Bearer " + token);
    return headers;
  }

  // A poll the node answered 401 or 403: it wants a client token, or refuses this one.
  class Refused extends Error {
    constructor(path, status, detail, sent) {
      super(path + ": HTTP " + status);
      this.status = status;
      this.detail = detail;
      this.sent = sent; // whether the request carried a read token
    }
  }

  // The read token cannot be sent at all (a character no HTTP header can carry).
  class Unsendable extends Error {}

  async function get(path, kind, cache) {
    // Read for every poll, so a token pasted, changed or forgotten counts at once.
    const token = $("read-token").value.trim();
    let headers;
    try {
      headers = withToken(token);
    } catch (err) {
      throw new Unsendable(path + ": the read token cannot be sent");
    }
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), FETCH_TIMEOUT_MS);
    try {
      const resp = await fetch(path, { cache: cache || "no-store", signal: ctrl.signal,
        credentials: "omit", headers });
      if (resp.status === 401 || resp.status === 403) {
        let detail = "";
        try {
          const body = await resp.json();
          detail = body && typeof body.error === "string" ? body.error : "";
        } catch (err) {
          detail = "";
        }
        throw new Refused(path, resp.status, detail, Boolean(token));
      }
      if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
      return kind === "text" ? await resp.text() : await resp.json();
    } finally {
      clearTimeout(timer);
    }
  }

  // --- /metrics ------------------------------------------------------------------------

  function parseValue(text) {
    if (text === "+Inf") return Infinity;
    if (text === "-Inf") return -Infinity;
    return Number(text);
  }

  function parseMetrics(body) {
    const samples = [];
    const lineRe = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
    const labelRe = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const line of body.split("\n")) {
      if (!line || line[0] === "#") continue;
      const m = lineRe.exec(line);
      if (!m) continue;
      const labels = {};
      if (m[2]) {
        labelRe.lastIndex = 0;
        let l;
        while ((l = labelRe.exec(m[2])) !== null) {
          labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
        }
      }
      samples.push({ name: m[1], labels, value: parseValue(m[3]) });
    }
    return samples;
  }

  // One scrape reduced to what the page shows: counters by op, histograms as sorted
  // [le, cumulative count] pairs.
  function summarise(samples, t) {
    const ops = new Map();
    const op = (name) => {
      if (!ops.has(name)) ops.set(name, { total: 0, errors: 0, buckets: new Map() });
      return ops.get(name);
    };
    const siblings = new Map();
    const counters = {};
    for (const { name, labels, value } of samples) {
      if (name === "ringkv_requests_total" && labels.op) {
        const entry = op(labels.op);
        entry.total += value;
        if (Number(labels.code) >= 500) entry.errors += value;
      } else if (name === "ringkv_request_duration_seconds_bucket" && labels.op) {
        op(labels.op).buckets.set(labels.le, value);
      } else if (name === "ringkv_siblings_bucket") {
        siblings.set(labels.le, value);
      } else if (!name.endsWith("_created") && Object.keys(labels).length === 0) {
        counters[name] = value;
      }
    }
    return { t, ops, siblings, counters };
  }

  // [le, cumulative count, le as written] in order of le.
  function sortedBuckets(map) {
    return [...map.entries()].map(([key, c]) => [parseValue(key), c, key])
      .sort((a, b) => a[0] - b[0]);
  }

  // The q-quantile of the observations between two scrapes, interpolated within its
  // bucket like Prometheus's histogram_quantile; null when there were none.
  function quantile(q, cur, old) {
    const buckets = sortedBuckets(cur).map(([le, c, key]) => [le, c - ((old && old.get(key)) || 0)]);
    if (!buckets.length) return null;
    const total = buckets[buckets.length - 1][1];
    if (!(total > 0)) return null;
    const rank = q * total;
    let prevLe = 0;
    let prevCount = 0;
    for (const [le, count] of buckets) {
      if (count >= rank) {
        if (le === Infinity) return prevLe;
        const inBucket = count - prevCount;
        return prevLe + (le - prevLe) * (inBucket > 0 ? (rank - prevCount) / inBucket : 1);
      }
      prevLe = le;
      prevCount = count;
    }
    return prevLe;
  }

  // --- state ---------------------------------------------------------------------------

  const state = {
    scrapes: [], // summaries of the last HISTORY_S seconds of /metrics
    stateDocs: [], // [t, state.json] of the last HISTORY_S seconds
    history: [], // [t, total req/s]
    cluster: null,
    ring: null,
    ringText: "",
    ringSig: "",
    colours: new Map(),
    colourKey: "",
    rows: new Map(), // node id -> {row, cells}
    arcPaths: new Map(), // node id -> [svg paths]
    armed: null, // {what, node, until}
    focus: null,
    clientTokens: false, // a poll was refused for its token: the access bar is shown
  };

  function windowStart(list, now) {
    // The oldest entry at most RATE_WINDOW_S old, or the one before the newest.
    let chosen = list.length >= 2 ? list[list.length - 2] : null;
    for (const entry of list) {
      if (entry.t >= now - RATE_WINDOW_S && entry !== list[list.length - 1]) {
        chosen = entry;
        break;
      }
    }
    return chosen;
  }

  function rate(cur, old, dt) {
    if (old === undefined || old === null || !(dt > 0)) return NaN;
    const d = cur - old;
    return d >= 0 ? d / dt : NaN; // a reset (the node restarted): no rate this time
  }

  // --- colours -------------------------------------------------------------------------

  function updateColours(ids) {
    const sorted = [...new Set(ids)].sort();
    const key = sorted.join("\u0000");
    if (key === state.colourKey) return;
    state.colourKey = key;
    state.colours = new Map(sorted.map((id, i) => [id, i < PALETTE.length ? PALETTE[i]
      : "hsl(" + Math.round((i * 137.508) % 360) + ", 55%, 55%)"]));
  }

  const colour = (id) => state.colours.get(id) || "#9aa1af";

  // --- the ring ------------------------------------------------------------------------

  function point(r, f) {
    const a = 2 * Math.PI * f;
    return (r * Math.sin(a)).toFixed(2) + " " + (-r * Math.cos(a)).toFixed(2);
  }

  // An SVG path segment along radius r from fraction a to fraction b, clockwise (b
  // below a wraps past 0); "" for no span at all. Whole circles are asked for as 0 to 1.
  function arcSegment(r, a, b) {
    let span = b - a;
    if (span === 0) return "";
    if (span < 0) span += 1;
    if (span >= 1 - 1e-9) {
      return "M" + point(r, 0) + " A" + r + " " + r + " 0 1 1 " + point(r, 0.5)
        + " A" + r + " " + r + " 0 1 1 " + point(r, 1);
    }
    return "M" + point(r, a) + " A" + r + " " + r + " 0 " + (span > 0.5 ? 1 : 0) + " 1 "
      + point(r, a + span);
  }

  function arcsByOwner(doc, r) {
    const paths = new Map();
    const arcs = doc.arcs;
    arcs.forEach(([end, owner], i) => {
      const start = arcs.length === 1 ? end : arcs[(i - 1 + arcs.length) % arcs.length][0];
      const id = doc.owners[owner];
      if (id === undefined) return;
      const d = arcs.length === 1 ? arcSegment(r, 0, 1) : arcSegment(r, start, end);
      paths.set(id, (paths.get(id) || "") + d + " ");
    });
    return paths;
  }

  function drawRing(doc, statuses) {
    const svgEl = $("ring");
    const sig = state.ringText + "|" + JSON.stringify([...statuses.entries()])
      + "|" + state.colourKey;
    if (sig === state.ringSig) return;
    state.ringSig = sig;
    const R = 135;
    const W = 36;
    svgEl.replaceChildren();
    state.arcPaths = new Map();
    svgEl.append(s("circle", { class: "track", r: R, "stroke-width": W }));
    if (!doc || !doc.arcs || doc.arcs.length === 0) {
      svgEl.append(s("text", { class: "centre sub", y: 5 }, "no ring yet"));
      setText("ring-note", "");
      return;
    }
    const addPath = (id, node) => {
      if (!state.arcPaths.has(id)) state.arcPaths.set(id, []);
      state.arcPaths.get(id).push(node);
      svgEl.append(node);
    };
    const share = new Map();
    doc.arcs.forEach(([end, owner], i) => {
      const start = doc.arcs[(i - 1 + doc.arcs.length) % doc.arcs.length][0];
      const id = doc.owners[owner];
      const span = doc.arcs.length === 1 ? 1 : (end - start + 1) % 1;
      share.set(id, (share.get(id) || 0) + span);
    });
    for (const [id, d] of arcsByOwner(doc, R)) {
      const status = statuses.get(id) || "unknown";
      const path = s("path", { d, class: "arc" + (status === "down" ? " down" : ""),
        stroke: colour(id), "stroke-width": W, "data-owner": id });
      path.append(s("title", {}, id + ": " + fmtPct(share.get(id)) + " of the ring, "
        + status));
      addPath(id, path);
    }
    for (const [id, d] of arcsByOwner(doc, R + W / 2 + 6)) {
      if (statuses.get(id) !== "down") continue;
      addPath(id, s("path", { d, class: "down-mark", "stroke-width": 6, "data-owner": id }));
    }
    // Inside the token ring, each owner's share summed into one segment, so that the
    // balance reads at a glance however finely the vnodes interleave.
    let at = 0;
    for (const id of doc.owners) {
      const f = share.get(id) || 0;
      if (f <= 0) continue;
      const d = arcSegment(R - W / 2 - 16, at, Math.min(1, at + f));
      const path = s("path", { d, class: "summary" + (statuses.get(id) === "down" ? " down" : ""),
        stroke: colour(id), "stroke-width": 12, "data-owner": id });
      path.append(s("title", {}, id + ": " + fmtPct(f) + " of the ring in all"));
      addPath(id, path);
      at += f;
    }
    if (doc.pending && doc.pending.arcs && doc.pending.arcs.length) {
      for (const [id, d] of arcsByOwner(doc.pending, R + W / 2 + 20)) {
        const path = s("path", { d, class: "pending", stroke: colour(id), "stroke-width": 10,
          "data-owner": id });
        path.append(s("title", {}, id + " after the membership change in flight"));
        addPath(id, path);
      }
    }
    svgEl.append(s("line", { class: "tick", x1: 0, y1: -(R + W / 2 + 28), x2: 0,
      y2: -(R - W / 2 - 4) }));
    svgEl.append(s("text", { class: "label", x: 0, y: -(R + W / 2 + 32) }, "token 0"));
    const live = doc.owners.filter((id) => statuses.get(id) !== "down").length;
    svgEl.append(s("text", { class: "centre big", y: -4 }, String(doc.owners.length)));
    svgEl.append(s("text", { class: "centre sub", y: 18 },
      doc.owners.length === 1 ? "owner" : "owners"));
    svgEl.append(s("text", { class: "centre sub", y: 38 },
      fmtInt(doc.vnodes) + " vnodes \u00b7 N=" + doc.n));
    if (live < doc.owners.length) {
      svgEl.append(s("text", { class: "centre sub alert", y: 58 },
        (doc.owners.length - live) + " down"));
    }
    const notes = [];
    notes.push(doc.exact ? doc.arcs.length + " arcs, exact"
      : "coarsened to " + doc.arcs.length + " arcs (each slice in its main owner's colour)");
    notes.push("inner circle: each owner's share summed");
    if (doc.pending) notes.push("outer thin ring: the ring after the membership change in flight");
    if (doc.owners.some((id) => statuses.get(id) === "down")) {
      notes.push("red marks: arcs of members down");
    }
    setText("ring-note", notes.join(" \u00b7 "));
    applyFocus();
  }

  function applyFocus() {
    const svgEl = $("ring");
    svgEl.classList.toggle("focus", state.focus !== null && state.arcPaths.has(state.focus));
    for (const [id, nodes] of state.arcPaths) {
      for (const node of nodes) node.classList.toggle("on", id === state.focus);
    }
  }

  // --- members -------------------------------------------------------------------------

  const HOSTPORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/;

  function memberRow(id) {
    const cells = {
      swatch: h("td"), name: h("td"), status: h("td"), owns: h("td", { class: "num" }),
      share: h("td", { class: "num" }), tokens: h("td", { class: "num" }),
      addr: h("td", { class: "addr" }), action: h("td", { class: "num" }),
    };
    const row = h("tr", { "data-node": id }, ...Object.values(cells));
    row.addEventListener("mouseenter", () => { state.focus = id; applyFocus(); });
    row.addEventListener("mouseleave", () => { state.focus = null; applyFocus(); });
    const sw = s("svg", { class: "swatch", viewBox: "0 0 14 14" });
    sw.append(s("circle", { cx: 7, cy: 7, r: 6 }));
    cells.swatch.append(sw);
    return { row, cells, sig: "" };
  }

  function renderMembers(cluster) {
    const tbody = $("members").tBodies[0];
    const members = [...cluster.members].sort((a, b) => (a.node_id < b.node_id ? -1 : 1));
    const seen = new Set();
    for (const m of members) {
      const id = String(m.node_id);
      seen.add(id);
      let entry = state.rows.get(id);
      if (!entry) {
        entry = memberRow(id);
        state.rows.set(id, entry);
      }
      const status = STATUSES.includes(m.status) ? m.status : "unknown";
      const armed = state.armed && state.armed.what === "remove" && state.armed.node === id;
      const sig = JSON.stringify([m, colour(id), armed, id === cluster.node_id]);
      if (entry.sig !== sig) {
        entry.sig = sig;
        const c = entry.cells;
        entry.row.className = "st-" + status;
        entry.row.setAttribute("data-status", status);
        c.swatch.firstChild.firstChild.setAttribute("fill", colour(id));
        const http = typeof m.http === "string" ? m.http : "";
        const name = HOSTPORT.test(http)
          // In this page's scheme: the members of a cluster serve HTTPS alike or not.
          ? h("a", { href: location.protocol + "//" + http + "/ui",
            rel: "noopener noreferrer", title: "open " + id + "'s console" }, id)
          : h("span", {}, id);
        c.name.replaceChildren(name);
        if (id === cluster.node_id) c.name.append(h("span", { class: "me" }, "(this node)"));
        c.status.replaceChildren(h("span", { class: "badge st-" + status }, status));
        c.owns.textContent = fmtPct(m.ownership);
        c.share.textContent = fmtPct(m.replica_share);
        c.tokens.textContent = fmtInt(m.tokens);
        c.addr.textContent = http;
        c.action.replaceChildren();
        // Removal is for a member down for good, or a joiner or leaver that died (it
        // ends that change); the node refuses one it still hears from.
        if (id !== cluster.node_id && status !== "up" && status !== "left") {
          const button = h("button", { type: "button", class: "danger" + (armed ? " armed" : ""),
            title: "remove " + id + " from the cluster for good (when it is down for good)" },
          armed ? "confirm remove" : "remove");
          button.addEventListener("click", () => adminClick("remove", id));
          c.action.append(button);
        }
      }
      tbody.append(entry.row); // in sorted order; moving a row keeps it
    }
    for (const [id, entry] of state.rows) {
      if (!seen.has(id)) {
        entry.row.remove();
        state.rows.delete(id);
      }
    }
    const counts = new Map();
    for (const m of members) counts.set(m.status, (counts.get(m.status) || 0) + 1);
    setText("members-count", STATUSES.filter((st) => counts.has(st))
      .map((st) => counts.get(st) + " " + st).join(" \u00b7 "));
  }

  // --- the other cards ------------------------------------------------------------------

  function renderHeader(cluster, st) {
    setText("node-id", cluster ? cluster.node_id : "\u2026");
    const liveness = st ? st.liveness : null;
    const badge = $("node-status");
    const status = STATUSES.includes(liveness) ? liveness : "unknown";
    setText("node-status", liveness || "\u2026");
    badge.className = "badge st-" + status;
    if (cluster) setText("quorums", "N=" + cluster.n + "  R=" + cluster.r + "  W=" + cluster.w);
    document.title = "ringkv console \u00b7 " + (cluster ? cluster.node_id : "");
  }

  function renderHints(cluster, st, old, dt) {
    setText("hints-pending", fmtInt(cluster.hints_pending));
    if (!st) return;
    setText("hints-stored", fmtInt(st.hints.stored));
    setText("hints-delivered", fmtInt(st.hints.delivered));
    const r = old ? rate(st.hints.delivered, old.hints.delivered, dt) : NaN;
    setText("hints-rate", Number.isFinite(r) ? fmtRate(r) + " /s" : "\u2013");
    const list = $("hints-targets");
    list.replaceChildren(...st.hints.by_target.map((t) => h("li", {},
      h("span", {}, "for " + t.node_id), h("span", { class: "num" }, fmtInt(t.pending)))));
  }

  function renderTransfers(cluster) {
    const t = cluster.transfers || {};
    const waiting = Array.isArray(t.leave_waiting_for) ? t.leave_waiting_for : [];
    let line = "No transfer in progress";
    if (t.syncing) line = "Fetching ranges";
    else if (waiting.length) line = "Leaving: handing ranges over";
    setText("transfer-state", line);
    const total = Number(t.ranges_total) || 0;
    const left = Number(t.ranges_left) || 0;
    setBar("transfer-bar", t.syncing && total > 0 ? (total - left) / total : (t.syncing ? 0 : 1));
    $("transfer-bar").classList.toggle("ok", !t.syncing);
    setText("transfer-left", t.syncing ? fmtInt(left) + " of " + fmtInt(total) : "0");
    const from = Array.isArray(t.fetching_from) ? t.fetching_from : waiting;
    setText("transfer-from", from.length ? from.join(", ") : "\u2013");
    setText("transfer-keys", fmtInt(t.keys_received) + " / " + fmtInt(t.keys_sent));
    setText("transfer-bytes", fmtBytes(t.bytes_received) + " / " + fmtBytes(t.bytes_sent));
  }

  function renderAntiEntropy(st, old, dt) {
    if (!st) return;
    const ae = st.anti_entropy;
    setText("ae-built-text", fmtInt(ae.built) + " / " + fmtInt(ae.ranges));
    setBar("ae-built-bar", ae.ranges ? ae.built / ae.ranges : 0);
    setText("ae-confirmed-text", fmtInt(ae.confirmed) + " / " + fmtInt(ae.shared));
    setBar("ae-confirmed-bar", ae.shared ? ae.confirmed / ae.shared : 0);
    setText("ae-repaired", fmtInt(ae.keys_repaired));
    const r = old ? rate(ae.keys_repaired, old.anti_entropy.keys_repaired, dt) : NaN;
    setText("ae-rate", Number.isFinite(r) ? fmtRate(r) + " keys/s" : "\u2013");
    setText("ae-exchanges", fmtInt(ae.exchanges) + "  (every " + ae.interval + " s per peer)");
    setText("read-repairs", fmtInt(st.read_repairs));
  }

  function renderRequests(cur, old, st) {
    const tbody = $("requests").tBodies[0];
    const dt = old ? cur.t - old.t : 0;
    const rows = [];
    let sum = 0;
    for (const [name, entry] of cur.ops) {
      const before = old ? old.ops.get(name) : null;
      const r = old ? rate(entry.total, before ? before.total : 0, dt) : NaN;
      const e = old ? rate(entry.errors, before ? before.errors : 0, dt) : NaN;
      if (Number.isFinite(r)) sum += r;
      rows.push({ name, r, e, total: entry.total,
        p50: quantile(0.5, entry.buckets, before ? before.buckets : null),
        p99: quantile(0.99, entry.buckets, before ? before.buckets : null) });
    }
    rows.sort((a, b) => (b.r || 0) - (a.r || 0) || (a.name < b.name ? -1 : 1));
    if (!rows.length) {
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty" },
        "no client requests yet")));
    } else {
      tbody.replaceChildren(...rows.map((row) => h("tr", { "data-op": row.name },
        h("td", {}, row.name), h("td", { class: "num" }, fmtRate(row.r)),
        h("td", { class: "num" }, fmtRate(row.e)),
        h("td", { class: "num" }, fmtSeconds(row.p50)),
        h("td", { class: "num" }, fmtSeconds(row.p99)),
        h("td", { class: "num" }, fmtInt(row.total)))));
    }
    if (old) state.history.push({ t: cur.t, r: sum });
    while (state.history.length && state.history[0].t < cur.t - HISTORY_S) state.history.shift();
    drawSpark(cur.t);
    if (st) {
      setText("requests-extra", fmtInt(st.requests_waiting) + " waiting for the node \u00b7 "
        + fmtInt(st.http_connections) + " client connections open"
        + (st.faults ? " \u00b7 " + fmtInt(st.faults) + " contained faults" : ""));
    }
  }

  function drawSpark(now) {
    const svgEl = $("spark");
    const W = 600;
    const H = 70;
    const points = state.history;
    const max = Math.max(1, ...points.map((p) => p.r));
    setText("spark-max", "max " + fmtRate(max) + " req/s");
    svgEl.replaceChildren();
    // The last HISTORY_S seconds, or what has been seen of them (at least 10 s).
    const span = points.length ? Math.min(HISTORY_S, Math.max(10, now - points[0].t)) : 10;
    setText("spark-title", "all operations, req/s, last "
      + (span >= HISTORY_S ? "2 minutes" : Math.round(span) + " s"));
    if (points.length < 2) return;
    const xy = points.map((p) => [W - ((now - p.t) / span) * W,
      H - 4 - (p.r / max) * (H - 10)]);
    const line = xy.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
    svgEl.append(s("polygon", { class: "area",
      points: xy[0][0].toFixed(1) + "," + H + " " + line + " " + W + "," + H }));
    svgEl.append(s("polyline", { class: "line", points: line }));
  }

  function drawSiblings(cur) {
    const svgEl = $("siblings");
    const buckets = sortedBuckets(cur.siblings);
    svgEl.replaceChildren();
    const counts = [];
    let prev = 0;
    for (const [le, cum] of buckets) {
      const key = le === Infinity ? "+Inf" : String(le);
      counts.push({ label: SIBLING_LABELS[key] || key, n: Math.max(0, cum - prev), le });
      prev = cum;
    }
    const total = prev;
    if (!counts.length) return;
    const W = 400;
    const top = 18;
    const base = 150;
    const slot = W / counts.length;
    const max = Math.max(1, ...counts.map((c) => c.n));
    svgEl.append(s("line", { class: "axis", x1: 0, y1: base, x2: W, y2: base }));
    counts.forEach((c, i) => {
      const hgt = c.n > 0 ? Math.max(2, (c.n / max) * (base - top)) : 0;
      const x = i * slot + slot * 0.15;
      const bar = s("rect", { class: "barv" + (c.le > 1 ? " many" : ""), x: x.toFixed(1),
        y: (base - hgt).toFixed(1), width: (slot * 0.7).toFixed(1), height: hgt.toFixed(1),
        "data-siblings": c.label, "data-count": c.n });
      bar.append(s("title", {}, fmtInt(c.n) + " reads with " + c.label + " sibling"
        + (c.label === "1" ? "" : "s")));
      svgEl.append(bar);
      if (c.n > 0) {
        svgEl.append(s("text", { class: "count", x: (i * slot + slot / 2).toFixed(1),
          y: (base - hgt - 4).toFixed(1) }, fmtInt(c.n)));
      }
      svgEl.append(s("text", { x: (i * slot + slot / 2).toFixed(1), y: base + 15 }, c.label));
    });
    svgEl.append(s("text", { x: W / 2, y: base + 34 }, "siblings returned by a read"));
    const multi = counts.filter((c) => c.le > 1).reduce((a, c) => a + c.n, 0);
    setText("siblings-note", total > 0
      ? fmtInt(total) + " reads with a value since this node started; "
        + fmtPct(multi / total) + " returned more than one sibling"
      : "no reads with a value yet since this node started");
  }

  // --- admin ---------------------------------------------------------------------------

  const ADMIN_MODES = {
    token: "This node wants its admin token for leave and remove: paste it below.",
    open: "This node has no admin token: admin actions are allowed because this browser"
      + " runs on the node's own machine (loopback).",
    "loopback-only": "This node has no admin token and takes admin actions only from its"
      + " own machine: from here they will be refused.",
  };

  // The same mode on a node with client tokens: what leave and remove need there.
  const ADMIN_WITH_CLIENT_TOKENS = "This node takes client tokens: leave and remove need"
    + " one with the admin role (or the node's admin token): paste it below.";

  function renderAdmin(st, cluster) {
    if (st) {
      setText("admin-mode", st.admin === "token" && state.clientTokens
        ? ADMIN_WITH_CLIENT_TOKENS : ADMIN_MODES[st.admin] || "");
    }
    const armed = state.armed && state.armed.what === "leave";
    const button = $("leave");
    button.classList.toggle("armed", Boolean(armed));
    setText("leave", armed ? "confirm: " + (cluster ? cluster.node_id : "this node")
      + " leaves the cluster" : "Leave the cluster");
  }

  function result(text, ok) {
    const out = $("admin-result");
    out.textContent = text;
    out.className = "result " + (ok ? "ok" : "err");
  }

  function adminClick(what, node) {
    const now = Date.now();
    const a = state.armed;
    if (!a || a.what !== what || a.node !== node || a.until < now) {
      state.armed = { what, node, until: now + ARM_MS };
      setTimeout(() => {
        if (state.armed && state.armed.until <= Date.now()) {
          state.armed = null;
          refreshArmed();
        }
      }, ARM_MS + 50);
      refreshArmed();
      return;
    }
    state.armed = null;
    refreshArmed();
    const path = what === "leave" ? "/cluster/leave"
      : "/cluster/remove/" + encodeURIComponent(node);
    sendAdmin(path, what === "leave" ? "leave" : "remove " + node);
  }

  function refreshArmed() {
    if (state.cluster) {
      renderMembers(state.cluster);
      renderAdmin(null, state.cluster);
    }
  }

  async function sendAdmin(path, label) {
    // The token is read now, sent with this request only, and kept nowhere else.
    // The read token is not sent: an admin action carries the admin token or nothing.
    let headers;
    try {
      headers = withToken($("token").value.trim());
    } catch (err) {
      result(label + ": the token holds characters an HTTP header cannot carry", false);
      return;
    }
    result(label + ": sending\u2026", true);
    try {
      const resp = await fetch(path, { method: "POST", headers, cache: "no-store",
        credentials: "omit" });
      let detail = "";
      try {
        const body = await resp.json();
        detail = body && typeof body.error === "string" ? body.error
          : body && body.status ? "status " + body.status : "";
      } catch (err) {
        detail = "";
      }
      result(label + ": " + resp.status + (detail ? " \u2013 " + detail : ""), resp.ok);
    } catch (err) {
      result(label + ": the node did not answer (" + err.message + ")", false);
    }
  }

  // --- the read token ------------------------------------------------------------------

  // What the access bar says after a poll, by what the node answered.
  const ACCESS = {
    wanted: "This node wants a client token (it runs with --tokens-file): paste a token"
      + " with the read role in the Read token field above to see the cluster.",
    unknown: "This node does not know the read token given (401): paste one of its"
      + " client tokens, with the read role, in the Read token field above.",
    forbidden: "This node refused the read token (403): its role or buckets do not allow"
      + " what the console reads",
    unsendable: "The read token holds characters an HTTP header cannot carry: paste it"
      + " again.",
    accepted: "This node accepts the read token: the page sends it with its polls.",
    forgotten: "read token forgotten",
  };

  // The bar stays hidden until a node asks for a token (a node without client tokens
  // never does), then stays for the page's life, so the token can be changed or
  // forgotten.
  function renderAccess(refused, unsendable) {
    if (refused || unsendable) state.clientTokens = true;
    $("access").hidden = !state.clientTokens;
    if (!state.clientTokens) return;
    const note = $("access-note");
    let text = ACCESS.accepted;
    if (unsendable) text = ACCESS.unsendable;
    else if (refused && refused.status === 403) {
      text = ACCESS.forbidden + (refused.detail ? ": " + refused.detail : ".");
    } else if (refused) {
      text = refused.sent ? ACCESS.unknown : ACCESS.wanted;
    } else if (!$("read-token").value.trim()) return; // forgotten, and not asked yet
    note.textContent = text;
    note.className = "result " + (refused || unsendable ? "err" : "ok");
  }

  // --- the poll loop -------------------------------------------------------------------

  function setConnection(ok, why, refused) {
    const conn = $("conn");
    conn.classList.toggle("live", ok);
    conn.classList.toggle("lost", !ok);
    document.body.classList.toggle("stale", !ok);
    let text = "no answer: retrying (" + why + ")";
    if (ok) text = "live \u00b7 " + new Date().toLocaleTimeString("en-GB");
    else if (refused) {
      text = refused.status === 401 ? "refused: this node wants a read token"
        : "refused: the read token may not read this";
    }
    setText("conn-text", text);
  }

  let pollTimer = 0;
  let polling = false;
  let pollAgain = false;

  // The next poll in `ms` (one timer: a poll asked for early replaces the one planned).
  function schedulePoll(ms) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, ms);
  }

  // A poll soon: in `ms`, or right after the one under way (which read the fields
  // before they changed).
  function pollSoon(ms) {
    if (polling) pollAgain = true;
    else schedulePoll(ms);
  }

  async function poll() {
    if (polling) {
      pollAgain = true; // the poll under way plans the next one at once when it ends
      return;
    }
    polling = true;
    try {
      await pollOnce();
    } finally {
      polling = false;
      schedulePoll(pollAgain ? 0 : POLL_MS);
      pollAgain = false;
    }
  }

  async function pollOnce() {
    const t = performance.now() / 1000;
    const [cluster, metrics, st, ringText] = await Promise.allSettled([
      get("/cluster", "json"), get("/metrics", "text"), get("/ui/state.json", "json"),
      get("/ui/ring.json", "text", "no-cache")]);
    const answers = [cluster, metrics, st, ringText];
    const failed = answers.find((r) => r.status === "rejected");
    const reasons = answers.filter((r) => r.status === "rejected").map((r) => r.reason);
    // A 403 says more than a 401 (the token is known), so it is the one shown.
    const refused = reasons.filter((r) => r instanceof Refused)
      .sort((a, b) => b.status - a.status)[0];
    const unsendable = reasons.some((r) => r instanceof Unsendable);
    renderAccess(refused, unsendable);
    setConnection(!failed, failed ? String(failed.reason && failed.reason.message) : "",
      refused);
    try {
      if (cluster.status === "fulfilled") state.cluster = cluster.value;
      if (ringText.status === "fulfilled" && ringText.value !== state.ringText) {
        state.ringText = ringText.value;
        state.ring = JSON.parse(ringText.value);
      }
      let stOld = null;
      let stDt = 0;
      if (st.status === "fulfilled") {
        state.stateDocs.push({ t, doc: st.value });
        while (state.stateDocs[0].t < t - HISTORY_S) state.stateDocs.shift();
        const old = windowStart(state.stateDocs, t);
        if (old) { stOld = old.doc; stDt = t - old.t; }
      }
      const stDoc = st.status === "fulfilled" ? st.value : null;
      renderHeader(state.cluster, stDoc);
      if (state.cluster) {
        const statuses = new Map(state.cluster.members.map((m) => [m.node_id, m.status]));
        updateColours([...statuses.keys(), ...(state.ring ? state.ring.owners : [])]);
        renderMembers(state.cluster);
        drawRing(state.ring, statuses);
        renderHints(state.cluster, stDoc, stOld, stDt);
        renderTransfers(state.cluster);
      }
      renderAntiEntropy(stDoc, stOld, stDt);
      renderAdmin(stDoc, state.cluster);
      if (metrics.status === "fulfilled") {
        const cur = summarise(parseMetrics(metrics.value), t);
        state.scrapes.push(cur);
        while (state.scrapes[0].t < t - HISTORY_S) state.scrapes.shift();
        renderRequests(cur, windowStart(state.scrapes, t), stDoc);
        drawSiblings(cur);
      }
      document.body.setAttribute("data-polls",
        String(Number(document.body.getAttribute("data-polls") || 0) + 1));
    } catch (err) {
      setConnection(false, "could not draw: " + err.message);
    }
  }

  function start() {
    $("leave").addEventListener("click", () => adminClick("leave", null));
    $("token-forget").addEventListener("click", () => {
      $("token").value = "";
      result("token forgotten", true);
    });
    // A read token pasted or typed is tried at the next poll, brought forward.
    $("read-token").addEventListener("input", () => pollSoon(250));
    $("read-token-forget").addEventListener("click", () => {
      $("read-token").value = "";
      const note = $("access-note");
      note.textContent = ACCESS.forgotten;
      note.className = "result ok";
      pollSoon(0);
    });
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
