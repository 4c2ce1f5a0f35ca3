/* Charts of the console's pages, drawn with the vendored ECharts. Each chart is an element
   with data-chart="<kind>" and data-source="<id of a <script type="application/json"> block>";
   no inline script is needed, so the Content-Security-Policy stays script-src 'self'. */
(function () {
  "use strict";

  var FONT = '"Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", sans-serif';

  var kinds = {
    months: function (data) {
      return {
        textStyle: { fontFamily: FONT },
        color: ["#1f6feb", "#f08c00"],
        tooltip: { trigger: "axis" },
        legend: { data: ["活动（场）", "服务时长（小时）"], top: 0 },
        grid: { left: 48, right: 56, top: 40, bottom: 28 },
        xAxis: { type: "category", data: data.months },
        yAxis: [
          { type: "value", name: "场", minInterval: 1 },
          { type: "value", name: "小时", splitLine: { show: false } }
        ],
        series: [
          { name: "活动（场）", type: "bar", data: data.activities, barMaxWidth: 28 },
          { name: "服务时长（小时）", type: "line", yAxisIndex: 1, data: data.hours, smooth: true }
        ]
      };
    }
  };

  function draw(root) {
    if (!window.echarts) {
      return;
    }
    root.querySelectorAll("[data-chart]").forEach(function (el) {
      var build = kinds[el.dataset.chart];
      var source = document.getElementById(el.dataset.source);
      if (!build || !source || el.dataset.drawn) {
        return;
      }
      var chart = window.echarts.init(el, null, { renderer: "canvas" });
      chart.setOption(build(JSON.parse(source.textContent)));
      el.dataset.drawn = "1";
      window.addEventListener("resize", function () { chart.resize(); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (event) { draw(event.target); });
})();
