/* Forms that do what cannot be undone (retiring a caravan) ask first: a form with
   data-confirm="question" is sent only when the user agrees. */
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
})();
