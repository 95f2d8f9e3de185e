// spectct fused SPECT/CT viewer page, built on NiiVue (vendored as niivue.umd.js, global `niivue`).
//
// World coordinates: NiiVue works in RAS mm (the NIfTI convention); spectct's findings are in DICOM LPS mm.
// A point (x, y, z) LPS is (-x, -y, z) RAS; the server sends both, the page shows LPS to the reader.
//
// The page state a test (or a curious user) can read: window.spectctViewer, and the #status element's
// data-state ("loading", "ready", "error"), data-volumes (loaded volume keys), data-findings (row count)
// and data-crosshair-ras (the crosshair in RAS mm after each move).
"use strict";

(function () {
  const NV = window.niivue;
  const $ = (sel) => document.querySelector(sel);
  const statusEl = $("#status");
  const state = {
    manifest: null, nv: null, ctKey: null, ctImages: {}, ctVol: null, spectVol: null, window: "bone",
    presets: {}, findings: [], selected: null, ready: false, error: null,
    timings: {}, // seconds since the script started: attached_s (WebGL up), loaded_s (volumes in), ready_s
  };

  function setStatus(kind, text) {
    statusEl.dataset.state = kind;
    statusEl.textContent = text;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (digits === undefined) digits = a >= 1000 ? 0 : a >= 10 ? 1 : 2;
    return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  }

  function windowLimits(name) {
    const [level, width] = state.presets[name];
    return [level - width / 2, level + width / 2];
  }

  function crosshairRas() {
    const nv = state.nv;
    const mm = nv.frac2mm(nv.scene.crosshairPos, 0, true);
    return [mm[0], mm[1], mm[2]];
  }

  function publishCrosshair() {
    const ras = crosshairRas();
    statusEl.dataset.crosshairRas = ras.map((v) => v.toFixed(2)).join(",");
  }

  // One GPU refresh per animation frame however many slider events arrive (big volumes refresh slowly).
  let refreshPending = false;
  function scheduleRefresh() {
    if (refreshPending) return;
    refreshPending = true;
    requestAnimationFrame(() => {
      refreshPending = false;
      state.nv.updateGLVolume();
    });
  }

  // ---- CT ----------------------------------------------------------------------------------------
  // refresh=false only sets the values (start-up batches several changes into one GPU upload)
  function applyWindow(name, refresh = true) {
    state.window = name;
    document.querySelectorAll("#window-presets button").forEach((b) => {
      b.classList.toggle("active", b.dataset.window === name);
    });
    if (!state.ctVol) return;
    const [lo, hi] = windowLimits(name);
    state.ctVol.cal_min = lo;
    state.ctVol.cal_max = hi;
    if (refresh) scheduleRefresh();
    const [level, width] = state.presets[name];
    $("#window-readout").textContent = `L ${level} / W ${width} HU`;
  }

  async function switchCt(key) {
    if (!state.ctVol || key === state.ctKey) return;
    const entry = state.manifest.volumes.find((v) => v.key === key);
    if (!entry) return;
    setStatus("loading", `loading ${entry.label}…`);
    let img = state.ctImages[key];
    if (!img) {
      const [lo, hi] = windowLimits(state.window);
      img = await NV.NVImage.loadFromUrl({
        url: entry.url, name: `${entry.key}.nii.gz`, colormap: "gray", cal_min: lo, cal_max: hi, colorbarVisible: false,
      });
      state.ctImages[key] = img;
    }
    const nv = state.nv;
    const old = state.ctVol;
    const pos = crosshairRas();
    nv.addVolume(img);
    nv.setVolume(img, 0);
    nv.removeVolume(old);
    state.ctVol = img;
    state.ctKey = key;
    applyWindow(state.window);
    nv.scene.crosshairPos = nv.mm2frac(pos);
    nv.drawScene();
    nv.createOnLocationChange();
    publishVolumes();
    setStatus("ready", `${entry.label} shown`);
  }

  // ---- SPECT -------------------------------------------------------------------------------------
  function spectMax() {
    const entry = state.manifest.volumes.find((e) => e.key === "spect");
    if (entry && entry.max > 0) return entry.max;
    const v = state.spectVol;
    return v ? Math.max(v.global_max, 1e-9) : 1;
  }

  // the SPECT colour scale [threshold, maximum] in Bq/mL from the two sliders (fractions of the volume's max)
  function spectScale() {
    const top = spectMax();
    const ceiling = (Number($("#ceiling").value) / 100) * top;
    const threshold = Math.min((Number($("#threshold").value) / 100) * top, ceiling * 0.999);
    return [threshold, ceiling];
  }

  function applySpect(refresh = true) {
    const v = state.spectVol;
    if (!v) return;
    const [threshold, ceiling] = spectScale();
    // NVImage's colormap setter recomputes cal_min/cal_max from the data: set the colour map first
    if (v.colormap !== $("#colormap").value) v.colormap = $("#colormap").value;
    v.cal_min = threshold;
    v.cal_max = ceiling;
    v.opacity = Number($("#fusion").value) / 100;
    if (refresh) scheduleRefresh();
    $("#threshold-out").textContent = fmt(threshold);
    $("#ceiling-out").textContent = fmt(ceiling);
    $("#fusion-out").textContent = `${$("#fusion").value}%`;
    $("#scale-readout").textContent = `${fmt(threshold)} – ${fmt(ceiling)}`;
  }

  // Deep links: #finding=2&layout=mpr&window=soft (layout: mpr3d, mpr, axial, coronal, sagittal, render)
  const LAYOUTS = ["mpr3d", "mpr", "axial", "coronal", "sagittal", "render"];
  function hashParams() {
    return Object.fromEntries(new URLSearchParams(window.location.hash.replace(/^#/, "")));
  }

  // ---- layout ------------------------------------------------------------------------------------
  function setLayout(name) {
    const nv = state.nv;
    document.querySelectorAll("#layouts button").forEach((b) => b.classList.toggle("active", b.dataset.layout === name));
    if (name === "mpr3d" || name === "mpr") {
      nv.opts.multiplanarShowRender = name === "mpr3d" ? NV.SHOW_RENDER.ALWAYS : NV.SHOW_RENDER.NEVER;
      nv.setSliceType(NV.SLICE_TYPE.MULTIPLANAR);
    } else {
      const types = { axial: NV.SLICE_TYPE.AXIAL, coronal: NV.SLICE_TYPE.CORONAL,
        sagittal: NV.SLICE_TYPE.SAGITTAL, render: NV.SLICE_TYPE.RENDER };
      nv.setSliceType(types[name]);
    }
  }

  // ---- findings ----------------------------------------------------------------------------------
  function where(f) {
    const parts = [f.side, f.structure].filter(Boolean);
    if (f.tissue && f.tissue !== f.structure) parts.push(`(${f.tissue})`);
    return parts.join(" ");
  }

  function fillFindings() {
    const body = $("#findings tbody");
    body.textContent = "";
    const rows = state.manifest.findings;
    if (rows === null) {
      $("#findings-note").textContent = "no readable findings.json in this study";
      return;
    }
    state.findings = rows;
    if (rows.length === 0) $("#findings-note").textContent = "the reading found no focus of uptake";
    for (const f of rows) {
      const tr = document.createElement("tr");
      tr.dataset.findingId = String(f.id);
      tr.title = f.description || "";
      const implant = f.nearest_implant
        ? `${f.nearest_implant}${f.nearest_implant_mm !== null ? ` (${fmt(f.nearest_implant_mm, 0)} mm)` : ""}`
        : "–";
      const cells = [String(f.id) + (f.kind === "tract" ? " tract" : ""), where(f), implant, fmt(f.peak_bq_ml),
        f.classification || ""];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 4) td.className = "cls-" + String(text).replace(/\s+/g, "-");
        tr.appendChild(td);
      });
      tr.addEventListener("click", () => jumpToFinding(f.id));
      body.appendChild(tr);
    }
    statusEl.dataset.findings = String(rows.length);
  }

  function jumpToFinding(id) {
    const f = state.findings.find((r) => r.id === Number(id));
    if (!f || !state.nv) return false;
    const nv = state.nv;
    nv.scene.crosshairPos = nv.mm2frac(f.peak_ras);
    nv.drawScene();
    nv.createOnLocationChange();
    state.selected = f.id;
    document.querySelectorAll("#findings tbody tr").forEach((tr) => {
      tr.classList.toggle("selected", tr.dataset.findingId === String(f.id));
    });
    const lps = f.peak_lps.map((v) => fmt(v, 1)).join(", ");
    setStatus("ready", `finding ${f.id} at LPS (${lps}) mm${f.nearest_implant ? " — " + f.nearest_implant : ""}`);
    publishCrosshair();
    return true;
  }

  // ---- readout -----------------------------------------------------------------------------------
  function onLocation(loc) {
    const ras = loc.mm;
    $("#readout-lps").textContent = `${fmt(-ras[0], 1)}, ${fmt(-ras[1], 1)}, ${fmt(ras[2], 1)}`;
    for (const item of loc.values || []) {
      const vol = state.nv.volumes.find((v) => v.id === item.id);
      if (vol && vol === state.ctVol) $("#readout-ct").textContent = `${fmt(item.value, 0)} HU`;
      if (vol && vol === state.spectVol) $("#readout-spect").textContent = `${fmt(item.value)} Bq/mL`;
    }
    publishCrosshair();
  }

  function publishVolumes() {
    statusEl.dataset.volumes = state.nv.volumes.map((v) => v.name.replace(/\.nii(\.gz)?$/, "")).join(",");
  }

  // ---- rotating MIP ------------------------------------------------------------------------------
  function setupMip() {
    const img = $("#mip");
    const btn = $("#mip-toggle");
    if (!state.manifest.rotating_mip) {
      btn.hidden = true;
      $("#mip-missing").hidden = false;
      return;
    }
    // the MP4 (seekable, with controls) when the study has one, else the GIF, which plays as a cine
    let video = state.manifest.rotating_mip_video ? $("#mip-video") : null;
    let el = video || img;
    if (video) {
      video.addEventListener("error", () => { // a browser without H.264 falls back to the GIF
        video.hidden = true;
        video = null;
        el = img;
        img.src = state.manifest.rotating_mip;
        img.hidden = false;
      });
    }
    btn.addEventListener("click", () => {
      const show = el.hidden;
      if (show && !el.src) el.src = video ? state.manifest.rotating_mip_video : state.manifest.rotating_mip;
      el.hidden = !show;
      if (video) (show ? video.play() : video.pause())?.catch?.(() => {});
      btn.textContent = show ? "hide" : "show";
    });
  }

  function listInto(sel, box, items) {
    if (!items || items.length === 0) return;
    $(box).hidden = false;
    for (const text of items) {
      const li = document.createElement("li");
      li.textContent = text;
      $(sel).appendChild(li);
    }
  }

  // ---- start -------------------------------------------------------------------------------------
  async function start() {
    const t0 = performance.now();
    state.timings.script_s = t0 / 1000; // from navigation start; the other timings count from here
    if (!NV || !NV.Niivue) throw new Error("NiiVue bundle did not load (/assets/niivue.umd.js)");
    const resp = await fetch("/study/manifest.json");
    if (!resp.ok) throw new Error(`manifest: HTTP ${resp.status}`);
    const m = (state.manifest = await resp.json());
    state.presets = m.window_presets;
    $("#study-name").textContent = `— ${m.study}`;
    listInto("#missing", "#missing-box", m.missing);
    listInto("#problems", "#problems-box", m.problems);
    fillFindings();
    setupMip();

    const byKey = Object.fromEntries(m.volumes.map((v) => [v.key, v]));
    const ctKey = byKey.ct_mar ? "ct_mar" : byKey.ct_nomar ? "ct_nomar" : null;
    document.querySelectorAll("#ct-choice input").forEach((input) => {
      input.disabled = !byKey[input.value];
      input.checked = input.value === ctKey;
      input.addEventListener("change", () => switchCt(input.value).catch(fail));
    });
    if (!byKey.spect) $("#spect-controls").classList.add("disabled");

    const nv = new NV.Niivue({
      backColor: [0, 0, 0, 1], show3Dcrosshair: true, isColorbar: true, dragAndDropEnabled: false,
      isOrientationTextVisible: true, multiplanarShowRender: NV.SHOW_RENDER.ALWAYS, crosshairWidth: 0.3, sagittalNoseLeft: true,
      isRadiologicalConvention: true, // the usual display for reading SPECT/CT: patient right on screen left
      crosshairColor: [0.2, 0.8, 1.0, 1.0],
    });
    state.nv = nv;
    await nv.attachTo("gl");
    nv.onLocationChange = onLocation;

    const list = [];
    if (ctKey) {
      const [lo, hi] = windowLimits(state.window);
      list.push({ url: byKey[ctKey].url, name: `${ctKey}.nii.gz`, colormap: "gray", cal_min: lo, cal_max: hi,
        colorbarVisible: false });
    }
    if (byKey.spect) {
      if (!ctKey) $("#fusion").value = "100";
      const [lo, hi] = spectScale();
      list.push({ url: byKey.spect.url, name: "spect.nii.gz", colormap: $("#colormap").value, cal_min: lo,
        cal_max: hi, opacity: Number($("#fusion").value) / 100, colorbarVisible: true });
    }
    setStatus("loading", `loading ${list.length} volume(s)…`);
    state.timings.attached_s = (performance.now() - t0) / 1000;
    await nv.loadVolumes(list);
    state.timings.loaded_s = (performance.now() - t0) / 1000;
    state.ctKey = ctKey;
    state.ctVol = ctKey ? nv.volumes[0] : null;
    if (state.ctVol) state.ctImages[ctKey] = state.ctVol;
    state.spectVol = byKey.spect ? nv.volumes[nv.volumes.length - 1] : null;
    // NiiVue draws the 2-D crosshair as a cylinder whose radius is crosshairWidth half-voxels: choose it so
    // that the line is about two screen pixels wide whatever the voxel size and field of view
    const hdr = nv.volumes[0].hdr;
    const pix = [1, 2, 3].map((i) => Math.abs(hdr.pixDims[i]));
    const fov = Math.max(...[1, 2, 3].map((i) => hdr.dims[i] * pix[i - 1]));
    nv.opts.crosshairWidth = Math.max(0.25, fov / (200 * Math.min(...pix)));

    $("#colormap").addEventListener("change", () => applySpect());
    ["#fusion", "#threshold", "#ceiling"].forEach((s) => $(s).addEventListener("input", () => applySpect()));
    document.querySelectorAll("#window-presets button").forEach((b) => {
      b.addEventListener("click", () => applyWindow(b.dataset.window));
    });
    document.querySelectorAll("#layouts button").forEach((b) => {
      b.addEventListener("click", () => setLayout(b.dataset.layout));
    });
    $("#radiological").checked = true; // set in the constructor's options: no second GPU upload
    $("#radiological").addEventListener("change", (e) => nv.setRadiologicalConvention(e.target.checked));
    // the volumes were loaded with these settings already: set the controls' readouts, no second upload
    applyWindow(state.window, false);
    applySpect(false);
    state.timings.refreshed_s = (performance.now() - t0) / 1000;
    setLayout(LAYOUTS.includes(hashParams().layout) ? hashParams().layout : "mpr3d");
    state.timings.layout_s = (performance.now() - t0) / 1000;
    publishVolumes();
    state.ready = true;
    state.timings.ready_s = (performance.now() - t0) / 1000;
    setStatus("ready", `${nv.volumes.length} volume(s) loaded` + (m.missing.length ? ` — missing: ${m.missing.join("; ")}` : ""));
    nv.createOnLocationChange();

    const wanted = hashParams();
    if (wanted.window && state.presets[wanted.window]) applyWindow(wanted.window);
    if (wanted.finding) {
      const row = document.querySelector(`#findings tbody tr[data-finding-id="${Number(wanted.finding)}"]`);
      if (row) row.click(); // the same path as a reader's click
    }
  }

  function fail(err) {
    state.error = String(err && err.message ? err.message : err);
    setStatus("error", `viewer error: ${state.error}`);
    console.error(err);
  }

  window.spectctViewer = {
    state, jumpToFinding, crosshairRas: () => (state.nv ? crosshairRas() : null), switchCt, applyWindow, setLayout,
  };
  window.addEventListener("hashchange", () => {
    const wanted = hashParams();
    if (wanted.finding && state.ready) jumpToFinding(wanted.finding);
  });
  start().catch(fail);
})();
