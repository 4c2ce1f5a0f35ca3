/* 指标: the by-county bar chart (confirmed and awaiting confirmation side by side), drawn with
   the vendored ECharts from the JSON block its element names (data-source="<id>"). */
(function () {
  "use strict";

  var FONT = '"Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", sans-serif';

  function option(data) {
    return {
      textStyle: { fontFamily: FONT },
      color: ["#1f6feb", "#9ec5fe", "#2f9e44", "#b2f2bb", "#e8590c"],
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      legend: { top: 0 },
      grid: { left: 48, right: 56, top: 48, bottom: 48 },
      xAxis: { type: "category", data: data.names, axisLabel: { interval: 0, rotate: data.names.length > 6 ? 30 : 0 } },
      yAxis: [
        { type: "value", name: "次 / 人次", minInterval: 1 },
        { type: "value", name: "公里", splitLine: { show: false } }
      ],
      series: [
        { name: "活动次数（已确认）", type: "bar", stack: "activities", data: data.activities, barMaxWidth: 24 },
        { name: "活动次数（待确认）", type: "bar", stack: "activities", data: data.pending, barMaxWidth: 24 },
        { name: "受益人次（已确认）", type: "bar", stack: "people", data: data.beneficiaries, barMaxWidth: 24 },
        { name: "受益人次（待确认）", type: "bar", stack: "people", data: data.pending_beneficiaries, barMaxWidth: 24 },
        { name: "行驶里程（公里）", type: "bar", yAxisIndex: 1, data: data.km, barMaxWidth: 24 }
      ]
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.echarts) {
      return;
    }
    document.querySelectorAll("[data-kpi-chart]").forEach(function (el) {
      var source = document.getElementById(el.dataset.source);
      if (!source) {
        return;
      }
      var chart = window.echarts.init(el, null, { renderer: "canvas" });
      chart.setOption(option(JSON.parse(source.textContent)));
      window.addEventListener("resize", function () { chart.resize(); });
    });
  });
})();
