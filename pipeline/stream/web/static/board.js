// cdiwatch board: the control room's live view of crimes waiting to be recorded.
//
// Plain script, no build step. Everything it shows comes from the worker's API
// (/board/state, /incidents, /incidents/{id}); the Content-Security-Policy
// allows no inline script or style, so all behaviour is here and all looks in
// board.css. Filters, pages and the open incident live in the query string, so
// a view can be bookmarked, shared and navigated with Back/Forward.
"use strict";
(() => {
  const TOKEN_KEY = "cdiwatch-token";
  const REFRESH_MS = 5000;
  const PAGE = 25;
  const NEW_FOR_MS = 60000; // how long a row that appeared since the previous refresh stays marked
  const LISTS = ["overdue", "at_risk", "downgraded"];
  const FEED_NAMES = {incidents: "Incidents feed", crimes: "Records feed"};
  const $ = (sel, root = document) => root.querySelector(sel);

  let token = sessionStorage.getItem(TOKEN_KEY);
  let tokenWait = null;
  let state = null;            // the last /board/state
  let clockOffset = 0;         // server clock minus this browser's clock, in ms
  let fmt = null;              // formatters for the force's time zone
  let seq = 0;                 // refresh generation: a late answer never overwrites a newer one
  let timer = null;
  let lastOk = null;
  const lists = {};            // status -> {sig, key, prev: Set of ids, firstSeen: Map id -> ms}
  const detail = {id: null, sig: "", seq: 0, closing: false};
  let silentBefore = "";

  // ------------------------------------------------------------------ URL state
  function view() {
    const p = new URLSearchParams(location.search);
    const pages = {};
    for (const s of LISTS) pages[s] = Math.max(1, parseInt(p.get("page_" + s) || "1", 10) || 1);
    return {district: p.get("district") || "", category: p.get("category") || "",
            incident: p.get("incident") || "", pages};
  }

  function setView(changes, push) {
    const p = new URLSearchParams(location.search);
    for (const [k, v] of Object.entries(changes)) {
      if (v === "" || v == null || (k.startsWith("page_") && v === 1)) p.delete(k); else p.set(k, String(v));
    }
    const qs = p.toString();
    const url = location.pathname + (qs ? "?" + qs : "");
    if (url === location.pathname + location.search) return;
    if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
  }

  // ------------------------------------------------------------------ the API, with the token
  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path) {
    for (;;) {
      const used = token;
      const headers = {Accept: "application/json"};
      if (used) headers.Authorization = "Bearer " + used;
      const r = await fetch(path, {headers, cache: "no-store"});
      if (r.status === 401) {
        if (token === used) await askToken(used !== null);
        continue;
      }
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      if (!r.ok) throw new HttpError(r.status, (body && body.error) || r.statusText);
      return {body, total: parseInt(r.headers.get("X-Total-Count") || "0", 10)};
    }
  }

  // One form for every request that needs the token; it stays in sessionStorage for this tab.
  function askToken(refused) {
    if (refused) { token = null; sessionStorage.removeItem(TOKEN_KEY); }
    if (tokenWait) return tokenWait;
    tokenWait = new Promise(resolve => {
      const dialog = $("#token-dialog"), form = $("#token-form"), input = $("#token-input");
      $("#token-why").textContent = refused
        ? "That token was not accepted. Enter the monitor's access token (kept for this tab only)."
        : "This monitor needs its access token to show data. It is kept for this tab only.";
      input.value = "";
      const submit = ev => {
        ev.preventDefault();
        const value = input.value.trim();
        if (!value) { input.focus(); return; }
        token = value;
        sessionStorage.setItem(TOKEN_KEY, value);
        form.removeEventListener("submit", submit);
        dialog.close();
        tokenWait = null;
        resolve();
      };
      form.addEventListener("submit", submit);
      if (!dialog.open) dialog.showModal();
      input.focus();
    });
    return tokenWait;
  }

  // ------------------------------------------------------------------ times in the force's zone
  function makeFormats(zone) {
    const base = {timeZone: zone, hourCycle: "h23"};
    return {
      zone,
      full: new Intl.DateTimeFormat("en-GB", {...base, weekday: "short", day: "numeric", month: "short",
        year: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"}),
      day: new Intl.DateTimeFormat("en-CA", {timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit"}),
    };
  }

  function ms(iso) { return Date.parse(String(iso).replace(/(\.\d{3})\d+/, "$1")); }

  function parts(t) {
    const o = {};
    for (const p of fmt.full.formatToParts(new Date(t))) o[p.type] = p.value;
    const [y, m, d] = fmt.day.format(new Date(t)).split("-").map(Number); // the local calendar day
    o.dayNumber = Date.UTC(y, m - 1, d) / 864e5;
    return o;
  }

  // "Tue 6 Oct 14:33 BST" (seconds on request)
  function when(iso, seconds) {
    if (!iso) return "–";
    const p = parts(ms(iso));
    return `${p.weekday} ${p.day} ${p.month} ${p.hour}:${p.minute}${seconds ? ":" + p.second : ""} ${p.timeZoneName}`;
  }

  function span(sec) {
    sec = Math.max(0, Math.round(sec));
    if (sec < 60) return sec + " s";
    const m = Math.floor(sec / 60);
    if (m < 60) return m + " min";
    const h = Math.floor(m / 60);
    if (h < 48) return h + " h " + (m % 60) + " min";
    return Math.floor(h / 24) + " d " + (h % 24) + " h";
  }

  // The API's sentences carry UTC instants; say them in local time, like a person would:
  // the first in full, the next ones as "14:33" (same day) or "14:33 next day".
  const ISO = /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z/g;
  function localSentence(text, reference) {
    let prev = reference ? parts(ms(reference)) : null;
    const out = String(text).replace(ISO, iso => {
      const p = parts(ms(iso));
      let s;
      if (prev && p.timeZoneName === prev.timeZoneName && p.dayNumber === prev.dayNumber) s = `${p.hour}:${p.minute}`;
      else if (prev && p.timeZoneName === prev.timeZoneName && p.dayNumber === prev.dayNumber + 1)
        s = `${p.hour}:${p.minute} next day`;
      else s = `${p.weekday} ${p.day} ${p.month} ${p.hour}:${p.minute} ${p.timeZoneName}`;
      prev = p;
      return s;
    });
    return out.charAt(0).toUpperCase() + out.slice(1);
  }

  // ------------------------------------------------------------------ small DOM helpers
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }
  const label = code => (state && state.labels[code]) ||
    String(code || "").replace(/_/g, " ").replace(/^./, c => c.toUpperCase());
  const coded = (code, cls) => el("span", {class: cls, title: code, text: label(code)});
  const timeEl = (iso, seconds) => el("time", {datetime: iso, title: iso, text: when(iso, seconds)});
  const nowMs = () => Date.now() + clockOffset;

  function highHarm(e) {
    return state.high_harm.includes(e.category) || e.flags.some(f => state.harm_flags.includes(f));
  }

  function incidentHref(id) {
    const p = new URLSearchParams(location.search);
    p.set("incident", id);
    return "?" + p.toString();
  }

  // ------------------------------------------------------------------ the lists
  function listPath(status, v) {
    const q = new URLSearchParams({status, sort: "harm", limit: String(PAGE),
                                   offset: String((v.pages[status] - 1) * PAGE)});
    if (v.district) q.set("district", v.district);
    if (v.category) q.set("category", v.category);
    return "/incidents?" + q.toString();
  }

  function lastCell(status, e, wm) {
    if (status === "downgraded") return coded(e.reason, "reason");
    if (wm === null) return "–";
    const secs = (ms(e.deadline) - wm) / 1000;
    return el("span", {class: "rel", text: status === "overdue" ? span(-secs) : span(secs) + " left"});
  }

  function row(status, e, isNew, wm) {
    const harmful = highHarm(e);
    const first = el("th", {scope: "row"},
      el("a", {href: incidentHref(e.incident_id), class: "open", "data-id": e.incident_id, text: e.incident_id}));
    if (isNew) first.append(" ", el("span", {class: "badge-new", text: "New"}));
    const flags = el("td", {class: "flags"});
    for (const f of e.flags) flags.append(coded(f, state.harm_flags.includes(f) ? "flag harm" : "flag"), " ");
    const cat = coded(e.category, state.high_harm.includes(e.category) ? "cat hh" : "cat");
    if (harmful) cat.append(el("span", {class: "sr-only", text: " (high harm)"}));
    return el("tr", {class: `${status}${isNew ? " new" : ""}${harmful ? " harm" : ""}`, "data-id": e.incident_id},
      first, el("td", null, cat), flags, el("td", {text: e.district || "–"}),
      el("td", null, coded(e.channel)), el("td", null, timeEl(e.required_since)),
      el("td", null, timeEl(e.deadline)), el("td", null, lastCell(status, e, wm)));
  }

  function renderList(status, answer, v, wm) {
    const section = $(`section[data-status="${status}"]`);
    const rows = answer.body, total = answer.total;
    const L = lists[status] || (lists[status] = {sig: "", key: "", prev: null, firstSeen: new Map()});
    const key = JSON.stringify([v.district, v.category, v.pages[status]]);
    const now = Date.now();
    if (L.key !== key) { L.key = key; L.prev = null; L.firstSeen.clear(); }
    if (L.prev) for (const r of rows) if (!L.prev.has(r.incident_id)) L.firstSeen.set(r.incident_id, now);
    L.prev = new Set(rows.map(r => r.incident_id));
    for (const [id, t] of L.firstSeen) if (now - t > NEW_FOR_MS || !L.prev.has(id)) L.firstSeen.delete(id);

    const sig = JSON.stringify([rows, [...L.firstSeen.keys()], wm, location.search]);
    if (sig !== L.sig) {
      L.sig = sig;
      const tbody = $("tbody", section);
      const focused = tbody.contains(document.activeElement) ? document.activeElement.closest("tr") : null;
      const focusId = focused && focused.dataset.id;
      const body = document.createDocumentFragment();
      for (const r of rows) body.append(row(status, r, L.firstSeen.has(r.incident_id), wm));
      if (!rows.length) {
        const filtered = v.district || v.category ? " matching the filters" : "";
        body.append(el("tr", {class: "empty"}, el("td", {colspan: "8", text: `None${filtered}.`})));
      }
      tbody.replaceChildren(body);
      if (focusId) {
        const again = tbody.querySelector(`tr[data-id="${CSS.escape(focusId)}"] a.open`);
        if (again) again.focus();
      }
    }
    const page = v.pages[status];
    const from = total ? (page - 1) * PAGE + 1 : 0, to = Math.min(total, page * PAGE);
    $(".total", section).textContent = `(${total.toLocaleString("en-GB")})`;
    $(".range", section).textContent = total ? `${from}–${to} of ${total.toLocaleString("en-GB")}` : "none";
    $(".prev", section).disabled = page <= 1;
    $(".next", section).disabled = to >= total;
    $(".pager", section).hidden = total <= PAGE && page === 1;
    if (page > 1 && (page - 1) * PAGE >= total) setView({["page_" + status]: Math.max(1, Math.ceil(total / PAGE))}, false);
  }

  // ------------------------------------------------------------------ header: clocks and feeds
  function fillSelect(select, counts, chosen, textOf) {
    const names = Object.keys(counts).sort((a, b) => textOf(a).localeCompare(textOf(b)));
    if (chosen && !names.includes(chosen)) names.unshift(chosen);
    const sig = JSON.stringify([names.map(n => [n, counts[n] || 0]), chosen]);
    if (select.dataset.sig === sig || document.activeElement === select) return;
    select.dataset.sig = sig;
    const first = select.options[0];
    select.replaceChildren(first, ...names.map(n =>
      el("option", {value: n, title: n, text: `${textOf(n)} (${counts[n] || 0})`})));
    select.value = chosen;
  }

  function feedInfo(topic, iso) {
    const side = (state.feed_sides || {})[topic];
    const name = FEED_NAMES[side] || topic;
    const last = iso ? ms(iso) : ms(state.started);
    const quiet = (nowMs() - last) / 1000;
    return {topic, name, iso, quiet, silent: quiet >= state.feed_silent_after_seconds};
  }

  function tick() {
    if (!state) return;
    const now = nowMs();
    $("#clock-wall").textContent = when(new Date(now).toISOString(), true);
    const lag = state.watermark ? (now - ms(state.watermark)) / 1000 : null;
    $("#clock-lag").textContent = lag === null ? "no events yet" : span(lag);
    const feeds = Object.entries(state.feeds).map(([t, iso]) => feedInfo(t, iso));
    const list = $("#feeds");
    if (list.children.length !== feeds.length) list.replaceChildren(...feeds.map(() => el("li")));
    feeds.forEach((f, i) => {
      const li = list.children[i];
      li.className = "feed " + (f.silent ? "silent" : "ok");
      li.title = f.topic;
      li.textContent = f.silent
        ? `${f.name} silent for ${span(f.quiet)}`
        : (f.iso ? `${f.name}: last message ${span(f.quiet)} ago` : `${f.name}: no message yet`);
    });
    const silent = feeds.filter(f => f.silent);
    const banner = $("#banner");
    banner.hidden = !silent.length;
    if (silent.length) {
      const limit = span(state.feed_silent_after_seconds);
      banner.textContent = silent.map(f => `${f.name.toLowerCase()} silent for ${span(f.quiet)}`).join("; ")
        .replace(/^./, c => c.toUpperCase()) +
        ` (alert after ${limit} without a message). Statuses may be out of date until it resumes.`;
    }
    // announce only a change of which feeds are silent, not every second of it
    const names = silent.map(f => f.name).join(", ");
    if (names !== silentBefore) {
      $("#announce").textContent = names ? `${names} silent.` : (silentBefore ? "Feeds are delivering again." : "");
      silentBefore = names;
    }
  }

  function renderState(v) {
    $("#clock-event").textContent = state.watermark ? when(state.watermark, true) : "no events yet";
    $("#clock-event").title = state.watermark || "";
    for (const s of ["overdue", "at_risk", "pending", "downgraded"]) {
      $("#n-" + s).textContent = (state.counts[s] || 0).toLocaleString("en-GB");
    }
    fillSelect($("#f-district"), state.facets.districts, v.district, n => n);
    fillSelect($("#f-category"), state.facets.categories, v.category, label);
    tick();
  }

  // ------------------------------------------------------------------ the incident's detail
  function timeline(d) {
    const items = d.events.map(e => ({t: ms(e.occurred_at), iso: e.occurred_at, kind: "event " + e.event_type,
      head: null, text: localSentence(e.change, e.occurred_at), title: `event ${e.event_id} (${e.event_type})`}));
    for (const c of d.crimes) {
      const late = d.deadline && ms(c.recorded_at) > ms(d.deadline);
      items.push({t: ms(c.recorded_at), iso: c.recorded_at, kind: "crime", head: "Crime recorded",
                  text: `${c.crime_id}${d.deadline ? (late ? ", after the deadline" : ", by the deadline") : ""}`});
    }
    if (d.deadline) {
      const passed = d.watermark && ms(d.watermark) >= ms(d.deadline);
      items.push({t: ms(d.deadline), iso: d.deadline, kind: "deadline", head: "Deadline",
                  text: "24 hours after the record became required" + (passed ? "" : " (not reached yet)")});
    }
    if (d.watermark) items.push({t: ms(d.watermark), iso: d.watermark, kind: "clock", head: "Event-time clock",
                                 text: "the monitor has seen events up to here"});
    items.sort((a, b) => a.t - b.t);
    return el("ol", {class: "timeline"}, ...items.map(i =>
      el("li", {class: "tl " + i.kind, title: i.title || null},
        timeEl(i.iso), " ", i.head ? el("strong", {text: i.head + ": "}) : null, el("span", {text: i.text}))));
  }

  function renderDetail(d) {
    const body = $("#d-body");
    const flags = d.flags.length ? d.flags.map(f => label(f)).join(", ") : "none";
    const statusText = d.downgrade ? "Downgraded" : label(d.status);
    const facts = [["Status", el("span", {class: "badge " + (d.downgrade ? "downgraded" : d.status), title: d.status,
                                         text: statusText})],
                   ["Category", d.category ? coded(d.category) : "–"], ["Flags", el("span", {title: d.flags.join(", "), text: flags})],
                   ["District", d.district || "–"], ["Channel", d.channel ? coded(d.channel) : "–"],
                   ["Required since", d.required_since ? timeEl(d.required_since, true) : "not required"],
                   ["Deadline", d.deadline ? timeEl(d.deadline, true) : "–"]];
    if (d.exemption_reason) facts.push([d.downgrade ? "Downgrade" : "Exemption", coded(d.exemption_reason)]);
    if (d.alerts.length) facts.push(["Alerts sent", d.alerts.map(a => label(a)).join(", ")]);
    const dl = el("dl", {class: "facts"});
    for (const [k, v] of facts) dl.append(el("div", null, el("dt", {text: k}), el("dd", null, v)));
    const crimes = d.crimes.length
      ? el("table", {class: "crimes"}, el("caption", {text: "Crimes linked to this incident"}),
          el("thead", null, el("tr", null, el("th", {scope: "col", text: "Crime"}),
                                 el("th", {scope: "col", text: "Recorded at"}))),
          el("tbody", null, ...d.crimes.map(c => el("tr", null, el("th", {scope: "row", text: c.crime_id}),
                                                   el("td", null, timeEl(c.recorded_at, true))))))
      : el("p", {class: "none", text: "No crime record is linked to this incident."});
    body.replaceChildren(
      el("p", {class: "rule", title: d.rule, id: "d-rule"}, el("strong", {text: "Why: "}), localSentence(d.rule) + "."),
      dl, el("h3", {text: "Timeline"}), timeline(d), el("h3", {text: "Linked crimes"}), crimes);
  }

  async function loadDetail(first) {
    const id = detail.id, mine = ++detail.seq;
    if (!id) return;
    try {
      const {body} = await api("/incidents/" + encodeURIComponent(id));
      if (mine !== detail.seq || id !== detail.id) return;
      const sig = JSON.stringify(body);
      if (sig !== detail.sig && state) { detail.sig = sig; renderDetail(body); }
    } catch (e) {
      if (mine !== detail.seq) return;
      if (first || e.status === 404) {
        detail.sig = "";
        const why = e.status === 404 ? "This incident is unknown to the monitor (or was evicted after 30 days)."
          : `The incident could not be loaded: ${e.message}. Retrying.`;
        $("#d-body").replaceChildren(el("p", {class: "error", text: why}));
      }
    }
  }

  function openIncident(id, push) {
    if (push) setView({incident: id}, true);
    const dialog = $("#detail");
    if (detail.id !== id) { detail.id = id; detail.sig = ""; $("#d-body").replaceChildren(el("p", {text: "Loading…"})); }
    $("#d-title").textContent = "Incident " + id;
    if (!dialog.open) dialog.showModal();
    loadDetail(true);
  }

  function closedIncident() {
    const id = detail.id;
    detail.id = null; detail.sig = ""; detail.seq++;
    if (!detail.closing) setView({incident: ""}, true);
    detail.closing = false;
    const link = id && document.querySelector(`a.open[data-id="${CSS.escape(id)}"]`);
    if (link) link.focus();
  }

  // ------------------------------------------------------------------ the refresh loop
  async function refresh() {
    clearTimeout(timer);
    const mine = ++seq, v = view();
    try {
      const [st, ...answers] = await Promise.all([api("/board/state"), ...LISTS.map(s => api(listPath(s, v)))]);
      if (mine !== seq) return;
      state = st.body;
      clockOffset = ms(state.now) - Date.now();
      if (!fmt || fmt.zone !== state.timezone) fmt = makeFormats(state.timezone);
      renderState(v);
      const wm = state.watermark ? ms(state.watermark) : null;
      LISTS.forEach((s, i) => renderList(s, answers[i], v, wm));
      lastOk = state.now;
      document.body.classList.remove("stale");
      $("#status").textContent = state.ready ? "" :
        "This worker is still loading the cluster's state: the figures may be incomplete.";
      $("#updated").textContent = "Updated " + when(state.now, true) + ".";
      if (detail.id) loadDetail(false);
    } catch (e) {
      if (mine !== seq) return;
      document.body.classList.add("stale");
      const since = lastOk && fmt ? ` Showing what it said at ${when(lastOk, true)}.` : "";
      $("#status").textContent = `Cannot reach the monitor (${e.message || e}).${since} Retrying every ${REFRESH_MS / 1000} s.`;
    }
    if (mine === seq) timer = setTimeout(refresh, REFRESH_MS);
  }

  function applyView() {
    const v = view();
    if (v.incident && v.incident !== detail.id) openIncident(v.incident, false);
    if (!v.incident && detail.id) { detail.closing = true; $("#detail").close(); }
  }

  function start() {
    document.body.append(el("div", {id: "announce", class: "sr-only", role: "alert"}));
    $("#f-district").addEventListener("change", e => {
      setView({district: e.target.value, page_overdue: 1, page_at_risk: 1, page_downgraded: 1}, true); refresh();
    });
    $("#f-category").addEventListener("change", e => {
      setView({category: e.target.value, page_overdue: 1, page_at_risk: 1, page_downgraded: 1}, true); refresh();
    });
    $("#f-clear").addEventListener("click", () => {
      setView({district: "", category: "", page_overdue: 1, page_at_risk: 1, page_downgraded: 1}, true);
      $("#f-district").value = ""; $("#f-category").value = ""; refresh();
    });
    $("#filters").addEventListener("submit", e => e.preventDefault());
    for (const section of document.querySelectorAll("section.list")) {
      const status = section.dataset.status;
      const go = delta => { setView({["page_" + status]: view().pages[status] + delta}, true); refresh(); };
      $(".prev", section).addEventListener("click", () => go(-1));
      $(".next", section).addEventListener("click", () => go(1));
      $("tbody", section).addEventListener("click", e => {
        if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey) return; // let a new tab open the link
        const tr = e.target.closest("tr[data-id]");
        if (!tr) return;
        e.preventDefault();
        openIncident(tr.dataset.id, true);
      });
    }
    $("#d-close").addEventListener("click", () => $("#detail").close());
    $("#detail").addEventListener("close", closedIncident);
    $("#token-dialog").addEventListener("cancel", e => e.preventDefault()); // nothing works without it
    window.addEventListener("popstate", () => {
      const v = view();
      $("#f-district").value = v.district; $("#f-category").value = v.category;
      applyView(); refresh();
    });
    setInterval(tick, 1000);
    applyView();
    refresh();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
