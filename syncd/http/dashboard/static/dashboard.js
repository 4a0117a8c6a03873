// syncd dashboard: draws an experiment's train/validation loss per epoch as SVG, and
// follows the server-sent events of /api/experiments/{id}/events to add new epochs
// without a reload; submits the experiments' filters when one changes. No
// dependencies, no CDN, no inline script in the pages (their Content-Security-Policy
// allows none): this file is all the script there is.
"use strict";

(function () {
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }
})();

(function () {
  const chart = document.getElementById("chart");
  const source = document.getElementById("epochs-data");
  if (!chart || !source) return;
  const id = chart.dataset.experiment;
  const live = document.getElementById("live");
  const NS = "http://www.w3.org/2000/svg";
  const W = 720, H = 300, M = { l: 56, r: 16, t: 12, b: 36 };
  const SERIES = [["train", "train_loss"], ["val", "val_loss"]];

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(v) {
    return Math.abs(v) >= 100 || v === 0 ? v.toFixed(0) : v.toPrecision(3);
  }

  function draw(epochs) {
    const pts = epochs.filter((p) => typeof p.epoch === "number");
    const values = [];
    for (const p of pts) for (const [, key] of SERIES) {
      if (typeof p[key] === "number") values.push(p[key]);
    }
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": "training and validation loss per epoch", "data-points": String(pts.length) });
    chart.replaceChildren(svg);
    if (!pts.length || !values.length) {
      svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "muted" },
        "no epochs yet"));
      return;
    }
    const e0 = Math.min(...pts.map((p) => p.epoch)), e1 = Math.max(...pts.map((p) => p.epoch));
    let y0 = Math.min(...values), y1 = Math.max(...values);
    if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
    const x = (ep) => M.l + (e1 === e0 ? 0.5 : (ep - e0) / (e1 - e0)) * (W - M.l - M.r);
    const y = (v) => H - M.b - ((v - y0) / (y1 - y0)) * (H - M.t - M.b);
    const axes = el("g", { class: "axes" });
    axes.appendChild(el("line", { x1: M.l, y1: H - M.b, x2: W - M.r, y2: H - M.b }));
    axes.appendChild(el("line", { x1: M.l, y1: M.t, x2: M.l, y2: H - M.b }));
    for (let i = 0; i <= 4; i++) {
      const v = y0 + ((y1 - y0) * i) / 4;
      axes.appendChild(el("line", { x1: M.l, y1: y(v), x2: W - M.r, y2: y(v), class: "grid" }));
      axes.appendChild(el("text", { x: M.l - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    const ticks = [...new Set(pts.map((p) => p.epoch))].sort((a, b) => a - b);
    const step = Math.max(1, Math.ceil(ticks.length / 10));
    ticks.forEach((ep, i) => {
      if (i % step === 0) {
        axes.appendChild(el("text", { x: x(ep), y: H - M.b + 16, "text-anchor": "middle" }, ep));
      }
    });
    axes.appendChild(el("text", { x: (W + M.l) / 2, y: H - 4, "text-anchor": "middle" }, "epoch"));
    svg.appendChild(axes);
    for (const [name, key] of SERIES) {
      const own = pts.filter((p) => typeof p[key] === "number")
        .sort((a, b) => a.epoch - b.epoch);
      const g = el("g", { class: `series ${name}`, "data-series": name });
      if (own.length > 1) {
        g.appendChild(el("polyline", {
          points: own.map((p) => `${x(p.epoch)},${y(p[key])}`).join(" ") }));
      }
      for (const p of own) {
        const dot = el("circle", { cx: x(p.epoch), cy: y(p[key]), r: 3.5, class: "point" });
        dot.appendChild(el("title", {}, `epoch ${p.epoch}: ${name} ${fmt(p[key])}`));
        g.appendChild(dot);
      }
      svg.appendChild(g);
    }
  }

  function cell(v) {
    const td = document.createElement("td");
    td.textContent = v === null || v === undefined ? "–"
      : typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(4) : String(v);
    return td;
  }

  function table(epochs) {
    const holder = document.getElementById("epochs-table");
    if (!holder) return;
    const t = document.createElement("table");
    t.dataset.testid = "epochs";
    const head = t.createTHead().insertRow();
    for (const h of ["epoch", "train loss", "val loss", "learning rate", "time"]) {
      const th = document.createElement("th"); th.textContent = h; head.appendChild(th);
    }
    const body = t.createTBody();
    for (const p of epochs) {
      const row = body.insertRow();
      for (const k of ["epoch", "train_loss", "val_loss", "learning_rate", "timestamp"]) {
        row.appendChild(cell(p[k]));
      }
    }
    holder.replaceChildren(t);
  }

  let fetching = null;
  async function refresh() {
    if (fetching) return fetching;
    fetching = (async () => {
      try {
        const r = await fetch(`/api/experiments/${encodeURIComponent(id)}/epochs`,
          { cache: "no-store" });
        if (r.ok) { const d = await r.json(); draw(d.epochs); table(d.epochs); }
      } finally { fetching = null; }
    })();
    return fetching;
  }

  draw(JSON.parse(source.textContent).epochs);

  let poll = null;
  function fallback(reason) {
    live.textContent = `not live (${reason}); re-reading every 5 s`;
    if (!poll) poll = setInterval(refresh, 5000);
  }
  if (!window.EventSource) { fallback("no EventSource"); return; }
  const events = new EventSource(`/api/experiments/${encodeURIComponent(id)}/events`);
  events.addEventListener("ready", () => {
    live.textContent = "live"; live.dataset.state = "live";
    refresh(); // anything committed between the page's render and the stream's start
  });
  events.addEventListener("change", () => refresh());
  events.addEventListener("unavailable", (ev) => {
    events.close(); fallback(JSON.parse(ev.data).reason);
  });
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED) { // refused (e.g. 503: too many streams)
      fallback("the server refused a live stream"); return;
    }
    live.textContent = "reconnecting…"; live.dataset.state = "down";
  };
})();
