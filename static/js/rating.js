/* ranklab rating forms (templates/labeling/_likert.html, _good_bad.html, _multi_aspect.html) by
 * keyboard, and the critique key of every form (the ranking and pairwise pages included).
 *
 * A rating form is a list of rows (fieldset[data-row]), each a radio group: a completion's Likert
 * scale, its good/bad pair, or one aspect of it (a rating, or a place among the completions, the
 * same place a tie: digits give places as ranking.js's digits move a card to one). A radio's
 * data-key is the key that chooses it ("1".."9", "g", "b"). The key chooses in the row in focus
 * and moves focus to the next row, so a task is answered by typing one key per row; arrows move
 * the choice (left/right) or the row (up/down); C opens the row's completion's critique box;
 * Enter submits (Ctrl+Enter from a text box). Without this file the radios still work and submit.
 * Active time: active_time.js; inline server errors and the side panels: ranking.js.
 *
 * Completions are untrusted model output: this file never builds or reads HTML. It checks
 * radios, moves focus, opens <details> and writes textContent (our own words, and legends).
 */
(function () {
  "use strict";

  function isTyping(el) {
    if (!el || !el.tagName) return false;
    if (el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable) return true;
    return el.tagName === "INPUT" && !/^(radio|checkbox|button|submit|reset)$/i.test(el.type);
  }

  function inForm(form, target) {
    return target === document.body || target === document.documentElement || form.contains(target);
  }

  // ---- the critique boxes (every form) -------------------------------------------------------

  function openCritique(holder) {
    var box = holder && holder.querySelector("[data-critique]");
    if (!box) return false;
    box.open = true;
    var text = box.querySelector("[data-critique-text]");
    text.focus();
    text.scrollIntoView({ block: "nearest" });
    return true;
  }

  // ---- rating forms -------------------------------------------------------------------------

  function rowsOf(form) { return Array.prototype.slice.call(form.querySelectorAll("[data-row]")); }
  function radiosOf(row) { return Array.prototype.slice.call(row.querySelectorAll("input[type=radio]")); }
  function checkedOf(row) { return row.querySelector("input[type=radio]:checked"); }
  function legendOf(row) { return (row.querySelector("legend") || row).textContent.replace(/\s+/g, " ").trim(); }

  // Focus goes to the row's chosen radio, or to the row itself when nothing is chosen yet: an
  // unanswered row never shows a choice as if made (no anchoring on the first point).
  function focusRow(row) {
    var target = checkedOf(row) || row;
    target.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
  }

  function currentRow(form) {
    var active = document.activeElement;
    var row = active && active.closest ? active.closest("[data-row]") : null;
    if (row && form.contains(row)) return row;
    var rows = rowsOf(form);
    var card = active && active.closest ? active.closest(".rating-card") : null;
    if (card && form.contains(card)) rows = Array.prototype.slice.call(card.querySelectorAll("[data-row]"));
    return rows.filter(function (r) { return !checkedOf(r); })[0] || rows[0] || null;
  }

  function announce(form, text) {
    var slot = form.querySelector("[data-announcer]");
    if (slot) slot.textContent = text;
  }

  function clearError(form) {
    var slot = form.querySelector("[data-error-slot]");
    if (slot && slot.textContent) slot.textContent = "";
  }

  // After a row is answered: the next row, else the first one still open, else the submit button.
  function advance(form, row) {
    var rows = rowsOf(form);
    var next = rows[rows.indexOf(row) + 1] || rows.filter(function (r) { return !checkedOf(r); })[0];
    if (next) {
      focusRow(next);
      return;
    }
    var button = form.querySelector("[data-submit]");
    button.focus({ preventScroll: true });
    button.scrollIntoView({ block: "nearest" });
    announce(form, "All answered. Enter submits.");
  }

  function choose(form, row, radio) {
    radio.checked = true;
    radio.dispatchEvent(new Event("change", { bubbles: true }));
    clearError(form);
    announce(form, legendOf(row) + ": " + radio.parentElement.textContent.replace(/\s+/g, " ").trim());
  }

  function step(form, row, delta) {
    var radios = radiosOf(row);
    var at = radios.indexOf(checkedOf(row));
    var to = at < 0 ? (delta > 0 ? 0 : radios.length - 1) : Math.max(0, Math.min(radios.length - 1, at + delta));
    choose(form, row, radios[to]);
    radios[to].focus({ preventScroll: true });
  }

  function moveRow(form, row, delta) {
    var rows = rowsOf(form);
    var next = rows[rows.indexOf(row) + delta];
    if (next) focusRow(next);
  }

  // Submits when every row is answered; otherwise says which is not and goes there.
  function trySubmit(form) {
    var open = rowsOf(form).filter(function (r) { return !checkedOf(r); })[0];
    if (!open) {
      form.requestSubmit();
      return;
    }
    var slot = form.querySelector("[data-error-slot]");
    slot.textContent = "Please answer every completion first. Missing: " + legendOf(open) + ".";
    focusRow(open);
  }

  function onRatingKey(form, event) {
    var target = event.target;
    var key = event.key || "";
    if (key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      trySubmit(form);
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (isTyping(target)) {
      if (key === "Escape") {      // out of a critique or the comment: back to that completion's rows
        var card = target.closest(".rating-card");
        var back = card ? card.querySelector("[data-row]") : currentRow(form);
        event.preventDefault();
        if (back) focusRow(back);
      }
      return;
    }
    var lower = key.toLowerCase();
    if (key === "Enter") {
      if (/^(BUTTON|A|SUMMARY)$/.test(target.tagName)) return; // they act on Enter themselves
      event.preventDefault();
      trySubmit(form);
      return;
    }
    var row = currentRow(form);
    if (!row) return;
    var inRow = row.contains(target);
    if (lower === "c") {
      event.preventDefault();
      openCritique(row.closest(".rating-card"));
    } else if (/^[1-9gb]$/.test(lower)) {
      var radio = row.querySelector('input[data-key="' + lower + '"]');
      if (!radio) {
        var keys = radiosOf(row).map(function (r) { return r.dataset.key.toUpperCase(); });
        announce(form, legendOf(row) + " takes " + keys[0] + " to " + keys[keys.length - 1] + ".");
        return;
      }
      event.preventDefault();
      choose(form, row, radio);
      advance(form, row);
    } else if (inRow && (key === "ArrowLeft" || key === "ArrowRight")) {
      event.preventDefault();            // the native radio group wraps around from last to first
      step(form, row, key === "ArrowLeft" ? -1 : 1);
    } else if (inRow && (key === "ArrowUp" || key === "ArrowDown")) {
      event.preventDefault();
      moveRow(form, row, key === "ArrowUp" ? -1 : 1);
    }
  }

  // Multi-aspect: each ranked aspect's places read as an order, best first ("A = B > C").
  function showOrders(form) {
    form.querySelectorAll("[data-order-of]").forEach(function (slot) {
      var byPlace = {};
      var unplaced = [];
      form.querySelectorAll('[data-row][data-aspect="' + slot.dataset.orderOf + '"]').forEach(function (row) {
        var letter = row.closest(".rating-card").dataset.letter;
        var chosen = checkedOf(row);
        if (chosen) (byPlace[chosen.value] = byPlace[chosen.value] || []).push(letter);
        else unplaced.push(letter);
      });
      var places = Object.keys(byPlace).sort(function (x, y) { return Number(x) - Number(y); });
      var order = places.map(function (place) { return byPlace[place].join(" = "); }).join(" > ");
      if (!order) order = "none placed yet";
      else if (unplaced.length) order += " (not placed: " + unplaced.join(", ") + ")";
      slot.textContent = order;
    });
  }

  function setupRatingForm(form) {
    if (form.dataset.ready === "1") return;
    form.dataset.ready = "1";
    window.ranklabActiveTime.track(form);
    form.addEventListener("change", function () { clearError(form); showOrders(form); });
    showOrders(form);
    var first = rowsOf(form)[0];
    if (first) first.focus({ preventScroll: true });
  }

  // ---- the ranking and pairwise pages' critique key ---------------------------------------------

  function onRankingKey(form, event) {
    var target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target.matches && target.matches("[data-critique-text]") && event.key === "Escape") {
      event.preventDefault();
      target.closest(".completion-card").focus();
    } else if ((event.key === "c" || event.key === "C") && target.classList.contains("completion-card")) {
      event.preventDefault();
      openCritique(target);
    }
  }

  function onPairwiseKey(form, event) {
    var target = event.target;
    if (event.key !== "c" && event.key !== "C") return;
    if (event.ctrlKey || event.metaKey || event.altKey || isTyping(target) || !inForm(form, target)) return;
    var sides = form.querySelectorAll(".response-card");
    var here = target.closest ? target.closest(".response-card") : null;
    event.preventDefault();
    openCritique(event.shiftKey ? sides[1] : here || sides[0]);
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented) return;
    var target = event.target;
    var rating = document.querySelector("form[data-rating-form]");
    if (rating && inForm(rating, target)) { onRatingKey(rating, event); return; }
    var ranking = document.querySelector("form[data-ranking-form]");
    if (ranking && ranking.contains(target)) { onRankingKey(ranking, event); return; }
    var pairwise = document.querySelector("form[data-pairwise-form]");
    if (pairwise) onPairwiseKey(pairwise, event);
  });

  window.htmx.onLoad(function (root) {
    var forms = root.matches && root.matches("[data-rating-form]") ? [root] : [];
    Array.prototype.push.apply(forms, root.querySelectorAll ? root.querySelectorAll("[data-rating-form]") : []);
    forms.forEach(setupRatingForm);
  });
})();
