// syncd dashboard: draws an experiment's train/validation loss per epoch (with
// static/chart.js), follows the server-sent events of /api/experiments/{id}/events
// to add new epochs without a reload, and submits the experiments' filters when one
// changes. No dependencies, no CDN, no inline script in the pages (their
// Content-Security-Policy allows none).
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
  const SERIES = [["train", "train_loss"], ["val", "val_loss"]];

  // The chart itself is static/chart.js's (shared with the compare page).
  function draw(epochs) {
    const pts = epochs.filter((p) => typeof p.epoch === "number");
    window.syncdChart.draw(chart, SERIES.map(([name, key]) => ({
      name, cls: name, points: pts.map((p) => ({ epoch: p.epoch, value: p[key] })),
    })), { label: "training and validation loss per epoch", points: pts.length });
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
  if ("asOf" in chart.dataset) { // a past state (?as_of=): nothing to follow
    live.textContent = "as of a past moment, not live"; return;
  }

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
