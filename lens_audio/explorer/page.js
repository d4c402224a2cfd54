// The standalone explorer page's controls (see lens_audio/explorer/page.py). Plotly is inlined above.
(function () {
  "use strict";
  const P = JSON.parse(document.getElementById("la-data").textContent);

  function decode(a) {
    const bin = atob(a.b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return { values: new Float32Array(bytes.buffer), shape: a.shape };
  }
  const A = {};
  for (const [name, value] of Object.entries(P.arrays)) A[name] = value && value.b64 !== undefined ? decode(value) : value;
  const state = { layer: P.head[0], head: P.head[1], beta: P.beta, layers: P.layers.slice() };
  const fill = (template, values) => template.replace(/\{(\w+)\}/g, (_, key) => String(values[key]));

  // ---- attention of the chosen head
  function row(layer, head) {
    const n = A.rows.shape[2];
    const start = (layer * A.rows.shape[1] + head) * n;
    return A.rows.values.subarray(start, start + n);
  }
  function clipAttention(layer, head) {
    const r = row(layer, head);
    return A.spans.map(([start, end]) => Array.from(r.subarray(start, end)));
  }
  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#x27;");
  }
  function renderTokens(layer, head) {  // as charts.tokens_html
    const r = row(layer, head);
    const values = P.groups.map(([, start, end]) => r.subarray(start, end).reduce((s, v) => s + v, 0));
    const top = Math.max(0, ...values) || 1;
    const spans = P.groups.map(([text], i) => {
      const alpha = Math.min(1, values[i] / top);
      const shown = escapeHtml(text).replace(/\n/g, "↵<br>");
      return `<span title='${values[i].toFixed(4)}' style='background: rgba(214, 39, 40, ${alpha.toFixed(3)}); padding: 1px 0; border-radius: 2px'>${shown}</span>`;
    });
    document.getElementById("la-tokens").innerHTML =
      "<div class='la-tokens' style='font-family: monospace; white-space: pre-wrap; line-height: 1.7'>" + spans.join("") + "</div>";
  }
  function selectHead(layer, head) {
    layer = Number(layer); head = Number(head);
    if (!(Number.isInteger(layer) && Number.isInteger(head) && layer >= 0 && layer < P.n_layers && head >= 0 && head < P.n_heads)) {
      throw new Error(`head L${layer}H${head} does not exist: layers 0-${P.n_layers - 1}, heads 0-${P.n_heads - 1}`);
    }
    state.layer = layer; state.head = head;
    const traces = Array.from({ length: P.n_clips }, (_, k) => P.n_clips + k);
    Plotly.restyle("la-timeline", { y: clipAttention(layer, head) }, traces);
    const perClip = clipAttention(layer, head).map((w) => w.reduce((s, v) => s + v, 0));  // as charts.head_title
    const mass = perClip.reduce((s, v) => s + v, 0).toFixed(3);
    const clips = perClip.map((m, k) => `Audio ${k + 1} ${m.toFixed(3)}`).join(", ");
    Plotly.relayout("la-timeline", { "title.text": fill(P.titles.head, { layer, head, mass, clips }) });
    Plotly.restyle("la-heads", { x: [[head]], y: [[layer]] }, [1]);
    document.getElementById("la-head").value = `${layer},${head}`;
    renderTokens(layer, head);
  }

  // ---- steering: softmax over the options of unembed(ln_final(h_final + beta * direction)), as ExplorerData
  function direction(layers) {
    const d = A.deltas.shape[1];
    const out = new Float64Array(d);
    for (const layer of layers) for (let i = 0; i < d; i++) out[i] += A.deltas.values[layer * d + i] / layers.length;
    return out;
  }
  function optionProbabilities(h, push) {
    const d = h.length;
    const x = Array.from(h, (v, i) => v + push[i]);
    const scale = Math.sqrt(x.reduce((s, v) => s + v * v, 0) / d + A.eps);
    const logits = Array.from(A.b_U.values, (b, o) => {  // Array.from: float64, not a Float32Array
      let sum = b;
      for (let i = 0; i < d; i++) sum += A.unembed.values[o * d + i] * (x[i] / scale) * A.ln_w.values[i];
      return sum;
    });
    const top = Math.max(...logits);
    const exp = Array.from(logits, (v) => Math.exp(v - top));
    const total = exp.reduce((s, v) => s + v, 0);
    return exp.map((v) => v / total);
  }
  function probabilities(beta, layers) {
    const push = direction(layers).map((v) => beta * v);
    return [optionProbabilities(A.h_audio.values, push), optionProbabilities(A.h_silence.values, push)];
  }
  function updateOptions() {
    const [audio, silence] = probabilities(state.beta, state.layers);
    Plotly.restyle("la-options", { y: [audio, silence] }, [0, 1]);
    Plotly.relayout("la-options", { "title.text": fill(P.titles.options, { beta: state.beta, layers: state.layers.join(", ") }) });
    document.getElementById("la-beta-value").textContent = String(state.beta);
  }
  function setBeta(beta) {
    if (!Number.isFinite(Number(beta))) throw new Error(`beta must be a finite number, not ${beta}`);
    state.beta = Number(beta);
    document.getElementById("la-beta").value = state.beta;
    updateOptions();
  }
  function setLayers(layers) {
    const chosen = Array.from(new Set(layers.map(Number))).sort((a, b) => a - b);
    if (!chosen.length || chosen.some((l) => !(l >= 0 && l < P.n_layers))) throw new Error(`source layers must be a non-empty selection of 0-${P.n_layers - 1}`);
    state.layers = chosen;
    document.querySelectorAll("#la-layers input").forEach((box) => { box.checked = chosen.includes(Number(box.value)); });
    updateOptions();
  }

  // ---- build the page
  const config = { displaylogo: false, responsive: false };
  const small = { ...config, displayModeBar: false };  // no toolbar over the small charts' titles
  Plotly.newPlot("la-timeline", P.figures.timeline.data, P.figures.timeline.layout, config);
  Plotly.newPlot("la-heads", P.figures.heads.data, P.figures.heads.layout, small);
  Plotly.newPlot("la-options", P.figures.options.data, P.figures.options.layout, small);
  document.getElementById("la-heads").on("plotly_click", (event) => {
    const point = event.points[0];
    if (point.curveNumber === 0) selectHead(point.y, point.x);
  });
  const menu = document.getElementById("la-head");
  for (let layer = 0; layer < P.n_layers; layer++) {
    for (let head = 0; head < P.n_heads; head++) menu.add(new Option(`L${layer}H${head}`, `${layer},${head}`));
  }
  menu.addEventListener("change", () => selectHead(...menu.value.split(",")));
  const slider = document.getElementById("la-beta");
  [slider.min, slider.max, slider.step] = P.beta_range;
  slider.addEventListener("input", () => setBeta(slider.value));
  const boxes = document.getElementById("la-layers");
  for (let layer = 0; layer < P.n_layers; layer++) {
    const label = document.createElement("label");
    label.innerHTML = `<input type='checkbox' value='${layer}'> L${layer}`;
    boxes.appendChild(label);
  }
  boxes.addEventListener("change", (event) => {
    const chosen = Array.from(boxes.querySelectorAll("input:checked"), (box) => Number(box.value));
    if (!chosen.length) { event.target.checked = true; return; }  // the direction needs at least one layer
    setLayers(chosen);
  });
  selectHead(state.layer, state.head);
  setLayers(state.layers);
  setBeta(state.beta);

  // ---- test hooks: drive the page and read back what it shows
  window.__lens_select_head = selectHead;
  window.__lens_set_beta = setBeta;
  window.__lens_set_layers = setLayers;
  window.__lens_state = () => {
    const timeline = document.getElementById("la-timeline").data;
    const options = document.getElementById("la-options").data;
    return {
      layer: state.layer, head: state.head, beta: state.beta, layers: state.layers,
      attention: timeline.slice(P.n_clips).map((trace) => Array.from(trace.y)),
      marker: [document.getElementById("la-heads").data[1].y[0], document.getElementById("la-heads").data[1].x[0]],
      options: options.slice(0, 2).map((trace) => Array.from(trace.y)),
      tokens: document.getElementById("la-tokens").innerHTML,
      title: document.getElementById("la-timeline").layout.title.text,
    };
  };
})();
