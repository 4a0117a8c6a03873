// syncd dashboard: the one SVG line chart (loss per epoch), shared by an experiment's page
// (train and validation loss) and the compare page (one series per run). No
// dependencies: `window.syncdChart.draw(holder, series, options)` is all there is.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 720, H = 300, M = { l: 56, r: 16, t: 12, b: 36 };
  // Colours of series that have no CSS class of their own (the compare page's runs).
  const PALETTE = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2",
    "#db2777", "#65a30d", "#92400e", "#475569"];

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(v) {
    return Math.abs(v) >= 100 || v === 0 ? v.toFixed(0) : v.toPrecision(3);
  }

  // series: [{name, cls, color, points: [{epoch, value}]}]; options.label names the chart,
  // options.points is the count put in the svg's data-points (default: the most points
  // of one series).
  function draw(holder, series, options) {
    const opts = options || {};
    const own = series.map((s) => s.points
      .filter((p) => typeof p.epoch === "number" && typeof p.value === "number")
      .sort((a, b) => a.epoch - b.epoch));
    const all = own.flat();
    const count = opts.points !== undefined ? opts.points : Math.max(0, ...own.map((o) => o.length));
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": opts.label || "loss per epoch", "data-points": String(count),
      "data-series-count": String(series.length) });
    holder.replaceChildren(svg);
    if (!all.length) {
      svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "muted" },
        opts.empty || "no epochs yet"));
      return svg;
    }
    const epochs = all.map((p) => p.epoch), values = all.map((p) => p.value);
    const e0 = Math.min(...epochs), e1 = Math.max(...epochs);
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
    const ticks = [...new Set(epochs)].sort((a, b) => a - b);
    const step = Math.max(1, Math.ceil(ticks.length / 10));
    ticks.forEach((ep, i) => {
      if (i % step === 0) {
        axes.appendChild(el("text", { x: x(ep), y: H - M.b + 16, "text-anchor": "middle" }, ep));
      }
    });
    axes.appendChild(el("text", { x: (W + M.l) / 2, y: H - 4, "text-anchor": "middle" }, "epoch"));
    svg.appendChild(axes);
    series.forEach((s, i) => {
      const pts = own[i];
      const color = s.color || (s.cls ? null : PALETTE[i % PALETTE.length]);
      const paint = color ? { stroke: color, fill: color } : {};
      const g = el("g", { class: `series ${s.cls || "run"}`, "data-series": s.name });
      if (pts.length > 1) {
        g.appendChild(el("polyline", { points: pts.map((p) => `${x(p.epoch)},${y(p.value)}`)
          .join(" "), ...(color ? { stroke: color } : {}) }));
      }
      for (const p of pts) {
        const dot = el("circle", { cx: x(p.epoch), cy: y(p.value), r: 3.5, class: "point",
          ...(color ? { fill: paint.fill } : {}) });
        dot.appendChild(el("title", {}, `epoch ${p.epoch}: ${s.name} ${fmt(p.value)}`));
        g.appendChild(dot);
      }
      svg.appendChild(g);
    });
    return svg;
  }

  // The colour draw() gives series i without a class (for a legend beside the chart).
  function color(i) { return PALETTE[i % PALETTE.length]; }

  window.syncdChart = { draw, color, fmt };
})();
