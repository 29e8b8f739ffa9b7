// actorflow ui: live updates over server-sent events; no framework, no build step.
"use strict";
(function () {
  // The access token came in the link; the cookie carries it now, so drop it from the
  // address bar (and from the history).
  var url = new URL(location.href);
  if (url.searchParams.has("token")) {
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }

  // A section someone is typing in is left alone until they are done with it.
  function editing(section) {
    var active = document.activeElement;
    if (active && section.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) {
      return true;
    }
    var fields = section.querySelectorAll("textarea, input[type=text]");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value !== fields[i].defaultValue) return true;
    }
    return false;
  }

  var pending = false;
  var refreshes = 0;
  function refresh() {
    fetch(location.href, { credentials: "same-origin" })
      .then(function (response) { return response.text(); })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html");
        pending = false;
        fresh.querySelectorAll("[data-live][id]").forEach(function (next) {
          var old = document.getElementById(next.id);
          if (!old) return;
          if (editing(old)) { pending = true; return; }
          var opened = Array.prototype.map.call(
            old.querySelectorAll("form details[open]"),
            function (d) { return d.closest("form").dataset.form; });
          old.replaceWith(next);
          opened.forEach(function (key) {
            next.querySelectorAll("form").forEach(function (form) {
              var details = form.querySelector("details");
              if (form.dataset.form === key && details) details.open = true;
            });
          });
        });
        refreshes += 1;
        document.body.dataset.refreshes = String(refreshes);
      })
      .catch(function () { pending = true; });
  }
  document.addEventListener("focusout", function () { if (pending) setTimeout(refresh, 0); });

  var live = document.getElementById("live");
  var source = new EventSource(document.body.dataset.events);
  source.addEventListener("open", function () { if (live) live.className = "live on"; });
  source.addEventListener("error", function () { if (live) live.className = "live off"; });
  source.addEventListener("change", refresh);
})();
