/* ranklab demonstration and review forms (templates/labeling/_demonstration*.html): write the
 * assistant's answer, start from the model draft, word count, keyboard (W write, D draft,
 * P preview, Esc leaves a text box, Ctrl+Enter submits; review: A accept, E edit, R reject).
 * Active time is active_time.js's; inline errors and the panels are ranking.js's.
 *
 * Texts are untrusted: this file never reads or builds HTML. It copies a textarea's `.value` into
 * another, counts words, checks radios and moves focus. The preview's HTML comes from the server's
 * markdown renderer (htmx, hx-post on the answer box), which escapes raw HTML.
 */
(function () {
  "use strict";

  function currentForm() { return document.querySelector("[data-demonstration-form], [data-review-form]"); }

  function isTyping(el) {
    if (!el || !el.tagName) return false;
    if (el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable) return true;
    return el.tagName === "INPUT" && !/^(radio|checkbox|button|submit|reset)$/i.test(el.type);
  }

  function words(text) {
    var trimmed = text.trim();
    return trimmed ? trimmed.split(/\s+/).length : 0;
  }

  function setText(box, text) {
    box.value = text;
    box.dispatchEvent(new Event("input", { bubbles: true })); // word count and preview follow
  }

  function setupForm(form) {
    if (form.dataset.ready === "1") return;
    form.dataset.ready = "1";
    window.ranklabActiveTime.track(form); // active time, sent as time_spent_ms (active_time.js)

    var box = form.querySelector("[data-response]");
    var counter = form.querySelector("[data-word-count]");
    box.addEventListener("input", function () {
      var n = words(box.value);
      counter.textContent = n + (n === 1 ? " word" : " words");
    });

    var source = form.querySelector("[data-draft-source]");
    var useDraft = form.querySelector("[data-use-draft]");
    if (useDraft) {
      useDraft.addEventListener("click", function () { startFromDraft(form); });
    }
    form.querySelectorAll("input[name=decision]").forEach(function (radio) {
      radio.addEventListener("change", function () { decisionChanged(form); });
    });

    var question = form.querySelector("[data-question]");
    if (question) question.focus({ preventScroll: true });
    return source;
  }

  function startFromDraft(form) {
    var box = form.querySelector("[data-response]");
    var source = form.querySelector("[data-draft-source]");
    if (!source) return;
    if (box.value.trim() && box.value !== source.value &&
        !window.confirm("Replace what you wrote with the model draft?")) return;
    form.querySelector("[data-from-draft]").value = "1"; // the server measures the edit distance
    setText(box, source.value);
    box.focus();
    box.setSelectionRange(0, 0);
  }

  function decisionChanged(form) {
    var chosen = form.querySelector("input[name=decision]:checked");
    var editing = chosen && chosen.value === "edit";
    var area = form.querySelector("[data-edit-area]");
    var box = form.querySelector("[data-response]");
    area.hidden = !editing;
    box.disabled = !editing; // a disabled box is not sent: "accept" and "reject" carry no edit
    box.required = editing;
    form.querySelector("[data-reason]").required = !!chosen && chosen.value === "reject";
    if (editing && !box.value) setText(box, form.querySelector("[data-draft-source]").value);
  }

  function pick(form, key) {
    var radio = form.querySelector('input[data-decision-key="' + key + '"]');
    if (!radio) return false;
    radio.checked = true;
    decisionChanged(form);
    if (key === "e") form.querySelector("[data-response]").focus();
    else if (key === "r") form.querySelector("[data-reason]").focus();
    else radio.focus({ preventScroll: true });
    return true;
  }

  document.addEventListener("keydown", function (event) {
    var form = currentForm();
    if (!form || event.defaultPrevented) return;
    var target = event.target;
    // Only on the task itself: the skip box, the panels and the top bar keep their keys.
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
        form.querySelector("[data-question]").focus();
      }
      return;
    }
    var key = (event.key || "").toLowerCase();
    var handled = true;
    if (form.hasAttribute("data-review-form")) {
      handled = pick(form, key);
    } else if (key === "w") {
      form.querySelector("[data-response]").focus();
    } else if (key === "d" && form.querySelector("[data-use-draft]")) {
      var draft = form.querySelector("[data-draft]");
      if (draft) draft.open = true;
      startFromDraft(form);
    } else if (key === "p") {
      var preview = form.querySelector("[data-preview]");
      preview.open = !preview.open;
    } else {
      handled = false;
    }
    if (handled) event.preventDefault();
  });

  window.htmx.onLoad(function (root) {
    var selector = "[data-demonstration-form], [data-review-form]";
    var forms = root.matches && root.matches(selector) ? [root] : [];
    Array.prototype.push.apply(forms, root.querySelectorAll ? root.querySelectorAll(selector) : []);
    forms.forEach(setupForm);
  });
})();
