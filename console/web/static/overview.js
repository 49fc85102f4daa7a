// Draws the overview's charts with uPlot from the page's own data (#overview-data); the same
// numbers are in the page's tables, so nothing is lost without JavaScript.
(function () {
  "use strict";
  function draw() {
    var source = document.getElementById("overview-data");
    if (!source || typeof uPlot === "undefined") { return; }
    var data = JSON.parse(source.textContent);
    var css = getComputedStyle(document.documentElement);
    var color = function (name) { return css.getPropertyValue(name).trim(); };
    var seconds = function (rows) { return rows.map(function (r) { return Date.parse(r.at) / 1000; }); };
    var axes = [{ stroke: color("--muted"), grid: { stroke: color("--line") } },
                { stroke: color("--muted"), grid: { stroke: color("--line") } }];
    var charts = [];
    // Both charts span the whole window, however few buckets have jobs (one point alone would
    // otherwise get an axis of its own making, years wide).
    var window_ = [Date.parse(data.since) / 1000, Date.parse(data.until) / 1000];
    function chart(id, rows, series, values) {
      var target = document.getElementById(id);
      if (!target || rows.length === 0) { return; }
      var columns = [seconds(rows)].concat(values.map(function (key) {
        return rows.map(function (r) { return r[key]; });
      }));
      // Times in UTC, as in the tables and the rest of Conveyor.
      var options = { width: target.clientWidth || 600, height: 240, series: [{}].concat(series), axes: axes,
                      scales: { x: { time: true, range: function () { return window_; } } },
                      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); } };
      charts.push([target, new uPlot(options, columns, target)]);
    }
    var minute = 60 / data.bucket_seconds;
    var perMinute = function (key) { return data.throughput.map(function (r) { return r[key] * minute; }); };
    var throughput = data.throughput.map(function (r, i) {
      return { at: r.at, ok: perMinute("succeeded")[i], bad: perMinute("failed")[i] };
    });
    chart("chart-throughput", throughput, [
      { label: "succeeded / min", stroke: color("--ok"), fill: color("--ok-bg"), width: 2 },
      { label: "failed / min", stroke: color("--bad"), width: 2 }
    ], ["ok", "bad"]);
    chart("chart-latency", data.latency, [
      { label: "run p50 s", stroke: color("--accent"), width: 2 },
      { label: "run p95 s", stroke: color("--accent"), dash: [6, 4], width: 1.5 },
      { label: "wait p50 s", stroke: color("--warn"), width: 2 },
      { label: "wait p95 s", stroke: color("--warn"), dash: [6, 4], width: 1.5 }
    ], ["run_p50", "run_p95", "wait_p50", "wait_p95"]);
    window.addEventListener("resize", function () {
      charts.forEach(function (pair) { pair[1].setSize({ width: pair[0].clientWidth, height: 240 }); });
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
