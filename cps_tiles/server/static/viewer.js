// cps-tiles viewer: pan and zoom a store's Deep Zoom tiles on a canvas. No dependencies.
//
// The view is a scale (screen pixels per image pixel) and the image point at the canvas centre.
// Each frame draws, for every Deep Zoom level from the one-tile level up to the level that
// matches the scale, the visible tiles already loaded: coarse tiles fill in at once, sharper
// ones cover them as they arrive. Missing tiles are requested from a preview level three levels
// coarser (a few cheap tiles that cover the view within a moment) and from the matching level,
// nearest the centre first; requests for tiles that left the view are cancelled.
//
// window.cpsViewer exposes the state to scripts and tests: complete (every visible tile of the
// matching level is drawn), firstTileMs and completeMs (since the last view change), setView().
"use strict";
(() => {
  const canvas = document.getElementById("view");
  const ctx = canvas.getContext("2d");
  const name = canvas.dataset.name;
  const TILE_CACHE = 1500;        // decoded tiles kept in memory
  const MAX_LOADS = 12;           // tile requests in flight
  const state = {
    info: null, scale: 1, cx: 0, cy: 0, tiles: new Map(), loads: 0, wanted: [],
    complete: false, changedAt: performance.now(), firstTileMs: null, completeMs: null, errors: 0,
  };
  window.cpsViewer = state;

  const dpr = () => window.devicePixelRatio || 1;
  const levelSize = (L) => {
    const s = 2 ** (state.info.dz_top - L);
    return [Math.ceil(state.info.width / s), Math.ceil(state.info.height / s)];
  };

  function fitScale() {
    return Math.min(canvas.width / state.info.width, canvas.height / state.info.height);
  }
  function clampView() {
    const min = Math.min(fitScale(), 1), max = 8 * dpr();
    state.scale = Math.min(max, Math.max(min, state.scale));
    state.cx = Math.min(state.info.width, Math.max(0, state.cx));
    state.cy = Math.min(state.info.height, Math.max(0, state.cy));
  }
  function viewChanged() {
    clampView();
    state.complete = false;
    state.changedAt = performance.now();
    state.firstTileMs = null;
    state.completeMs = null;
    requestDraw();
  }
  state.setView = (cx, cy, scale) => {    // image pixels at the centre; screen px per image px
    state.cx = cx; state.cy = cy; state.scale = scale * dpr();
    viewChanged();
  };
  state.fit = () => {
    state.scale = fitScale(); state.cx = state.info.width / 2; state.cy = state.info.height / 2;
    viewChanged();
  };

  // the Deep Zoom level whose resolution is at least the screen's
  function matchingLevel() {
    const s = Math.max(1, 2 ** Math.floor(Math.log2(1 / state.scale)));
    return Math.max(0, state.info.dz_top - Math.round(Math.log2(s)));
  }
  function oneTileLevel() {
    const longest = Math.max(state.info.width, state.info.height);
    return Math.max(0, state.info.dz_top - Math.ceil(Math.log2(Math.max(1, longest / state.info.tile))));
  }

  // visible tiles of level L: [col, row, x, y, w, h] with x, y, w, h in canvas pixels
  function visibleTiles(L) {
    const s = 2 ** (state.info.dz_top - L), t = state.info.tile, [lw, lh] = levelSize(L);
    const k = state.scale * s;                       // canvas pixels per level-L pixel
    const ox = canvas.width / 2 - state.cx * state.scale, oy = canvas.height / 2 - state.cy * state.scale;
    const c0 = Math.max(0, Math.floor(-ox / k / t)), c1 = Math.min(Math.ceil(lw / t), Math.ceil((canvas.width - ox) / k / t));
    const r0 = Math.max(0, Math.floor(-oy / k / t)), r1 = Math.min(Math.ceil(lh / t), Math.ceil((canvas.height - oy) / k / t));
    const out = [];
    for (let r = r0; r < r1; r++) {
      for (let c = c0; c < c1; c++) {
        const w = Math.min(t, lw - c * t), h = Math.min(t, lh - r * t);
        out.push([c, r, ox + c * t * k, oy + r * t * k, w * k, h * k]);
      }
    }
    return out;
  }

  function tileUrl(L, c, r) { return `/${encodeURIComponent(name)}_files/${L}/${c}_${r}.jpeg`; }

  function request(L, c, r) {
    const key = `${L}/${c}/${r}`;
    if (state.tiles.has(key)) return;
    const img = new Image();
    const entry = { img, ready: false, used: performance.now() };
    state.tiles.set(key, entry);
    state.loads++;
    img.onload = () => {
      entry.ready = true; state.loads--;
      if (state.firstTileMs === null) state.firstTileMs = performance.now() - state.changedAt;
      requestDraw();
    };
    // a failed tile is not asked for again in this view; the server's reason is in its log
    img.onerror = () => { entry.failed = true; state.loads--; state.errors++; requestDraw(); };
    img.src = tileUrl(L, c, r);
  }

  function evict() {
    if (state.tiles.size <= TILE_CACHE) return;
    const old = [...state.tiles.entries()].filter(([, e]) => e.ready || e.failed).sort((a, b) => a[1].used - b[1].used);
    for (const [key] of old.slice(0, state.tiles.size - TILE_CACHE)) state.tiles.delete(key);
  }

  let drawQueued = false;
  function requestDraw() {
    if (!drawQueued) { drawQueued = true; requestAnimationFrame(draw); }
  }

  function draw() {
    drawQueued = false;
    if (!state.info) return;
    ctx.fillStyle = "#1b1b1b";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    const top = matchingLevel(), now = performance.now();
    const first = Math.min(oneTileLevel(), top), preview = Math.max(first, top - 3);
    const wanted = new Set(), missing = { [preview]: [], [top]: [] };
    for (let L = first; L <= top; L++) {
      for (const [c, r, x, y, w, h] of visibleTiles(L)) {
        const key = `${L}/${c}/${r}`, e = state.tiles.get(key);
        if (L === preview || L === top) wanted.add(key);
        if (e && e.ready) {
          e.used = now;
          // whole device pixels at the edges, so neighbouring tiles meet without hairline gaps
          const x0 = Math.floor(x), y0 = Math.floor(y);
          ctx.drawImage(e.img, x0, y0, Math.ceil(x + w) - x0, Math.ceil(y + h) - y0);
        } else if ((L === preview || L === top) && !(e && e.failed)) {
          missing[L].push([c, r, Math.hypot(x + w / 2 - canvas.width / 2, y + h / 2 - canvas.height / 2)]);
        }
      }
    }
    for (const [key, e] of state.tiles) {   // cancel what the view no longer needs
      if (!e.ready && !e.failed && !wanted.has(key)) {
        e.img.onload = e.img.onerror = null;
        e.img.src = "";
        state.tiles.delete(key);
        state.loads--;
      }
    }
    for (const L of preview === top ? [top] : [preview, top]) {
      missing[L].sort((a, b) => a[2] - b[2]);
      for (const [c, r] of missing[L]) {
        if (state.loads >= MAX_LOADS) break;
        if (!state.tiles.has(`${L}/${c}/${r}`)) request(L, c, r);
      }
    }
    const done = missing[top].length === 0;
    if (done && !state.complete) { state.complete = true; state.completeMs = performance.now() - state.changedAt; }
    evict();
    drawScaleBar();
    document.getElementById("status").textContent = done ? "" : `loading ${missing[top].length} tiles`;
  }

  function drawScaleBar() {
    const um = state.info.pixel_size_um;
    if (!um) return;
    const perScreenPx = um[1] / (state.scale / dpr());  // micrometres per CSS pixel
    const target = 120 * perScreenPx;
    const p = 10 ** Math.floor(Math.log10(target));
    const nice = [5, 2, 1].map((m) => m * p).find((v) => v <= target) || p;
    const label = nice >= 1000 ? `${nice / 1000} mm` : `${+nice.toPrecision(3)} µm`;
    document.getElementById("scale").style.display = "block";
    document.getElementById("scale-label").textContent = label;
    document.getElementById("scale-line").style.width = `${nice / perScreenPx}px`;
  }

  function resize() {
    canvas.width = Math.round(canvas.clientWidth * dpr());
    canvas.height = Math.round(canvas.clientHeight * dpr());
    if (state.info) viewChanged();
  }

  // zoom by `factor` keeping the image point under canvas point (px, py) in place
  function zoomAt(factor, px, py) {
    const ix = state.cx + (px - canvas.width / 2) / state.scale, iy = state.cy + (py - canvas.height / 2) / state.scale;
    state.scale *= factor;
    clampView();
    state.cx = ix - (px - canvas.width / 2) / state.scale;
    state.cy = iy - (py - canvas.height / 2) / state.scale;
    viewChanged();
  }

  // -- input: drag, wheel, pinch, buttons, keys --------------------------------------------------
  const pointers = new Map();
  let pinch = null;
  canvas.addEventListener("pointerdown", (ev) => {
    try { canvas.setPointerCapture(ev.pointerId); } catch (err) { /* a pointer the browser no longer tracks */ }
    pointers.set(ev.pointerId, [ev.clientX * dpr(), ev.clientY * dpr()]);
    canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!pointers.has(ev.pointerId)) return;
    const prev = pointers.get(ev.pointerId), now = [ev.clientX * dpr(), ev.clientY * dpr()];
    pointers.set(ev.pointerId, now);
    if (pointers.size === 2) {
      const [a, b] = [...pointers.values()];
      const d = Math.hypot(a[0] - b[0], a[1] - b[1]);
      if (pinch) zoomAt(d / pinch, (a[0] + b[0]) / 2, (a[1] + b[1]) / 2);
      pinch = d;
    } else if (pointers.size === 1) {
      state.cx -= (now[0] - prev[0]) / state.scale;
      state.cy -= (now[1] - prev[1]) / state.scale;
      viewChanged();
    }
  });
  const release = (ev) => {
    pointers.delete(ev.pointerId);
    pinch = null;
    if (!pointers.size) canvas.classList.remove("dragging");
  };
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = canvas.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * (ev.deltaMode ? 0.05 : 0.0015)), (ev.clientX - r.left) * dpr(), (ev.clientY - r.top) * dpr());
  }, { passive: false });
  canvas.addEventListener("dblclick", (ev) => {
    const r = canvas.getBoundingClientRect();
    zoomAt(2, (ev.clientX - r.left) * dpr(), (ev.clientY - r.top) * dpr());
  });
  document.getElementById("zoom-in").onclick = () => zoomAt(2, canvas.width / 2, canvas.height / 2);
  document.getElementById("zoom-out").onclick = () => zoomAt(0.5, canvas.width / 2, canvas.height / 2);
  document.getElementById("fit").onclick = () => state.fit();
  window.addEventListener("keydown", (ev) => {
    if (ev.key === "+" || ev.key === "=") zoomAt(2, canvas.width / 2, canvas.height / 2);
    else if (ev.key === "-") zoomAt(0.5, canvas.width / 2, canvas.height / 2);
    else if (ev.key === "0") state.fit();
  });
  window.addEventListener("resize", resize);

  fetch(`/${encodeURIComponent(name)}.json`)
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`${r.status} ${r.statusText}`))))
    .then((info) => {
      state.info = info;
      resize();
      state.fit();
    })
    .catch((err) => { document.getElementById("status").textContent = `cannot load ${name}: ${err.message}`; });
})();
