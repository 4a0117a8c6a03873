// syncd dashboard, the compare page: the runs' validation loss per epoch on one chart
// (static/chart.js), one series per run, with a legend. The data comes in the page's
// <script type="application/json" id="compare-data"> block; nothing is inline.
"use strict";

(function () {
  const holder = document.getElementById("compare-chart");
  const source = document.getElementById("compare-data");
  if (!holder || !source) return;
  const data = JSON.parse(source.textContent);
  const series = data.curves.map((c) => ({
    name: c.label, points: c.epochs.map((p) => ({ epoch: p.epoch, value: p.val_loss })),
  }));
  window.syncdChart.draw(holder, series, { label: "validation loss per epoch, one line per run",
    empty: "no validation loss recorded for these runs" });
  const legend = document.getElementById("compare-legend");
  if (!legend) return;
  data.curves.forEach((c, i) => {
    const item = document.createElement("span");
    item.className = "legend-item";
    item.dataset.series = c.label;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = window.syncdChart.color(i);
    item.append(swatch, c.label);
    legend.appendChild(item);
  });
})();
