// The composer's one piece of behaviour the markup can't declare: after "Replace with GSM equivalents"
// swaps in the corrected textarea, put the cursor back in it (at the end) so typing can go on.
// Typing itself never swaps the textarea (only #counts), so focus and caret stay where they are.
(function () {
  "use strict";
  var refocus = false;

  document.addEventListener("click", function (event) {
    if (event.target instanceof Element && event.target.closest("#replace-gsm")) refocus = true;
  });

  document.addEventListener("htmx:after:settle", function () {
    if (!refocus) return;
    var body = document.getElementById("body");
    if (!body) return;
    refocus = false;
    body.focus();
    body.setSelectionRange(body.value.length, body.value.length);
  });
})();
