// fleetboot web panel: live updates for the host page's timeline and the
// events page. Progressive enhancement: without this script both pages work
// (the host page reloads itself while a machine boots, the events page on
// request). The server renders every fragment it sends (html/template), so
// what arrives here is inserted as is; nothing is built from event data.
(function () {
  'use strict';
  if (!window.EventSource) {
    return;
  }
  var updates = 0;
  function updated() {
    updates++;
    document.body.dataset.liveUpdates = String(updates);
  }
  function follow(el, handlers) {
    var status = document.getElementById('live-status');
    var es = new EventSource(el.dataset.stream);
    es.onopen = function () {
      if (status) { status.textContent = '● live'; }
      document.body.dataset.live = 'open';
    };
    es.onerror = function () {
      // The browser reconnects by itself (the stream says after how long).
      if (status) { status.textContent = '○ reconnecting…'; }
      document.body.dataset.live = 'reconnecting';
    };
    Object.keys(handlers).forEach(function (name) {
      es.addEventListener(name, handlers[name]);
    });
    window.addEventListener('pagehide', function () { es.close(); });
  }

  var tl = document.getElementById('timeline');
  if (tl && tl.dataset.stream) {
    follow(tl, {
      timeline: function (e) {
        // Keep the tables the reader opened open.
        var open = Array.prototype.map.call(tl.querySelectorAll('details'), function (d) { return d.open; });
        tl.innerHTML = e.data;
        Array.prototype.forEach.call(tl.querySelectorAll('details'), function (d, i) { d.open = !!open[i]; });
        updated();
      }
    });
  }

  var rows = document.getElementById('events');
  if (rows && rows.dataset.stream) {
    var keep = parseInt(rows.dataset.keep, 10) || 100;
    follow(rows, {
      event: function (e) {
        rows.insertAdjacentHTML('afterbegin', e.data);
        while (rows.rows.length > keep) {
          rows.deleteRow(-1);
        }
        updated();
      }
    });
  }
})();
