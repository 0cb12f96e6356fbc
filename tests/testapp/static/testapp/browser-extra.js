// Loaded by browser.js once the page is parsed.
document.documentElement.dataset.extraScript = "ran";
