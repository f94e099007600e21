// Live updates keep the reader's place (issue 14). A live region (an element with sse-swap)
// is replaced whole when its SSE event comes (htmx-ext-sse, outerHTML); around that swap:
//
// - keyboard focus, text selection, which <details> are open and how far a box that scrolls
//   by itself (a stack trace, the log lines, a JSON value) is scrolled are written down
//   before and put back after, on the element that stands for the same thing
//   (same id; else the same place in the same row, rows known by their data-key; else the
//   same place in the region);
// - a swap that would land while the mouse is down in the region (a selection being drawn)
//   waits for the button to come up;
// - in a list marked data-keep-place (the queue's job rows), rows that are new and would
//   appear above what the reader looks at are not pushed in: they stay hidden, the rows in
//   view stay where they were on the screen, and a "N new — show" button says so and shows
//   them.
(function () {
  "use strict";
  var pending = {};   // region id -> state written down before its swap
  var held = {};      // region id -> {row key: true}: new rows kept out of view
  var deferred = {};  // region id -> the SSE message that came while the mouse was down
  var mouseDownIn = null;
  // Boxes that scroll by themselves inside live regions.
  var SCROLLERS = "pre, .jv, .log-lines, .table-scroll";

  // --- where things are -------------------------------------------------------------------
  function rowOf(node, region) {
    var el = node.nodeType === 1 ? node : node.parentElement;
    var row = el && el.closest("[data-key],[data-of]");
    return row && region.contains(row) ? row : null;
  }
  function rowKey(row) { return row.getAttribute("data-key") || ("of:" + row.getAttribute("data-of")); }
  function findRow(region, key) {
    var attr = key.indexOf("of:") === 0 ? "data-of" : "data-key";
    var value = attr === "data-of" ? key.slice(3) : key;
    var rows = region.querySelectorAll("[" + attr + "]");
    for (var i = 0; i < rows.length; i++) if (rows[i].getAttribute(attr) === value) return rows[i];
    return null;
  }
  // A node's path of child indexes from `base`, and back.
  function pathOf(node, base) {
    var path = [];
    for (var n = node; n && n !== base; n = n.parentNode) {
      path.unshift(Array.prototype.indexOf.call(n.parentNode.childNodes, n));
    }
    return path;
  }
  function nodeAt(base, path) {
    var n = base;
    for (var i = 0; n && i < path.length; i++) n = n.childNodes[path[i]];
    return n || null;
  }
  // A place in the region: {id} when the element has one; else {row, path} or {path}.
  function placeOf(node, region) {
    if (node.nodeType === 1 && node.id) return {id: node.id};
    var row = rowOf(node, region);
    return row ? {row: rowKey(row), path: pathOf(node, row)} : {path: pathOf(node, region)};
  }
  function nodeFor(place, region) {
    if (place.id) return document.getElementById(place.id);
    if (place.row) {
      var row = findRow(region, place.row);
      return row ? nodeAt(row, place.path) : null;
    }
    return nodeAt(region, place.path);
  }

  // --- before and after a swap --------------------------------------------------------------
  function writeDown(region) {
    var state = {focus: null, selection: null, details: [], scrolled: [], rows: null};
    var active = document.activeElement;
    if (active && active !== region && region.contains(active)) {
      var focusRow = rowOf(active, region);
      state.focus = {place: placeOf(active, region),
                     index: focusRow ? Array.prototype.indexOf.call(region.children, focusRow) : -1};
    }
    var sel = window.getSelection();
    if (sel && sel.rangeCount && !sel.isCollapsed && region.contains(sel.anchorNode)
        && region.contains(sel.focusNode)) {
      state.selection = {anchor: placeOf(sel.anchorNode, region), anchorOffset: sel.anchorOffset,
                         focus: placeOf(sel.focusNode, region), focusOffset: sel.focusOffset,
                         text: sel.toString()};
    }
    var all = region.querySelectorAll("details");
    for (var i = 0; i < all.length; i++) {
      var d = all[i];
      if (d.hasAttribute("hx-preserve")) continue; // htmx keeps that very element
      var row = rowOf(d, region);
      var inRow = row ? Array.prototype.indexOf.call(row.querySelectorAll("details"), d) : -1;
      state.details.push({id: d.id || null, row: row ? rowKey(row) : null, inRow: inRow,
                          index: i, open: d.open});
    }
    var boxes = region.querySelectorAll(SCROLLERS);
    for (var b = 0; b < boxes.length; b++) {
      if (boxes[b].scrollTop || boxes[b].scrollLeft) {
        state.scrolled.push({place: placeOf(boxes[b], region), top: boxes[b].scrollTop,
                             left: boxes[b].scrollLeft});
      }
    }
    if (region.hasAttribute("data-keep-place")) state.rows = rowsInView(region);
    return state;
  }

  function putBack(region, state) {
    var all = region.querySelectorAll("details");
    state.details.forEach(function (s) {
      var d = null;
      if (s.id) d = document.getElementById(s.id);
      else if (s.row) {
        var row = findRow(region, s.row);
        d = row ? row.querySelectorAll("details")[s.inRow] : null;
      } else d = all[s.index];
      if (d && region.contains(d) && d.open !== s.open) d.open = s.open;
    });
    state.scrolled.forEach(function (s) {
      var box = nodeFor(s.place, region);
      if (box && box.nodeType === 1 && region.contains(box)) {
        box.scrollTop = s.top;
        box.scrollLeft = s.left;
      }
    });
    if (state.rows) keepRows(region, state.rows);
    if (state.focus && (!document.activeElement || document.activeElement === document.body
                        || !document.contains(document.activeElement))) {
      var target = nodeFor(state.focus.place, region);
      if (!target && state.focus.index >= 0) { // its row is gone: the row now in its place
        var near = region.children[Math.min(state.focus.index, region.children.length - 1)];
        target = near && near.querySelector("a[href], button, input, summary");
      }
      if (target && target.focus) target.focus({preventScroll: true});
    }
    if (state.selection) {
      var a = nodeFor(state.selection.anchor, region), f = nodeFor(state.selection.focus, region);
      try {
        if (a && f) {
          window.getSelection().setBaseAndExtent(a, state.selection.anchorOffset,
                                                 f, state.selection.focusOffset);
        }
      } catch (e) { /* the text changed under it: let the selection go */ }
    }
  }

  // --- rows that would appear above the reader ------------------------------------------------
  function topLimit(region) {
    var limit = 0;
    var bar = document.querySelector(".topbar");
    if (bar && getComputedStyle(bar).position === "sticky") limit = bar.getBoundingClientRect().bottom;
    var table = region.closest("table");
    var head = table && table.tHead;
    if (head) limit = Math.max(limit, head.getBoundingClientRect().bottom);
    return limit;
  }
  function jobRows(region) { return Array.prototype.slice.call(region.querySelectorAll("tr[data-key]")); }

  function rowsInView(region) {
    var rows = jobRows(region), limit = topLimit(region), shown = [];
    rows.forEach(function (r) { if (!r.hidden) shown.push(r); });
    var known = {};
    rows.forEach(function (r) { known[r.getAttribute("data-key")] = true; });
    var first = shown[0];
    // At the top of the list (its first row in full view): new rows come in, as before.
    if (!first || first.getBoundingClientRect().top >= limit - 1) return {known: known, anchor: null};
    var after = [];
    var anchor = null;
    for (var i = 0; i < shown.length; i++) {
      if (!anchor && shown[i].getBoundingClientRect().bottom > limit) anchor = shown[i];
      if (anchor) after.push(shown[i].getAttribute("data-key"));
    }
    if (!anchor) return {known: known, anchor: null};
    return {known: known, anchor: after, top: anchor.getBoundingClientRect().top};
  }

  function keepRows(region, before) {
    var id = region.id, kept = held[id] || (held[id] = {});
    var rows = jobRows(region);
    var anchor = null;
    if (before.anchor) { // the first row that was in view and still is in the list
      for (var i = 0; i < before.anchor.length && !anchor; i++) anchor = findRow(region, before.anchor[i]);
    }
    var keys = {};
    rows.forEach(function (r) { keys[r.getAttribute("data-key")] = true; });
    Object.keys(kept).forEach(function (k) { if (!keys[k]) delete kept[k]; });
    var above = !!anchor;
    rows.forEach(function (r) {
      var key = r.getAttribute("data-key");
      if (r === anchor) above = false;
      if (above && !before.known[key]) kept[key] = true;
      var hide = !!kept[key];
      r.hidden = hide;
      var stack = findRow(region, "of:" + key);
      if (stack) stack.hidden = hide;
    });
    if (anchor) window.scrollBy(0, anchor.getBoundingClientRect().top - before.top);
    announce(region);
  }

  function announce(region) {
    var count = Object.keys(held[region.id] || {}).length;
    var box = region.closest(".table-scroll") || region.closest("table");
    var bar = document.getElementById(region.id + "-new");
    if (!bar && count && box) {
      bar = document.createElement("div");
      bar.id = region.id + "-new";
      bar.className = "new-rows";
      bar.setAttribute("role", "status");
      var button = document.createElement("button");
      button.type = "button";
      bar.appendChild(button);
      box.parentNode.insertBefore(bar, box);
      button.addEventListener("click", function () { showHeld(region.id); });
    }
    if (!bar) return;
    bar.hidden = !count;
    var text = count + " new — show";
    if (bar.firstChild.textContent !== text) bar.firstChild.textContent = text;
  }

  function showHeld(id) {
    var region = document.getElementById(id);
    var kept = held[id] || {};
    held[id] = {};
    if (!region) return;
    var first = null;
    jobRows(region).forEach(function (r) {
      var key = r.getAttribute("data-key");
      if (!kept[key]) return;
      r.hidden = false;
      var stack = findRow(region, "of:" + key);
      if (stack) stack.hidden = false;
      if (!first) first = r;
    });
    announce(region);
    var table = region.closest("table");
    if (table) table.scrollIntoView({block: "start"});
    var link = first && first.querySelector("a[href]");
    if (link) link.focus({preventScroll: true});
  }

  // --- wiring --------------------------------------------------------------------------------
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var region = event.target;
    if (!region || !region.id) return;
    if (mouseDownIn && region.contains(mouseDownIn)) { // a selection is being drawn: later
      deferred[region.id] = event.detail;
      event.preventDefault();
      return;
    }
    pending[region.id] = writeDown(region);
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var region = event.target;
    if (!region || !region.id || !pending[region.id]) return;
    var state = pending[region.id];
    delete pending[region.id];
    putBack(region, state);
  });
  document.addEventListener("mousedown", function (event) { mouseDownIn = event.target; }, true);
  function flushDeferred() {
    mouseDownIn = null;
    Object.keys(deferred).forEach(function (id) {
      var message = deferred[id];
      delete deferred[id];
      var region = document.getElementById(id);
      if (!region || !window.htmx) return;
      pending[id] = writeDown(region);
      window.htmx.swap(region, message.data, {swapStyle: "outerHTML"});
    });
  }
  document.addEventListener("mouseup", flushDeferred, true);
  window.addEventListener("blur", flushDeferred); // the button came up outside the window
})();
