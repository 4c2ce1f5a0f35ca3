/* The plan page's map (console/handlers/plans.py): over map.js's points (depots and the plan's
   sites), one coloured line per caravan-day and a pin per unassigned request with its reason.
   The data is the page's <script type="application/json" id="plan-map-data"> block:
   {"routes": [{id, name, color, coords, tip}], "unassigned": [{name, lng, lat, note}]}. */
(function () {
  "use strict";

  function draw() {
    var source = document.getElementById("plan-map-data");
    if (!source || !document.getElementById("plan-map")) {
      return;
    }
    var data = JSON.parse(source.textContent);
    window.ikepuMap.ready("plan-map").then(function (view) {
      view.clearRoutes();
      data.routes.forEach(function (route) { view.addRoute(route); });
      if (data.unassigned.length) {
        view.addMarks({
          id: "unassigned", name: "未排入", color: "#cf222e", legend: true,
          points: data.unassigned
        });
      }
      document.getElementById("plan-map").dataset.routes = String(data.routes.length);
    });
  }

  document.addEventListener("DOMContentLoaded", draw);
})();
