// Draws every <canvas data-chart="id"> from the JSON the page embedded with json_script.
// Points are [epoch_ms, value]; the x axis is linear (no date adapter needed), labelled HH:MM.
(function () {
  "use strict";
  var palette = ["#417690", "#c62828", "#2e8540", "#e8a300", "#6a1b9a", "#00838f", "#5d4037", "#ad1457"];
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function clock(ms) { var d = new Date(ms); return two(d.getHours()) + ":" + two(d.getMinutes()); }
  function bytes(v) {
    var units = ["B", "kB", "MB", "GB", "TB"], i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (Math.round(v * 10) / 10) + " " + units[i];
  }
  function tick(spec) {
    return function (v) { return spec.unit === "bytes" ? bytes(v) : (spec.percent ? v + "%" : v); };
  }
  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var spec = JSON.parse(document.getElementById(canvas.dataset.chart).textContent);
    new Chart(canvas, {
      type: "line",
      data: {
        datasets: spec.datasets.map(function (set, i) {
          return {
            label: set.label,
            data: set.data.map(function (p) {
              return { x: p[0], y: p[1] === null ? null : (spec.percent ? p[1] * 100 : p[1]) };
            }),
            spanGaps: false,
            borderColor: palette[i % palette.length],
            backgroundColor: palette[i % palette.length],
            pointRadius: 0,
            borderWidth: 1.5,
            tension: 0
          };
        })
      },
      options: {
        animation: false,
        parsing: false,
        normalized: true,
        interaction: { mode: "nearest", intersect: false },
        scales: {
          x: { type: "linear", ticks: { callback: clock, maxTicksLimit: 8 } },
          y: { beginAtZero: true, ticks: { callback: tick(spec) } }
        },
        plugins: {
          legend: { display: spec.datasets.length > 1, labels: { boxWidth: 10 } },
          tooltip: { callbacks: { title: function (items) { return new Date(items[0].parsed.x).toLocaleString(); } } }
        }
      }
    });
  });
})();
