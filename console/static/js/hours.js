/* 服务时长: "select all" and "select the group" checkboxes over the records' checkboxes, and
   the count of those selected on the confirm bar. */
(function () {
  "use strict";

  function records(form, group) {
    var selector = 'input[name="record_ids"]' + (group ? '[data-group="' + group + '"]' : "");
    return Array.prototype.slice.call(form.querySelectorAll(selector));
  }

  function sync(form) {
    var all = records(form);
    var chosen = all.filter(function (box) { return box.checked; }).length;
    form.querySelector("#selected-count").textContent = "已选 " + chosen + " 条";
    form.querySelector("#confirm-button").disabled = chosen === 0;
    form.querySelector("#select-all").checked = chosen > 0 && chosen === all.length;
    form.querySelectorAll('[data-select="group"]').forEach(function (box) {
      var members = records(form, box.dataset.group);
      box.checked = members.every(function (m) { return m.checked; });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("confirm-form");
    if (!form) {
      return;
    }
    form.addEventListener("change", function (event) {
      var box = event.target;
      if (box.dataset.select === "all") {
        records(form).forEach(function (r) { r.checked = box.checked; });
      } else if (box.dataset.select === "group") {
        records(form, box.dataset.group).forEach(function (r) { r.checked = box.checked; });
      }
      sync(form);
    });
    sync(form);
  });
})();
