/* reconciler web page, script version 2 (vendored with the package; plain JS, no build step).
 *
 * - Times: every <time datetime> is shown relative and absolute, in the viewer's zone; a
 *   <time data-countdown> (a bake's end) is refreshed every second.
 * - Live: the page names the JSON API it shows in <body data-watch="...">. When the daemon
 *   serves an events stream (<body data-events="...">), each event triggers a check; without
 *   one, or when the stream fails, the script polls. With several replicas it also polls
 *   every data-backup-poll ms (a replica's stream carries only the events it emits). When an answer changed, the page itself
 *   is fetched again and its <main> swapped in place (one renderer: the server's templates).
 *   Requests go to this origin only.
 */
(function () {
  "use strict";
  var POLL_MS = 1500;
  var body = document.body;
  var watch = (body.getAttribute("data-watch") || "").split(" ").filter(Boolean);
  var eventsUrl = body.getAttribute("data-events");
  var kinds = (body.getAttribute("data-event-kinds") || "").split(" ").filter(Boolean);
  var backupPoll = parseInt(body.getAttribute("data-backup-poll") || "0", 10);
  var live = document.getElementById("live");
  var last = null;
  var busy = false;
  var again = false;
  var pollTimer = null;
  var relative = window.Intl && Intl.RelativeTimeFormat
    ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;
  var absolute = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
  });

  function ago(date) {
    var seconds = (date.getTime() - Date.now()) / 1000;
    var units = [["year", 31536000], ["month", 2592000], ["day", 86400], ["hour", 3600],
                 ["minute", 60], ["second", 1]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(seconds) >= units[i][1] || units[i][0] === "second") {
        var n = Math.round(seconds / units[i][1]);
        return relative ? relative.format(n, units[i][0]) : "";
      }
    }
    return "";
  }

  function times(root, selector) {
    var nodes = root.querySelectorAll(selector || "time[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      var date = new Date(node.getAttribute("datetime"));
      if (isNaN(date.getTime())) { continue; }
      var full = absolute.format(date);
      node.textContent = ago(date) + " (" + full + ")";
      node.title = full;
    }
  }

  function say(text) { if (live) { live.textContent = text; } }

  function fingerprint() {
    return Promise.all(watch.map(function (url) {
      return fetch(url, { cache: "no-store", credentials: "same-origin",
                          headers: { "Accept": "application/json" } })
        .then(function (r) {
          if (!r.ok) { throw new Error(url + ": " + r.status); }
          return r.text();
        });
    })).then(function (texts) { return texts.join("\n"); });
  }

  function swap() {
    return fetch(window.location.href, { cache: "no-store", credentials: "same-origin",
                                           headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("page: " + r.status); }
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var next = doc.getElementById("main");
        var main = document.getElementById("main");
        if (!next || !main) { return; }
        var focused = document.activeElement && main.contains(document.activeElement)
          ? document.activeElement.id : null;
        main.innerHTML = next.innerHTML;
        times(main);
        document.title = doc.title;
        if (focused) {
          var again = document.getElementById(focused);
          if (again) { again.focus(); }
        }
      });
  }

  function check() {
    if (!watch.length) { return; }
    if (busy) { again = true; return; }
    busy = true;
    fingerprint()
      .then(function (now) {
        if (now === last) { return null; }
        last = now;
        return swap().then(function () {
          say("live · updated " + absolute.format(new Date()));
        });
      })
      .catch(function () { say("live updates paused: the daemon did not answer"); })
      .then(function () {
        body.setAttribute("data-live", "ready");  // the first check is done (tests wait on it)
        busy = false;
        if (again) { again = false; check(); }
      });
  }

  function poll() {
    if (pollTimer === null) {
      pollTimer = window.setInterval(function () { if (!document.hidden) { check(); } }, POLL_MS);
    }
    body.setAttribute("data-live-mode", "polling");
    say("live (polling)");
  }

  function stream() {
    var source;
    try {
      source = new EventSource(eventsUrl);
    } catch (e) {
      poll();
      return;
    }
    source.onopen = function () {
      if (pollTimer === null) { body.setAttribute("data-live-mode", "events"); }
      say("live (events)");
    };
    source.onerror = function () {
      // CONNECTING: the browser reconnects by itself and resumes after the last event id
      // (check once meanwhile); CLOSED: the stream is refused, poll instead.
      if (source.readyState === EventSource.CLOSED) { poll(); } else { check(); }
    };
    // Each event is named by its kind (event: rollout_started ...); the page lists them all.
    // An event may be told a moment before its rows are written: check now and once more.
    var settle = null;
    function onEvent() {
      check();
      if (settle !== null) { window.clearTimeout(settle); }
      settle = window.setTimeout(function () { settle = null; check(); }, 1500);
    }
    kinds.forEach(function (name) { source.addEventListener(name, onEvent); });
    source.addEventListener("end", function () { source.close(); poll(); });  // daemon stops
    if (backupPoll > 0) {  // several replicas: this one's stream has only its own events
      window.setInterval(function () { if (!document.hidden) { check(); } }, backupPoll);
    }
  }

  times(document);
  window.setInterval(function () { times(document); }, 15000);
  // A bake's end counts down every second.
  window.setInterval(function () { times(document, "time[data-countdown]"); }, 1000);
  if (!watch.length) { body.setAttribute("data-live", "ready"); return; }
  if (eventsUrl && window.EventSource) { stream(); } else { poll(); }
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { check(); } });
  check();
})();
