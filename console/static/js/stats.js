/* 统计: the by-county chart, drawn with the vendored ECharts from the JSON block its element
   names (data-stats-chart="counties", data-source="<id>"); charts.js draws the monthly one. */
(function () {
  "use strict";

  var FONT = '"Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", sans-serif';

  function counties(data) {
    return {
      textStyle: { fontFamily: FONT },
      color: ["#1f6feb", "#2f9e44"],
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      legend: { data: ["服务时长（小时）", "受益人次"], top: 0 },
      grid: { left: 48, right: 56, top: 40, bottom: 56 },
      dataZoom: data.names.length > 12 ? [{ type: "slider", height: 14, bottom: 4, endValue: 11 }] : [],
      xAxis: { type: "category", data: data.names, axisLabel: { interval: 0, rotate: data.names.length > 6 ? 30 : 0 } },
      yAxis: [
        { type: "value", name: "小时" },
        { type: "value", name: "人次", minInterval: 1, splitLine: { show: false } }
      ],
      series: [
        { name: "服务时长（小时）", type: "bar", data: data.hours, barMaxWidth: 28 },
        { name: "受益人次", type: "bar", yAxisIndex: 1, data: data.beneficiaries, barMaxWidth: 28 }
      ]
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.echarts) {
      return;
    }
    document.querySelectorAll('[data-stats-chart="counties"]').forEach(function (el) {
      var source = document.getElementById(el.dataset.source);
      if (!source) {
        return;
      }
      var chart = window.echarts.init(el, null, { renderer: "canvas" });
      chart.setOption(counties(JSON.parse(source.textContent)));
      window.addEventListener("resize", function () { chart.resize(); });
    });
  });
})();
