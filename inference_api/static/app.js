"use strict";
// The clinicians' page: plain DOM, no framework, no network beyond this server. Text from the server is
// always set with textContent, never parsed as HTML.
(() => {
  const $ = (id) => document.getElementById(id);
  const keyInput = $("api-key"), siteSelect = $("site"), fileInput = $("file"), classify = $("classify");
  const pct = (p) => `${(100 * p).toFixed(1)}%`;

  keyInput.value = sessionStorage.getItem("fedmedclip-key") || "";

  function headers() {
    const key = keyInput.value.trim();
    return key ? { "X-API-Key": key } : {};
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function setStatus(message) { $("status").textContent = message; }

  // The server decides when a model does not deserve trust (random-init backbone, uncalibrated bundle);
  // the page shows its reason in a banner that stays above everything while that site is selected.
  const warnings = new Map();
  function showWarning(message) {
    $("clinical-warning-text").textContent = message || "";
    $("clinical-warning").hidden = !message;
  }
  function selectedSiteChanged() {
    showWarning(warnings.get(siteSelect.value));
    updateButton();
  }

  async function call(url, options) {
    const response = await fetch(url, { ...options, headers: { ...headers(), ...(options && options.headers) } });
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      throw new Error((body && body.message) || `request failed (HTTP ${response.status})`);
    }
    return body;
  }

  function updateButton() {
    classify.disabled = !(siteSelect.value && fileInput.files && fileInput.files.length);
  }

  async function loadSites() {
    showError("");
    sessionStorage.setItem("fedmedclip-key", keyInput.value.trim());
    setStatus("Loading sites…");
    try {
      const body = await call("/v1/sites");
      siteSelect.replaceChildren();
      warnings.clear();
      const ready = body.sites.filter((s) => s.ready);
      for (const site of body.sites) {
        const option = document.createElement("option");
        option.value = site.site;
        option.textContent = site.ready ? `${site.site} (${site.classes.length} classes)` : `${site.site} (no model yet)`;
        option.disabled = !site.ready;
        if (site.warning) warnings.set(site.site, site.warning);
        siteSelect.append(option);
      }
      if (ready.length) siteSelect.value = ready[0].site;
      siteSelect.disabled = body.sites.length === 0;
      showWarning(warnings.get(siteSelect.value));
      setStatus(ready.length ? `${ready.length} site(s) ready.` : "No site has a model yet.");
    } catch (error) {
      setStatus("");
      showError(error.message);
    }
    updateButton();
  }

  function bar(value, kind) {
    const outer = document.createElement("div");
    outer.className = `bar ${kind}`;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("span");
    fill.style.width = pct(value);
    track.append(fill);
    const label = document.createElement("em");
    label.textContent = pct(value);
    outer.append(track, label);
    return outer;
  }

  function render(body, file) {
    const result = body.predictions[0];
    $("predicted-class").textContent = result.predicted_class;
    $("result-site").textContent = body.site;
    $("version").textContent = body.bundle_version;
    $("fam-version").textContent = String(body.fam_version);
    showWarning(body.warning);
    $("ensemble-heading").textContent = body.calibrated ? "Ensemble (calibrated)" : "Ensemble (uncalibrated)";
    $("calibration-note").textContent = body.calibrated
      ? "Probabilities calibrated on this site's validation images."
      : "Probabilities are NOT calibrated: read them as scores, not as chances.";
    $("contrib-zero-shot").textContent = pct(result.contributions.zero_shot);
    $("contrib-head").textContent = result.head ? pct(result.contributions.head) : "no private head";
    $("split-zero-shot").style.width = pct(result.contributions.zero_shot);
    $("split-head").style.width = pct(result.contributions.head);
    const rows = body.classes
      .map((name) => ({ name, p: result.probabilities[name] }))
      .sort((a, b) => b.p - a.p)
      .map(({ name, p }) => {
        const row = document.createElement("tr");
        row.dataset.class = name;
        if (name === result.predicted_class) row.className = "top";
        const cell = (child) => { const td = document.createElement("td"); td.append(child); return td; };
        row.append(
          cell(document.createTextNode(name)),
          cell(bar(p, "en")),
          cell(bar(result.zero_shot[name], "zs")),
          cell(result.head ? bar(result.head[name], "hd") : document.createTextNode("—")),
        );
        return row;
      });
    $("probabilities").tBodies[0].replaceChildren(...rows);
    const preview = $("preview");
    if (/^image\/(png|jpeg)$/.test(file.type)) {
      if (preview.src) URL.revokeObjectURL(preview.src);
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
    } else {
      preview.hidden = true;
    }
    $("result").hidden = false;
  }

  async function predict(event) {
    event.preventDefault();
    showError("");
    const file = fileInput.files[0];
    const form = new FormData();
    form.append("files", file, file.name);
    setStatus("Classifying…");
    classify.disabled = true;
    try {
      const body = await call(`/v1/sites/${encodeURIComponent(siteSelect.value)}/predict`, { method: "POST", body: form });
      render(body, file);
      setStatus("Done.");
    } catch (error) {
      setStatus("");
      showError(error.message);
    }
    updateButton();
  }

  $("connect").addEventListener("click", loadSites);
  keyInput.addEventListener("keydown", (e) => { if (e.key === "Enter") loadSites(); });
  siteSelect.addEventListener("change", selectedSiteChanged);
  fileInput.addEventListener("change", updateButton);
  $("predict-form").addEventListener("submit", predict);
  if (keyInput.value) loadSites();
})();
