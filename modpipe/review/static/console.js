// The console's only script: reveal the blurred post, score bars, keyboard shortcuts.
// Keys: r reveal, 1-9 toggle a category, a allow, b block, s skip, n note, c claim next.
(function () {
  "use strict";
  function reveal() {
    var text = document.getElementById("post-text");
    if (!text) return;
    text.classList.remove("blurred");
    text.setAttribute("aria-hidden", "false");
    var button = document.getElementById("reveal");
    if (button) button.hidden = true;
  }
  function decide(action) {
    var form = document.getElementById("decision");
    if (!form) return;
    var checked = form.querySelectorAll("input[name=categories]:checked").length;
    var hint = document.getElementById("hint");
    if (action === "block" && checked === 0) {
      hint.textContent = "Block needs a category: press 1-9 to pick one.";
      return;
    }
    if (action === "allow" && checked > 0) {
      hint.textContent = "Allow takes no categories: clear them first.";
      return;
    }
    form.requestSubmit(document.getElementById(action));
  }
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("reveal");
    if (button) button.addEventListener("click", reveal);
    document.querySelectorAll(".scorebar").forEach(function (bar) {
      bar.style.width = Math.round(100 * parseFloat(bar.dataset.score || "0")) + "%";
    });
    ["allow", "block"].forEach(function (action) {
      var b = document.getElementById(action);
      if (b) b.addEventListener("click", function (e) { e.preventDefault(); decide(action); });
    });
  });
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type !== "checkbox"))) {
      if (e.key === "Escape") t.blur();
      return;
    }
    var key = e.key.toLowerCase();
    if (key === "r") { reveal(); }
    else if (key === "a") { decide("allow"); }
    else if (key === "b") { decide("block"); }
    else if (key === "s") { var s = document.getElementById("skip"); if (s) s.click(); }
    else if (key === "n") { var n = document.getElementById("note"); if (n) { e.preventDefault(); n.focus(); } }
    else if (key === "c") { var c = document.getElementById("claim"); if (c && !c.disabled) c.click(); }
    else if (/^[1-9]$/.test(key)) {
      var box = document.querySelector("input[name=categories][data-key='" + key + "']");
      if (box) box.checked = !box.checked;
    } else { return; }
    e.preventDefault();
  });
})();
