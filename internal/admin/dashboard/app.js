// mamori dashboard: polls GET /api/v1/live every 2 s and draws it; the
// queue search, releases, unbans and bulk operations call the admin API
// with the session's CSRF token. Plain JavaScript, no dependencies.
//
// Everything that comes from the server (addresses, subjects, rules) is
// inserted as text (text nodes, textContent), never as HTML.
"use strict";

(function () {
  const POLL_MS = 2000;
  const CONFIRM_TYPED_ABOVE = 1000; // bulk operations above this need the count typed
  const RESULT_LIMIT = 200; // messages listed per search
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);

  // el builds an element: props are attributes (class, data-*, href…) or
  // on* listeners; children are nodes or strings (as text).
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function replace(container, ...nodes) {
    container.replaceChildren(...nodes.flat().filter((n) => n));
  }

  // api calls the admin API. A 401 means the session ended: back to the
  // login form.
  async function api(method, path, body) {
    const opt = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (method !== "GET") opt.headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) {
      opt.headers["Content-Type"] = "application/json";
      opt.body = JSON.stringify(body);
    }
    const r = await fetch(path, opt);
    if (r.status === 401) {
      location.assign("/");
      throw new Error("session ended: log in again");
    }
    let data = null;
    try {
      data = await r.json();
    } catch (e) {
      data = null;
    }
    if (!r.ok) throw new Error((data && data.error) || r.status + " " + r.statusText);
    return data;
  }

  // --- formatting ---

  const fmtInt = (n) => Number(n || 0).toLocaleString("en-US");
  function fmtBytes(n) {
    n = Number(n || 0);
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }
  function fmtAge(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + (Math.floor(seconds / 60) % 60) + " min";
    return Math.floor(seconds / 86400) + " d " + (Math.floor(seconds / 3600) % 24) + " h";
  }
  function ago(t, now) {
    const d = new Date(t);
    if (isNaN(d)) return "";
    return fmtAge((now - d) / 1000) + " ago";
  }
  function clock(t) {
    const d = new Date(t);
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  function timeEl(t, now) {
    return el("time", { datetime: t, title: new Date(t).toISOString() }, now ? ago(t, now) : clock(t));
  }

  // --- live view ---

  const seen = {}; // panel → JSON last drawn: redraw only what changed
  function changed(name, data) {
    const k = JSON.stringify(data === undefined ? null : data);
    if (seen[name] === k) return false;
    seen[name] = k;
    return true;
  }

  let stopped = false;
  async function poll() {
    try {
      const live = await api("GET", "/api/v1/live");
      draw(live);
      setStatus("live · updated " + clock(live.time || new Date()), false);
    } catch (e) {
      setStatus("not updating: " + e.message, true);
    }
    if (!stopped) setTimeout(poll, POLL_MS);
  }
  function setStatus(text, bad) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("bad", bad);
  }

  function draw(live) {
    const now = new Date(live.time || Date.now());
    const traffic = live.traffic || [];
    if (changed("rates", traffic.slice(-2))) drawRates(traffic, now);
    if (changed("chart", traffic)) drawChart(traffic);
    const g = live.guard || {};
    if (changed("shared", g.shared)) drawShared(g.shared);
    if (changed("isolated", [g.isolated, g.suspended])) drawIsolated(g.isolated || [], g.suspended || [], now);
    if (changed("top_ips", live.top_ips)) drawTop($("top-ips"), live.top_ips || [], "IP");
    if (changed("top_users", live.top_users)) drawTop($("top-users"), live.top_users || [], "User");
    if (changed("bans", [g.bans, live.guard_totals])) drawBans(g.bans || [], (live.guard_totals || {}).bans || 0, now);
    if (changed("alerts", live.alerts)) drawAlerts(live.alerts || []);
    if (changed("queue", [live.queue, live.sessions])) drawQueue(live.queue || {}, live.sessions || {});
  }

  // Clustered mode: say so when the shared store does not answer and this
  // node limits on its own counts.
  function drawShared(sh) {
    const p = $("cluster");
    p.hidden = !sh || sh.up;
    if (!p.hidden) {
      p.textContent = "Shared store down since " + clock(sh.since) +
        ": this node limits on its own counts until it is back" + (sh.error ? " (" + sh.error + ")" : "") + ".";
    }
  }

  // The rate over the last 60 s: the current minute so far plus the share
  // of the previous minute that is still inside the window.
  function lastSixty(traffic, now, field) {
    const n = traffic.length;
    if (n === 0) return 0;
    const cur = traffic[n - 1];
    const prev = n > 1 ? traffic[n - 2] : null;
    const into = Math.min(1, Math.max(0, (now - new Date(cur.t)) / 60000));
    return Math.round((cur[field] || 0) + (prev ? (prev[field] || 0) * (1 - into) : 0));
  }
  function drawRates(traffic, now) {
    for (const f of ["in", "out", "held", "refused", "guard"]) $("rate-" + f).textContent = fmtInt(lastSixty(traffic, now, f));
  }

  const SERIES = [
    ["in", "in"],
    ["out", "out"],
    ["refused", "refused"],
    ["held", "held"],
    ["guard", "guard decisions"],
  ];
  const SVGNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  // niceMax rounds the chart's top up to 1, 2 or 5 × a power of ten.
  function niceMax(v) {
    if (v <= 5) return 5;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  function drawChart(traffic) {
    // Drawn in the box's own pixels (and again when the window is
    // resized), so the text keeps its size on a phone and on a laptop.
    const W = Math.max(280, $("chart").clientWidth || 720), H = W < 500 ? 150 : 190, L = 40, R = 8, T = 10, B = 22;
    const slots = 60;
    const data = traffic.slice(-slots);
    let max = 0;
    for (const m of data) for (const [f] of SERIES) max = Math.max(max, m[f] || 0);
    max = niceMax(max);
    const x = (i) => L + ((W - L - R) * (i + slots - data.length)) / (slots - 1);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
    root.append(svg("title", {}, "Messages per minute, last hour"));
    for (const v of [0, max / 2, max]) {
      root.append(svg("line", { class: "grid-line", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.append(svg("text", { class: "axis", x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmtInt(v)));
    }
    for (const [label, i] of [["−60 min", 0], ["−30 min", 30], ["now", slots - 1]]) {
      const xi = L + ((W - L - R) * i) / (slots - 1);
      root.append(svg("text", { class: "axis", x: xi, y: H - 6, "text-anchor": i === 0 ? "start" : i === slots - 1 ? "end" : "middle" }, label));
    }
    for (const [f] of SERIES) {
      if (data.length === 0) break;
      const pts = data.map((m, i) => x(i).toFixed(1) + "," + y(m[f] || 0).toFixed(1)).join(" ");
      root.append(svg("polyline", { class: "s-" + f, points: pts }));
    }
    // A red mark above each minute in which an isolation or suspension began.
    data.forEach((m, i) => {
      if (m.isolated > 0) {
        const mark = svg("circle", { class: "mark", cx: x(i), cy: T + 3, r: 4 });
        mark.append(svg("title", {}, m.isolated + " isolated at " + clock(m.t)));
        root.append(mark);
      }
    });
    replace($("chart"), root);
    if (!$("legend").firstChild) {
      replace($("legend"), SERIES.map(([f, label]) => el("span", {}, el("span", { class: "sw s-" + f }), label)),
        el("span", {}, el("span", { class: "dot" }), "isolation began"));
    }
  }

  // meter draws a rate against its limit (no limit: just the number).
  function meter(v, limit) {
    if (!limit) return el("div", { class: "meter" }, el("span", { class: "txt" }, fmtInt(v) + " / min"));
    const pct = Math.min(100, (100 * v) / limit);
    const fill = el("div", { class: "fill" + (v >= limit ? " over" : pct >= 80 ? " warn" : "") });
    fill.style.width = pct + "%";
    return el("div", { class: "meter", title: v + " of " + limit + " per minute" },
      el("div", { class: "bar-bg" }, fill), el("span", { class: "txt" }, fmtInt(v) + " / " + fmtInt(limit)));
  }

  function drawTop(container, list, what) {
    if (list.length === 0) return replace(container, el("p", { class: "empty" }, "No traffic in the last minute."));
    const rows = list.map((s) =>
      el("tr", { "data-key": s.key },
        el("td", { "data-label": what }, s.key,
          s.trusted ? el("span", { class: "tag" }, "LAN") : null,
          s.outside ? el("span", { class: "tag" }, "outside") : null,
          s.isolated ? el("span", { class: "tag bad" }, "isolated") : null),
        el("td", { "data-label": "messages" }, meter(s.msgs_per_min, s.limit_msgs)),
        el("td", { "data-label": "recipients" }, meter(s.rcpts_per_min, s.limit_rcpts))));
    replace(container, el("div", { class: "scroll" }, el("table", { class: "stack" },
      el("thead", {}, el("tr", {}, el("th", {}, what), el("th", {}, "messages / min"), el("th", {}, "recipients / min"))),
      el("tbody", {}, rows))));
  }

  // Sample subjects of an isolated sender's held mail, fetched once per
  // isolation (key and start), not on every poll.
  const samples = {};
  function sampleSubjects(param, value, since, ul) {
    const k = param + "=" + value + "@" + since;
    const fill = (subjects) => {
      if (subjects.length === 0) replace(ul, el("li", { class: "empty" }, "no held mail"));
      else replace(ul, subjects.map((s) => el("li", {}, s || "(no subject)")));
    };
    if (samples[k]) return fill(samples[k]);
    const q = new URLSearchParams({ state: "held", limit: "5" });
    q.set(param, value);
    api("GET", "/api/v1/queue?" + q)
      .then((items) => {
        samples[k] = (items || []).map((m) => m.subject);
        fill(samples[k]);
      })
      .catch((e) => replace(ul, el("li", { class: "empty" }, "could not list held mail: " + e.message)));
  }

  function drawIsolated(isolated, suspended, now) {
    const box = $("isolated");
    const susp = {};
    for (const s of suspended) susp[s.user] = s;
    const cards = [];
    const shown = {};
    for (const iso of isolated) {
      const target = iso.user || iso.ip;
      shown[target] = true;
      cards.push(card(target, iso, susp[iso.user], now));
    }
    for (const s of suspended) {
      if (!shown[s.user]) cards.push(card(s.user, { user: s.user, rule: s.rule, since: s.since }, s, now));
    }
    if (cards.length === 0) return replace(box, el("p", { class: "empty" }, "None."));
    replace(box, cards);
  }

  function card(target, iso, susp, now) {
    const byUser = !!iso.user;
    const counts = Object.entries(iso.counts || {}).filter(([, v]) => v).map(([k, v]) => k + " " + v).join(", ");
    const subjects = el("ul", { class: "subjects" }, el("li", { class: "empty" }, "…"));
    sampleSubjects(byUser ? "user" : "client_ip", target, iso.since, subjects);
    const since = new Date(new Date(iso.since).getTime() - 3600e3).toISOString().replace(/\.\d+Z$/, "Z");
    const exp = new URLSearchParams({ since });
    if (byUser) {
      if (iso.sender) exp.set("sender", iso.sender);
    } else exp.set("client_ip", target);
    const release = el("button", { type: "button", class: "release", "data-target": target }, "Release");
    release.addEventListener("click", () => releaseTarget(release, target));
    const show = el("button", { type: "button", class: "plain" }, "Show held mail");
    show.addEventListener("click", () => searchFor({ state: "held", [byUser ? "user" : "client_ip"]: target }));
    return el("article", { class: "card", "data-key": target },
      el("h3", {}, target, el("span", { class: "tag bad" }, susp ? "suspended" : "isolated")),
      el("dl", {},
        iso.ip && byUser ? [el("dt", {}, "IP"), el("dd", {}, iso.ip)] : null,
        iso.sender ? [el("dt", {}, "sender"), el("dd", {}, iso.sender)] : null,
        el("dt", {}, "rule"), el("dd", {}, iso.rule || ""),
        counts ? [el("dt", {}, "counts"), el("dd", {}, counts)] : null,
        el("dt", {}, "since"), el("dd", {}, timeEl(iso.since, now)),
        iso.held ? [el("dt", {}, "held since"), el("dd", {}, fmtInt(iso.held) + " messages")] : null),
      el("div", { class: "hint" }, "Sample subjects of its held mail:"),
      subjects,
      el("div", { class: "buttons" }, release, show,
        el("a", { class: "button plain", href: "/api/v1/incident/export?" + exp, download: true }, "Export evidence")));
  }

  async function releaseTarget(btn, target) {
    btn.disabled = true;
    try {
      await api("POST", "/api/v1/guard/release", { target });
      setStatus("released " + target, false);
      refreshSoon();
    } catch (e) {
      btn.disabled = false;
      setStatus("release " + target + ": " + e.message, true);
    }
  }

  function drawBans(bans, total, now) {
    const box = $("bans");
    if (bans.length === 0) return replace(box, el("p", { class: "empty" }, "None."));
    const rows = bans.map((b) => {
      const btn = el("button", { type: "button", class: "unban plain", "data-cidr": b.cidr }, "Unban");
      btn.addEventListener("click", async () => {
        btn.disabled = true;
        try {
          await api("POST", "/api/v1/guard/unban", { cidr: b.cidr });
          refreshSoon();
        } catch (e) {
          btn.disabled = false;
          setStatus("unban " + b.cidr + ": " + e.message, true);
        }
      });
      const left = (new Date(b.expires) - now) / 1000;
      return el("tr", { "data-key": b.cidr },
        el("td", { "data-label": "address" }, b.cidr),
        el("td", { "data-label": "rule" }, b.rule || ""),
        el("td", { "data-label": "ends in" }, fmtAge(left), b.strikes > 1 ? el("span", { class: "tag" }, "×" + b.strikes) : null),
        el("td", {}, btn));
    });
    const more = total > bans.length ?
      el("p", { class: "empty" }, (total - bans.length) + " more bans not shown (those ending soonest); see mamori guard list") : null;
    replace(box, el("div", { class: "scroll" }, el("table", { class: "stack" },
      el("thead", {}, el("tr", {}, el("th", {}, "address"), el("th", {}, "rule"), el("th", {}, "ends in"), el("th", {}, ""))),
      el("tbody", {}, rows))), more);
  }

  function drawAlerts(alerts) {
    const box = $("alerts");
    if (alerts.length === 0) return replace(box, el("p", { class: "empty" }, "None."));
    replace(box, el("ul", { class: "alerts" }, alerts.map((a) =>
      el("li", {}, timeEl(a.time), el("b", {}, a.kind), " ", a.rule ? el("code", {}, a.rule) : null, " ",
        [a.ip, a.user].filter((x) => x).join(" "), a.detail ? el("div", {}, a.detail) : null))));
  }

  function drawQueue(q, sessions) {
    const msgs = q.messages || {}, bytes = q.bytes || {};
    const rows = ["active", "deferred", "held"].map((st) =>
      el("tr", {}, el("td", {}, st), el("td", { class: "n" }, fmtInt(msgs[st])), el("td", { class: "n" }, fmtBytes(bytes[st]))));
    replace($("queue-counts"), el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "queue"), el("th", { class: "n" }, "messages"), el("th", { class: "n" }, "size"))),
      el("tbody", {}, rows)));
    const names = Object.keys(sessions).sort().filter((k) => sessions[k] > 0);
    const total = names.reduce((n, k) => n + sessions[k], 0);
    replace($("sessions"), el("p", { class: "sessions" }, el("b", {}, fmtInt(total)), " open sessions",
      names.length ? ": " + names.map((k) => k + " " + fmtInt(sessions[k])).join(", ") : ""));
  }

  let refreshTimer = null;
  function refreshSoon() {
    // One extra poll at once, so an action's effect shows without waiting.
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      try {
        draw(await api("GET", "/api/v1/live"));
      } catch (e) {
        setStatus("not updating: " + e.message, true);
      }
    }, 50);
  }

  // --- queue search and bulk operations ---

  const FILTERS = ["from", "to", "client_ip", "user", "older_than", "state", "subject", "rule", "min_size", "max_size"];
  let searched = null; // the filter of the results shown: what the buttons act on

  function formFilter() {
    const q = new URLSearchParams();
    for (const f of FILTERS) {
      const v = $("q-" + f).value.trim();
      if (v !== "") q.set(f, v);
    }
    return q;
  }

  function searchFor(filter) {
    for (const f of FILTERS) $("q-" + f).value = filter[f] || "";
    $("p-search").scrollIntoView({ behavior: "smooth", block: "start" });
    runSearch();
  }

  function searchMsg(text, bad) {
    const m = $("search-msg");
    m.textContent = text;
    m.classList.toggle("bad", !!bad);
  }

  async function runSearch() {
    const q = formFilter();
    hideConfirm();
    searchMsg("searching…");
    try {
      const countQ = new URLSearchParams(q);
      countQ.set("count", "1");
      const listQ = new URLSearchParams(q);
      listQ.set("limit", String(RESULT_LIMIT));
      const [count, items] = await Promise.all([api("GET", "/api/v1/queue?" + countQ), api("GET", "/api/v1/queue?" + listQ)]);
      searched = q;
      showResults(count.count, items || []);
      searchMsg("");
    } catch (e) {
      searched = null;
      $("result-head").hidden = true;
      replace($("results"));
      searchMsg(e.message, true);
    }
  }

  function showResults(count, items) {
    const head = $("result-head");
    head.hidden = false;
    $("result-count").textContent = count === 0 ? "No message matches." :
      fmtInt(count) + (count === 1 ? " message matches" : " messages match") +
      (count > items.length ? " (the first " + fmtInt(items.length) + " listed)." : ".");
    const canAct = count > 0 && searched && [...searched.keys()].length > 0;
    for (const b of head.querySelectorAll("button[data-op]")) b.disabled = !canAct;
    if (count > 0 && !canAct) searchMsg("Give at least one filter to act on the result (the whole queue: mamori queue … --all).");
    if (items.length === 0) return replace($("results"));
    const rows = items.map((m) =>
      el("tr", { "data-id": m.id },
        el("td", { "data-label": "id" }, el("code", {}, m.id)),
        el("td", { "data-label": "state" }, m.state, m.rule ? el("div", { class: "hint" }, m.rule) : null),
        el("td", { "data-label": "from" }, m.from || "<>"),
        el("td", { "data-label": "to" }, (m.to || []).slice(0, 3).join(", ") + ((m.to || []).length > 3 ? " +" + (m.to.length - 3) : "")),
        el("td", { "data-label": "subject" }, m.subject || ""),
        el("td", { "data-label": "client" }, [m.client_ip, m.user].filter((x) => x).join(" ")),
        el("td", { "data-label": "size", class: "n" }, fmtBytes(m.size)),
        el("td", { "data-label": "age", class: "n" }, fmtAge(m.age_s))));
    replace($("results"), el("div", { class: "scroll" }, el("table", { class: "stack", id: "results-table" },
      el("thead", {}, el("tr", {}, ["id", "state", "from", "to", "subject", "client", "size", "age"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows))));
  }

  let pending = null; // {op, filter, count}
  async function askOp(op) {
    if (!searched) return;
    const filter = new URLSearchParams(searched);
    try {
      // Count again: the queue may have changed since the search.
      const c = new URLSearchParams(filter);
      c.set("count", "1");
      const n = (await api("GET", "/api/v1/queue?" + c)).count;
      if (n === 0) {
        searchMsg("No message matches any more.");
        return runSearch();
      }
      pending = { op, filter, count: n };
      $("confirm-text").textContent = op[0].toUpperCase() + op.slice(1) + " " + fmtInt(n) + (n === 1 ? " message" : " messages") +
        " matching " + [...filter].map(([k, v]) => k + "=" + v).join(" ") + "?" + (op === "delete" ? " Deleted mail cannot be recovered." : "");
      const typed = n > CONFIRM_TYPED_ABOVE;
      $("confirm-typed").hidden = !typed;
      $("confirm-input").value = "";
      $("confirm-ok").textContent = op[0].toUpperCase() + op.slice(1);
      $("confirm").hidden = false;
      (typed ? $("confirm-input") : $("confirm-ok")).focus();
    } catch (e) {
      searchMsg(e.message, true);
    }
  }

  function hideConfirm() {
    pending = null;
    $("confirm").hidden = true;
  }

  async function doOp() {
    if (!pending) return;
    const p = pending;
    if (p.count > CONFIRM_TYPED_ABOVE && $("confirm-input").value.replace(/[^0-9]/g, "") !== String(p.count)) {
      searchMsg("Type " + p.count + " to confirm.", true);
      return;
    }
    hideConfirm();
    try {
      const r = await api("POST", "/api/v1/queue/" + p.op + "?" + p.filter);
      searchMsg(p.op + ": " + fmtInt(r.count) + (r.count === 1 ? " message." : " messages."));
      await runSearch();
      searchMsg(p.op + ": " + fmtInt(r.count) + (r.count === 1 ? " message." : " messages."));
      refreshSoon();
    } catch (e) {
      searchMsg(p.op + ": " + e.message, true);
    }
  }

  // --- incident export ---

  function updateExport() {
    const q = new URLSearchParams();
    for (const f of ["since", "sender", "client_ip"]) {
      const v = $("x-" + f).value.trim();
      if (v !== "") q.set(f, v);
    }
    $("export-link").setAttribute("href", "/api/v1/incident/export?" + q);
  }

  // --- wiring ---

  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    runSearch();
  });
  $("search-form").addEventListener("reset", () => {
    searched = null;
    hideConfirm();
    $("result-head").hidden = true;
    replace($("results"));
    searchMsg("");
  });
  for (const b of document.querySelectorAll("#result-head button[data-op]")) b.addEventListener("click", () => askOp(b.dataset.op));
  $("confirm-ok").addEventListener("click", doOp);
  $("confirm-cancel").addEventListener("click", hideConfirm);
  $("confirm-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") doOp();
  });
  $("export-form").addEventListener("input", updateExport);
  $("export-form").addEventListener("submit", (ev) => ev.preventDefault());
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      delete seen.chart; // redraw at the new width on the next poll
      refreshSoon();
    }, 200);
  });
  updateExport();
  poll();
})();
