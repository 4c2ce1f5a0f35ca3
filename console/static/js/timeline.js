/* The plan page's timeline per caravan (console/handlers/plans.py): each block carries its
   place on the duty window in minutes (data-at from the window's start, data-span long); the
   window's length is the timeline's data-window ("07:00-19:00"). Positioned here because the
   page's content policy allows no inline style. */
(function () {
  "use strict";

  function minutes(hhmm) {
    var parts = hhmm.split(":");
    return Number(parts[0]) * 60 + Number(parts[1]);
  }

  function place() {
    var timeline = document.getElementById("plan-timeline");
    if (!timeline) {
      return;
    }
    var bounds = timeline.dataset.window.split("-");
    var length = minutes(bounds[1]) - minutes(bounds[0]);
    timeline.querySelectorAll("[data-at]").forEach(function (block) {
      block.style.left = (100 * Number(block.dataset.at) / length) + "%";
      block.style.width = (100 * Number(block.dataset.span) / length) + "%";
    });
    timeline.dataset.placed = "true";
  }

  document.addEventListener("DOMContentLoaded", place);
})();
