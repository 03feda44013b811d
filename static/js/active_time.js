/* ranklab active time, shared by every labeling form (ranking.js, pairwise.js, the demonstration
 * page): the time a labeler spent on a task while the page was visible and they had touched it in
 * the last minute. A tab left open over lunch does not count.
 *
 * Usage: `var timer = window.ranklabActiveTime.track(form)` once per form. It keeps the form's
 * [data-time-field] (if any) up to date every second, sends `time_spent_ms` with the form's htmx
 * request, and stops when the form leaves the page. timer.ms() reads the count.
 */
(function () {
  "use strict";

  var ACTIVE_WINDOW_MS = 60000; // time counts as active for a minute after the last input
  var MAX_TICK_MS = 2000; // a throttled background tick never adds more than this
  var lastInput = Date.now();
  ["keydown", "pointerdown", "pointermove", "wheel", "touchstart", "scroll"].forEach(function (type) {
    document.addEventListener(type, function () { lastInput = Date.now(); }, { passive: true, capture: true });
  });

  function track(form) {
    var timeField = form.querySelector("[data-time-field]");
    var activeMs = 0;
    var lastTick = Date.now();
    var timer = window.setInterval(function () {
      if (!document.body.contains(form)) { window.clearInterval(timer); return; }
      var now = Date.now();
      if (document.visibilityState === "visible" && now - lastInput < ACTIVE_WINDOW_MS) {
        activeMs += Math.min(now - lastTick, MAX_TICK_MS);
      }
      lastTick = now;
      if (timeField) timeField.value = String(activeMs);
    }, 1000);

    // Taken at send time, so the last second before the submit is not lost.
    form.addEventListener("htmx:configRequest", function (event) {
      if (event.detail.elt !== form) return;
      event.detail.parameters.time_spent_ms = String(activeMs);
    });

    return { ms: function () { return activeMs; } };
  }

  window.ranklabActiveTime = { track: track };
})();
