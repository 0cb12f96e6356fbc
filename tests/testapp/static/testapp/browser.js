// tests/test_browser.py checks that this script ran, and the one it loads.
document.documentElement.dataset.script = "ran";
document.addEventListener("DOMContentLoaded", function () {
  document.getElementById("status").textContent = "script ran";
  var extra = document.createElement("script");
  extra.src = document.documentElement.dataset.extraScript;
  document.head.appendChild(extra);
});
