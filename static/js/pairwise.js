/* ranklab blind comparison page (templates/labeling/_pairwise.html): choose a verdict with the
 * keyboard (A, B, T, X), R goes to the reason, Enter submits; active time by active_time.js.
 * Inline errors and the side panels are ranking.js's (loaded on the same page).
 *
 * Responses are untrusted model output: this file never reads or builds HTML from page text. It
 * only checks radios, moves focus and sets a hidden field's value.
 */
(function () {
  "use strict";

  var KEYS = /^[abtx]$/;

  function currentForm() { return document.querySelector("[data-pairwise-form]"); }

  function isTyping(el) {
    if (!el || !el.tagName) return false;
    if (el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable) return true;
    return el.tagName === "INPUT" && !/^(radio|checkbox|button|submit|reset)$/i.test(el.type);
  }

  function setupForm(form) {
    if (form.dataset.ready === "1") return;
    form.dataset.ready = "1";
    window.ranklabActiveTime.track(form);

    // Focus starts on the question, not on a side: nothing is pre-selected or highlighted.
    var question = form.querySelector("[data-question]");
    if (question) question.focus({ preventScroll: true });
  }

  document.addEventListener("keydown", function (event) {
    var form = currentForm();
    if (!form || event.defaultPrevented) return;
    var target = event.target;
    // Only on the comparison itself: the skip box, the panels and the top bar keep their keys.
    if (target !== document.body && target !== document.documentElement && !form.contains(target)) return;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (isTyping(target)) {
      if (event.key === "Escape") {
        event.preventDefault();
        var question = form.querySelector("[data-question]");
        if (question) question.focus();
      }
      return;
    }
    var key = (event.key || "").toLowerCase();
    if (key === "enter") {
      if (/^(BUTTON|A|SUMMARY)$/.test(target.tagName)) return; // they act on Enter themselves
      event.preventDefault();
      form.requestSubmit();
    } else if (KEYS.test(key)) {
      var radio = form.querySelector('input[data-verdict-key="' + key + '"]');
      if (!radio) return;
      event.preventDefault();
      radio.checked = true;
      radio.focus({ preventScroll: true });
    } else if (key === "r") {
      event.preventDefault();
      form.querySelector("[data-reason]").focus();
    }
  });

  window.htmx.onLoad(function (root) {
    var forms = root.matches && root.matches("[data-pairwise-form]") ? [root] : [];
    Array.prototype.push.apply(forms, root.querySelectorAll ? root.querySelectorAll("[data-pairwise-form]") : []);
    forms.forEach(setupForm);
  });
})();
