/* ranklab ranking page: rank completions by drag (SortableJS, by the handle only) or by keyboard,
 * make ties, show server errors inline without touching the ordering. Active time: active_time.js.
 *
 * Completions are untrusted model output: this file never builds HTML from page text. It reads
 * completion ids from data-attributes and writes only textContent, attributes and node order.
 *
 * The ranking lives in the DOM: the list's card order, and data-tied="true" on a card that is
 * tied with the card above it. A group (tie) is a card plus the tied cards right below it.
 */
(function () {
  "use strict";

  function cardsOf(list) {
    return Array.prototype.filter.call(list.children, function (el) { return el.classList.contains("completion-card"); });
  }

  function readGroups(list) {
    var groups = [];
    cardsOf(list).forEach(function (card, index) {
      if (index === 0 || card.dataset.tied !== "true") groups.push([]);
      groups[groups.length - 1].push(card);
    });
    return groups;
  }

  function locate(groups, card) {
    for (var g = 0; g < groups.length; g++) {
      var i = groups[g].indexOf(card);
      if (i >= 0) return g;
    }
    return -1;
  }

  function removeCard(groups, card) {
    var g = locate(groups, card);
    groups[g].splice(groups[g].indexOf(card), 1);
    if (groups[g].length === 0) groups.splice(g, 1);
    return g;
  }

  function setupForm(form) {
    if (form.dataset.ready === "1") return;
    form.dataset.ready = "1";
    var list = form.querySelector("[data-ranking-list]");
    var field = form.querySelector("[data-ranking-field]");
    var announcer = form.querySelector("[data-announcer]");
    var grabbed = null;
    window.ranklabActiveTime.track(form);

    function announce(text) { announcer.textContent = text; }

    // Writes the groups back as node order + tie flags, then renumbers the badges.
    function apply(groups, focusCard) {
      groups.forEach(function (group) {
        group.forEach(function (card, i) {
          card.dataset.tied = i > 0 ? "true" : "false";
          list.appendChild(card);
        });
      });
      render();
      if (focusCard) {
        focusCard.focus({ preventScroll: true });
        focusCard.scrollIntoView({ block: "nearest" });
      }
    }

    function render() {
      var groups = readGroups(list);
      var cards = cardsOf(list);
      groups.forEach(function (group, g) {
        group.forEach(function (card, i) {
          var tied = i > 0;
          card.dataset.tied = tied ? "true" : "false";
          card.querySelector("[data-rank-badge]").textContent = "#" + (g + 1);
          card.querySelector("[data-tie-badge]").hidden = !tied;
          var tie = card.querySelector('[data-action="tie"]');
          tie.setAttribute("aria-pressed", tied ? "true" : "false");
          tie.disabled = cards.indexOf(card) === 0;
          card.querySelector('[data-action="up"]').disabled = g === 0 && group.length === 1;
          card.querySelector('[data-action="down"]').disabled = g === groups.length - 1 && group.length === 1;
        });
      });
      field.value = JSON.stringify(groups.map(function (group) {
        return group.map(function (card) { return Number(card.dataset.completionId); });
      }));
    }

    function placeOf(card) { return locate(readGroups(list), card) + 1; }

    function describe(card) {
      var groups = readGroups(list);
      var g = locate(groups, card);
      var text = "Completion " + card.dataset.letter + " is now number " + (g + 1) + " of " + groups.length;
      return groups[g].length > 1 ? text + ", tied with " + (groups[g].length - 1) + " other" : text;
    }

    // Moving a card makes it a group of its own; up/down step over whole groups, and a card
    // that sits in a tie steps out of it first (up: just above the tie, down: just below).
    function move(card, delta) {
      var groups = readGroups(list);
      var g = locate(groups, card);
      var inTie = groups[g].length > 1;
      removeCard(groups, card);
      var target;
      if (inTie) target = delta < 0 ? g : g + 1;
      else target = Math.max(0, Math.min(groups.length, g + delta));
      groups.splice(target, 0, [card]);
      apply(groups, card);
      announce(describe(card));
    }

    function moveToPlace(card, place) {
      var groups = readGroups(list);
      removeCard(groups, card);
      groups.splice(Math.min(place - 1, groups.length), 0, [card]);
      apply(groups, card);
      announce(describe(card));
    }

    function toggleTie(card) {
      var groups = readGroups(list);
      var g = locate(groups, card);
      if (groups[g].length > 1) {           // split it out, just below its former tie
        removeCard(groups, card);
        groups.splice(g + 1, 0, [card]);
      } else if (g > 0) {                   // merge with the group above
        groups.splice(g, 1);
        groups[g - 1].push(card);
      } else {
        announce("The top completion has nothing above it to tie with.");
        return;
      }
      apply(groups, card);
      announce(describe(card));
    }

    function toggleExpand(card) {
      var body = card.querySelector("[data-collapsible]");
      var button = card.querySelector('[data-action="expand"]');
      if (button.hidden) return;
      var expanded = body.classList.toggle("expanded");
      button.setAttribute("aria-expanded", expanded ? "true" : "false");
      button.textContent = expanded ? "Show less" : "Show more";
    }

    function setGrabbed(card) {
      if (grabbed) grabbed.classList.remove("grabbed");
      grabbed = card;
      if (card) {
        card.classList.add("grabbed");
        announce("Picked up completion " + card.dataset.letter + ". Use up and down to move it, space to drop.");
      }
    }

    list.addEventListener("keydown", function (event) {
      var card = event.target;
      if (!card.classList || !card.classList.contains("completion-card")) return; // typing in a field, a button
      var cards = cardsOf(list);
      var index = cards.indexOf(card);
      var key = event.key;
      var moving = event.shiftKey || event.altKey || grabbed === card;
      if (event.ctrlKey || event.metaKey) return;
      if (key === "ArrowUp" || key === "ArrowDown") {
        var delta = key === "ArrowUp" ? -1 : 1;
        if (moving) move(card, delta);
        else if (cards[index + delta]) cards[index + delta].focus();
      } else if (key === " " || key === "Spacebar") {
        setGrabbed(grabbed === card ? null : card);
        if (!grabbed) announce("Dropped. " + describe(card));
      } else if (key === "Escape") {
        if (grabbed) { setGrabbed(null); announce("Dropped. " + describe(card)); }
      } else if (key === "t" || key === "T" || key === "=") {
        toggleTie(card);
      } else if (key === "e" || key === "E") {
        toggleExpand(card);
      } else if (/^[1-9]$/.test(key)) {
        moveToPlace(card, Number(key));
      } else if (key === "Home" || key === "End") {
        (key === "Home" ? cards[0] : cards[cards.length - 1]).focus();
      } else {
        return;
      }
      event.preventDefault();
    });

    list.addEventListener("focusout", function (event) {
      if (grabbed && event.target === grabbed && !list.contains(event.relatedTarget)) setGrabbed(null);
    });

    list.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-action]");
      if (!button || !list.contains(button)) return;
      var card = button.closest(".completion-card");
      var action = button.dataset.action;
      if (action === "up") move(card, -1);
      else if (action === "down") move(card, 1);
      else if (action === "tie") toggleTie(card);
      else if (action === "expand") toggleExpand(card);
    });

    form.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit();
      }
    });

    // The submitted values are taken at send time, so a late change is never lost.
    form.addEventListener("htmx:configRequest", function (event) {
      if (event.detail.elt !== form) return;
      render();
      event.detail.parameters.ranking = field.value;
    });

    if (window.Sortable) {
      var before = null;
      window.Sortable.create(list, {
        handle: ".drag-handle",           // the card body scrolls on touch; only the handle drags
        draggable: ".completion-card",
        animation: 120,
        onStart: function (event) { before = readGroups(list); removeCard(before, event.item); },
        onEnd: function (event) {
          // Dropped between two cards of one tie: it joins the tie. Otherwise it is its own group.
          var card = event.item;
          var others = cardsOf(list).filter(function (c) { return c !== card; });
          var at = cardsOf(list).indexOf(card);
          var prev = others[at - 1];
          var next = others[at];
          var groups = before;
          var gPrev = prev ? locate(groups, prev) : -1;
          if (prev && next && gPrev === locate(groups, next)) groups[gPrev].splice(groups[gPrev].indexOf(next), 0, card);
          else groups.splice(gPrev + 1, 0, [card]);
          apply(groups, card);
          announce(describe(card));
        }
      });
    }

    form.querySelectorAll("[data-collapsible]").forEach(function (body) {
      if (body.scrollHeight > body.clientHeight + 4) {
        body.classList.add("clipped");
        body.parentElement.querySelector('[data-action="expand"]').hidden = false;
      }
    });

    render();
    var first = cardsOf(list)[0];
    if (first) first.focus({ preventScroll: true });
  }

  function errorSlotFor(element) {
    var form = element && element.closest ? element.closest("form") : null;
    return form && form.querySelector("[data-error-slot]");
  }

  function setupErrors() {
    // 4xx/5xx answers are shown beside the button that sent them; the cards stay as they are.
    document.body.addEventListener("htmx:beforeSwap", function (event) {
      if (event.detail.xhr.status < 400) return;
      var slot = errorSlotFor(event.detail.requestConfig && event.detail.requestConfig.elt);
      if (!slot) return;
      event.detail.shouldSwap = true;
      event.detail.isError = false;
      event.detail.target = slot;
      event.detail.swapOverride = "innerHTML";
    });
    document.body.addEventListener("htmx:sendError", function (event) {
      var slot = errorSlotFor(event.target);
      if (slot) slot.textContent = "Could not reach the server. Your ranking is kept here; try again.";
    });
    document.body.addEventListener("htmx:afterSwap", function (event) {
      var target = event.detail.target;
      if (target && target.hasAttribute("data-error-slot")) {
        // The message sits by the submit button, maybe far below the card in focus: bring it
        // into view, and offer its one way on ("Go to your next task") to the keyboard.
        target.scrollIntoView({ block: "nearest" });
        var next = target.querySelector("button, a");
        if (next) next.focus({ preventScroll: true });
        return;
      }
      if (target && target.id === "task") {
        var head = event.detail.target.querySelector(".task-head");
        if (head && head.getBoundingClientRect().top < 0) head.scrollIntoView({ block: "start" });
      }
    });
  }

  function setupPanels() {
    // Guidelines and shortcuts stay open beside the task on wide screens, folded on phones.
    if (window.matchMedia("(max-width: 800px)").matches) {
      document.querySelectorAll("details[data-open-on-wide]").forEach(function (d) { d.open = false; });
    }
  }

  setupErrors();
  setupPanels();
  window.htmx.onLoad(function (root) {
    var forms = root.matches && root.matches("[data-ranking-form]") ? [root] : [];
    Array.prototype.push.apply(forms, root.querySelectorAll ? root.querySelectorAll("[data-ranking-form]") : []);
    forms.forEach(setupForm);
  });
})();
