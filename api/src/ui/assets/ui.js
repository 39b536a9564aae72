// Shoal dashboard: live updates. Every page is complete without this script; it only keeps
// the page current. It follows the API's watch stream (/ui/watch, authorised by the session
// cookie) and, after changes, fetches the same page again and swaps the parts marked
// data-live, leaving forms the user may be filling in alone. When the stream breaks (the API
// restarted, the network dropped) it reconnects from the last revision it saw.
(function () {
  "use strict";
  var body = document.body;
  var src = body.getAttribute("data-watch");
  var status = document.getElementById("live");
  if (!src || !window.EventSource || !window.fetch) { return; }
  var lastId = body.getAttribute("data-revision");
  var es = null, retry = 1000, timer = null, busy = false, again = false;

  function say(text) { if (status) { status.textContent = text; } }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var fresh = doc.querySelectorAll("[data-live][id]");
    for (var i = 0; i < fresh.length; i++) {
      var old = document.getElementById(fresh[i].id);
      if (old) { old.replaceWith(document.importNode(fresh[i], true)); }
    }
    var t = doc.querySelector("title");
    if (t) { document.title = t.textContent; }
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.redirected && r.url.indexOf("/ui/login") >= 0) { location.href = r.url; return ""; }
        return r.ok ? r.text() : "";
      })
      .then(function (html) {
        if (html) {
          swap(html);
          say("Live: updated at " + new Date().toLocaleTimeString() + ".");
        }
      })
      .catch(function () { say("Live: could not refresh; retrying."); })
      .then(function () {
        busy = false;
        if (again) { again = false; schedule(); }
      });
  }

  function schedule() {
    if (timer) { return; }
    timer = setTimeout(function () { timer = null; refresh(); }, 250);
  }

  function url() {
    if (!lastId) { return src; }
    return src + (src.indexOf("?") >= 0 ? "&" : "?") + "revision=" + encodeURIComponent(lastId);
  }

  function connect() {
    es = new EventSource(url());
    var onEvent = function (e) { if (e.lastEventId) { lastId = e.lastEventId; } schedule(); };
    ["serviceStatus", "task", "taskStatus", "node", "nodeConfig"].forEach(function (k) { es.addEventListener(k, onEvent); });
    es.addEventListener("error", function (e) {
      if (e.data) {
        // The API no longer holds the changes after the revision asked for (it restarted,
        // or the page fell far behind): start over from the current state, and look again.
        lastId = null;
        es.close();
        setTimeout(function () { connect(); schedule(); }, 0);
      }
    });
    es.onopen = function () {
      if (retry > 1000) { schedule(); }
      retry = 1000;
      say("Live: connected.");
    };
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        say("Live: disconnected; reconnecting.");
        fetch(location.href, { credentials: "same-origin" }).then(function (r) {
          if (r.redirected && r.url.indexOf("/ui/login") >= 0) { location.href = r.url; }
        }).catch(function () {});
        setTimeout(function () { if (es && es.readyState === EventSource.CLOSED) { connect(); } }, retry);
        retry = Math.min(retry * 2, 10000);
      } else {
        retry = 2000;
        say("Live: reconnecting.");
      }
    };
  }

  // A page left for another keeps no stream open (the browser allows only a few connections
  // per host, and a page kept for the back button would hold one); it reconnects if shown again.
  window.addEventListener("pagehide", function () {
    if (es) { es.close(); es = null; }
  });
  window.addEventListener("pageshow", function (e) {
    if (e.persisted && !es) { connect(); schedule(); }
  });

  connect();
})();
