// Lectr console behaviour: no inline script anywhere (the CSP forbids it).
"use strict";
(function () {
  function autosubmit(root) {
    root.querySelectorAll("select[data-autosubmit]").forEach(function (el) {
      el.addEventListener("change", function () { el.form.submit(); });
    });
    root.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.getAttribute("data-confirm"))) { e.preventDefault(); }
      });
    });
  }
  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
  }
  function charts() {
    var src = document.getElementById("series");
    if (!src || typeof uPlot === "undefined") { return; }
    var data = JSON.parse(src.textContent);
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var key = el.getAttribute("data-chart");
      var width = Math.max(260, el.clientWidth || 300);
      var opts = {
        width: width, height: 160, legend: { show: false },
        scales: { x: { time: true } },
        axes: [
          { stroke: css("--muted"), grid: { stroke: css("--grid") } },
          { stroke: css("--muted"), grid: { stroke: css("--grid") }, size: 56 }
        ],
        series: [{}, { label: key, stroke: css("--accent"), fill: css("--accent-soft"), width: 2, spanGaps: key === "p95", points: { show: key === "p95", size: 5 } }]
      };
      el.textContent = "";
      var plot = new uPlot(opts, [data.ts, data[key]], el);
      window.addEventListener("resize", function () {
        plot.setSize({ width: Math.max(260, el.clientWidth || 300), height: 160 });
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    autosubmit(document);
    charts();
  });
})();
