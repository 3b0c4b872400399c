// The page behaviour the Content-Security-Policy allows: no inline script, no onsubmit, no eval.
// Every listener is delegated on document, so content that htmx swaps in later works the same.
(function () {
  "use strict";

  // <form data-confirm="Delete this list?">: ask before submitting. Capture phase, so a refusal also
  // stops htmx's own submit handling on the form.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm !== undefined &&
        !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  // <input type="file" data-max-bytes="…">: refuse an oversized file before uploading it; the server
  // refuses it too.
  document.addEventListener("change", function (event) {
    var input = event.target;
    if (!(input instanceof HTMLInputElement) || input.type !== "file" || !input.dataset.maxBytes) return;
    var max = Number(input.dataset.maxBytes);
    var tooLarge = input.files.length > 0 && input.files[0].size > max;
    input.setCustomValidity(tooLarge ? "The file is larger than the " + Math.round(max / 1048576) + " MB limit." : "");
    input.reportValidity();
  });

  // htmx requests that fail. base.html's htmx-config sets noSwap for 4xx and 5xx, so an error answer
  // never replaces a fragment (a whole error or login page would otherwise land inside the table);
  // the reason is shown in #request-error instead, and cleared by the next request that works.
  var DEFAULT_MESSAGES = {
    401: "Your session has ended. Reload the page to sign in again.",
    403: "You don't have permission to do that. Ask an admin of your team.",
    404: "That is no longer there. Reload the page.",
    429: "Too many requests. Wait a moment and try again.",
    503: "The service is unavailable right now. Try again in a moment."
  };

  function isWholePage(html) {
    return /^\s*<!doctype/i.test(html || "") || /<main[\s>]/i.test(html || "");
  }

  // The server's own words when it sent a short fragment (or marked one with data-error-message);
  // a fixed sentence for the status when it sent a whole page.
  function messageFor(status, html) {
    var doc = new DOMParser().parseFromString(html || "", "text/html");
    var marked = doc.querySelector("[data-error-message]");
    var text = (marked || doc.body).textContent.replace(/\s+/g, " ").trim();
    if (marked && text) return text;
    if (!isWholePage(html) && text && text.length <= 300) return text;
    return DEFAULT_MESSAGES[status] || "Something went wrong (error " + status + "). Reload the page and try again.";
  }

  function showRequestError(message) {
    var box = document.getElementById("request-error");
    if (!box) return;
    document.getElementById("request-error-text").textContent = message;
    box.hidden = false;
  }

  function hideRequestError() {
    var box = document.getElementById("request-error");
    if (box) box.hidden = true;
  }

  document.addEventListener("htmx:after:request", function (event) {
    var ctx = event.detail.ctx;
    var response = ctx && ctx.response;
    if (!response) return;
    var partial = ctx.target && ctx.target !== document.body;
    if (partial && response.raw && response.raw.redirected && isWholePage(ctx.text)) {
      // The server redirected a fragment request to a whole page (a login page once a session ends):
      // go there as a page instead of nesting it in the fragment.
      event.preventDefault();
      window.location.assign(response.raw.url);
      return;
    }
    if (response.status < 400) hideRequestError();
  });

  document.addEventListener("htmx:response:error", function (event) {
    var ctx = event.detail.ctx;
    showRequestError(messageFor(ctx.response.status, ctx.text));
  });

  // A failed request leaves the address bar where it was (hx-push-url would otherwise record it).
  document.addEventListener("htmx:before:history:update", function (event) {
    var response = event.detail.response;
    if (response && response.status >= 400) event.preventDefault();
  });

  // The request never got an answer (server down, network lost).
  document.addEventListener("htmx:error", function (event) {
    var ctx = event.detail.ctx;
    if (ctx && !ctx.response) showRequestError("Could not reach the server. Check your connection and try again.");
  });

  document.addEventListener("click", function (event) {
    if (event.target instanceof Element && event.target.closest("[data-dismiss=request-error]")) hideRequestError();
  });

  // The menu button of a phone's top bar (base.html): opens and closes the menu; Escape inside it closes
  // it and gives the focus back to the button. A <button>, so Enter and Space work as a click.
  document.addEventListener("click", function (event) {
    var toggle = event.target instanceof Element && event.target.closest(".nav-toggle");
    if (toggle) toggle.setAttribute("aria-expanded", String(toggle.getAttribute("aria-expanded") !== "true"));
  });

  document.addEventListener("keydown", function (event) {
    var toggle = document.querySelector(".nav-toggle[aria-expanded=true]");
    if (event.key !== "Escape" || !toggle || !toggle.closest("nav").contains(document.activeElement)) return;
    toggle.setAttribute("aria-expanded", "false");
    toggle.focus();
  });
})();
