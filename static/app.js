// mailqueue dashboard: the little the pages do in the browser besides htmx. No inline script
// (the CSP forbids it), no library; every page works without this file, only less handily.
(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js"); // app.css shows the copy buttons only when they can work

  // --- copy buttons -----------------------------------------------------------------------
  // <button class="copy" data-copy-text="..."> copies that text; data-copy-from="id" the
  // text of that element (a JSON view's text is its pretty JSON); data-copy-url="..." what
  // that URL answers (the whole payload when the page shows only its beginning).
  function status(text) {
    var live = document.getElementById("copy-status");
    if (live) { live.textContent = ""; live.textContent = text; }
  }

  function fallbackCopy(text) {
    // Without the Clipboard API (plain http off localhost): a selected, hidden textarea.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); });
    }
    return fallbackCopy(text);
  }

  function textToCopy(button) {
    var d = button.dataset;
    if (d.copyText !== undefined) return Promise.resolve(d.copyText);
    if (d.copyUrl) {
      return fetch(d.copyUrl, {credentials: "same-origin"}).then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      });
    }
    var source = d.copyFrom && document.getElementById(d.copyFrom);
    return source ? Promise.resolve(source.textContent) : Promise.reject(new Error("nothing"));
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button.copy");
    if (!button) return;
    event.preventDefault();
    var label = button.getAttribute("aria-label") || "Copy";
    var what = label.replace(/^Copy /, "");
    textToCopy(button).then(copyText).then(function () {
      button.classList.add("copied");
      button.textContent = "Copied";
      status("Copied " + what);
      window.setTimeout(function () {
        button.classList.remove("copied");
        button.textContent = "Copy";
      }, 1500);
    }, function () {
      status("Could not copy " + what);
    });
  });

  // --- keyboard: `/` or Ctrl-K (Cmd-K) to the queue filter ------------------------------
  // The page's own filter where it has one (the overview), else the sidebar's; on a phone
  // the sidebar is a closed menu: it opens.
  function typing(el) {
    if (!el) return false;
    var tag = el.tagName;
    return el.isContentEditable || tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT";
  }

  document.addEventListener("keydown", function (event) {
    var slash = event.key === "/" && !event.ctrlKey && !event.metaKey && !event.altKey;
    var ctrlK = (event.ctrlKey || event.metaKey) && !event.altKey
      && (event.key === "k" || event.key === "K");
    if (!(slash || ctrlK) || (slash && typing(document.activeElement))) return;
    var filter = document.querySelector("main [data-queue-filter]")
      || document.querySelector("[data-queue-filter]");
    if (!filter) return;
    event.preventDefault();
    var menu = filter.closest("details");
    if (menu && !menu.open) menu.open = true;
    filter.focus();
    filter.select();
  });

  // --- the sidebar's queue filter: as one types --------------------------------------------
  function filterSidebar() {
    var input = document.querySelector(".sidebar-filter input");
    var list = document.getElementById("sidebar");
    if (!input || !list) return;
    var text = input.value.trim().toLowerCase();
    list.querySelectorAll("a[href]").forEach(function (link) {
      var name = link.querySelector(".sidebar-name");
      var shown = !text || (name ? name.textContent : link.textContent).toLowerCase()
        .indexOf(text) !== -1;
      link.hidden = !shown;
    });
  }

  document.addEventListener("input", function (event) {
    if (event.target.closest && event.target.closest(".sidebar-filter")) filterSidebar();
  });
  document.addEventListener("keydown", function (event) {
    var input = event.target.closest && event.target.closest(".sidebar-filter input");
    if (input && event.key === "Escape") { input.value = ""; filterSidebar(); input.blur(); }
  });
  // The list is swapped live (new queues, new counts): filter the new one too.
  document.addEventListener("htmx:load", function (event) {
    var el = event.target;
    if (el && (el.id === "sidebar" || (el.querySelector && el.querySelector("#sidebar")))) {
      filterSidebar();
    }
  });
})();
