// The page of `seq2seq serve`: it only calls this server's JSON API (see /openapi.json).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

function status(text, isError = false) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

async function api(path, body, init = {}) {
  const opts = body === undefined ? init : {
    method: "POST",
    headers: body instanceof FormData ? {} : { "content-type": "application/json" },
    body: body instanceof FormData ? body : JSON.stringify(body),
    ...init,
  };
  const r = await fetch(path, opts);
  const json = await r.json().catch(() => null);
  if (!r.ok) throw new Error(json?.error?.message ?? `${path}: HTTP ${r.status}`);
  return json;
}

// ---- tabs (WAI-ARIA tabs: arrows, Home and End move between them) ----
function tabs() {
  const list = [...document.querySelectorAll('[role="tab"]')].filter((t) => !t.hidden);
  return list;
}

function selectTab(tab) {
  for (const t of document.querySelectorAll('[role="tab"]')) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
  }
}

function setUpTabs() {
  for (const t of document.querySelectorAll('[role="tab"]')) {
    t.addEventListener("click", () => selectTab(t));
    t.addEventListener("keydown", (e) => {
      const list = tabs();
      const i = list.indexOf(t);
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: list.length - 1 }[e.key];
      if (next === undefined) return;
      e.preventDefault();
      const target = list[(next + list.length) % list.length];
      selectTab(target);
      target.focus();
    });
  }
}

// ---- models ----
async function loadModels() {
  const { models } = await api("/v1/models");
  for (const select of document.querySelectorAll("select.model")) {
    const mine = models.filter((m) => m.task === select.dataset.task);
    for (const m of mine) select.add(new Option(m.name, m.name));
    const panel = select.closest('[role="tabpanel"]');
    document.getElementById(panel.getAttribute("aria-labelledby")).hidden = mine.length === 0;
  }
  const first = tabs()[0];
  if (first) selectTab(first);
  else status("This server has no models.", true);
}

// ---- translate ----
let translations = [];

function heatmap(el, a) {
  el.replaceChildren();
  if (!a) return;
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  head.insertCell().outerHTML = "<th></th>";
  for (const s of a.source_tokens) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = s;
    head.append(th);
  }
  const body = table.createTBody();
  a.tokens.forEach((tok, i) => {
    const row = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = tok;
    row.append(th);
    (a.weights[i] ?? []).forEach((w, j) => {
      const td = row.insertCell();
      td.style.setProperty("--w", w.toFixed(3));
      td.title = `${tok} → ${a.source_tokens[j]}: ${w.toFixed(3)}`;
      td.dataset.w = w;
    });
  });
  el.append(table);
}

function chooseTranslation(i) {
  document.querySelectorAll("#nbest button").forEach((b, j) => b.setAttribute("aria-pressed", String(i === j)));
  heatmap($("#heatmap"), translations[i]?.attention);
}

async function translate(e) {
  e.preventDefault();
  const f = new FormData(e.target);
  const strategy = f.get("strategy");
  const body = { model: f.get("model"), texts: [f.get("text")], strategy, attention: true };
  if (strategy === "beam") {
    body.beam_size = Number(f.get("beam_size"));
    body.n_best = Math.min(Number(f.get("n_best")), body.beam_size);
  }
  await busy(e.target, async () => {
    const { translations: [h] } = await api("/v1/translate", body);
    translations = h.n_best ?? [{ text: h.text, score: h.score, attention: h.attention }];
    const list = $("#nbest");
    list.replaceChildren(...translations.map((t, i) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.innerHTML = '<span class="text"></span><span class="score"></span>';
      $(".text", b).textContent = t.text;
      $(".score", b).textContent = t.score.toFixed(3);
      b.addEventListener("click", () => chooseTranslation(i));
      li.append(b);
      return li;
    }));
    chooseTranslation(0);
  });
}

// ---- caption ----
let captionAttention = null;

function drawOverlay(i) {
  const canvas = $("#overlay");
  const ctx = canvas.getContext("2d");
  document.querySelectorAll("#words button").forEach((b, j) => b.setAttribute("aria-pressed", String(i === j)));
  const a = captionAttention;
  if (!a || i === null) {
    canvas.width = 1;
    canvas.height = 1;
    ctx.clearRect(0, 0, 1, 1);
    return;
  }
  const [rows, cols] = a.grid;
  canvas.width = cols;
  canvas.height = rows;
  const w = a.weights[i];
  const max = Math.max(...w, 1e-9);
  const img = ctx.createImageData(cols, rows);
  w.forEach((v, k) => {
    // Darken what the word did not look at; the browser's scaling smooths the cells.
    img.data[4 * k + 3] = Math.round(200 * (1 - v / max));
  });
  ctx.putImageData(img, 0, 0);
}

async function caption(file) {
  if (!file) return;
  const form = $("#caption-form");
  const pic = $("#picture");
  if (pic.src) URL.revokeObjectURL(pic.src);
  pic.src = URL.createObjectURL(file);
  const body = new FormData();
  body.append("model", new FormData(form).get("model"));
  body.append("attention", "true");
  body.append("image", file, file.name);
  await busy(form, async () => {
    const { captions: [c] } = await api("/v1/caption", body);
    if (c.error) throw new Error(c.error.message);
    $("#caption-text").textContent = c.text;
    captionAttention = c.attention;
    const words = (c.attention?.tokens ?? []).map((tok, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = tok;
      b.addEventListener("click", () => drawOverlay(i));
      b.addEventListener("focus", () => drawOverlay(i));
      return b;
    });
    $("#words").replaceChildren(...words);
    drawOverlay(null);
  });
}

function setUpCaption() {
  const input = $("#image");
  input.addEventListener("change", () => caption(input.files[0]));
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    caption(e.dataTransfer.files[0]);
  });
}

// ---- generate ----
function samplingOptions() {
  const f = new FormData($("#generate-form"));
  return {
    model: f.get("model"),
    prompt: f.get("prompt"),
    temperature: Number(f.get("temperature")),
    top_k: Number(f.get("top_k")),
    top_p: Number(f.get("top_p")),
  };
}

function showSliders() {
  const o = samplingOptions();
  $("#t-out").textContent = o.temperature.toFixed(2);
  $("#k-out").textContent = o.top_k === 0 ? "off" : String(o.top_k);
  $("#p-out").textContent = o.top_p.toFixed(2);
}

function barCell(row, p) {
  const td = row.insertCell();
  td.className = p > 0 ? "bar" : "bar zero";
  td.style.setProperty("--p", p);
  td.dataset.p = p;
  const span = document.createElement("span");
  span.textContent = p >= 0.001 || p === 0 ? p.toFixed(3) : p.toExponential(1);
  td.append(span);
}

let distRequest = 0;
async function distribution() {
  const mine = ++distRequest;
  const o = samplingOptions();
  try {
    const { candidates } = await api("/v1/next-token", { ...o, top: 10 });
    if (mine !== distRequest) return; // a later slider position already asked
    const body = $("#dist tbody");
    const rows = candidates.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.token = c.token;
      const name = tr.insertCell();
      name.textContent = JSON.stringify(c.text).slice(1, -1);
      for (const p of [c.p, c.p_temperature, c.p_top_k, c.p_top_p]) barCell(tr, p);
      return tr;
    });
    body.replaceChildren(...rows);
    $("#dist").dataset.for = JSON.stringify(o);
  } catch (err) {
    status(err.message, true);
  }
}

let distTimer;
function distributionSoon() {
  showSliders();
  clearTimeout(distTimer);
  distTimer = setTimeout(distribution, 80);
}

// Server-Sent Events over a POST (EventSource only GETs).
async function stream(body, el) {
  el.textContent = "";
  delete el.dataset.done;
  let tokens = 0;
  const r = await fetch("/v1/generate?stream=true", {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify(body),
  });
  if (!r.ok) {
    const json = await r.json().catch(() => null);
    throw new Error(json?.error?.message ?? `HTTP ${r.status}`);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      const msg = JSON.parse(data.join("\n"));
      if (event === "token") {
        el.textContent = msg.text;
        el.dataset.tokens = ++tokens;
      }
      else if (event === "done") {
        el.textContent = msg.samples[0].text;
        el.dataset.done = "true";
      } else if (event === "error") throw new Error(msg.error.message);
      el.scrollTop = el.scrollHeight;
    }
  }
}

async function generate(e) {
  e.preventDefault();
  const f = new FormData(e.target);
  const o = samplingOptions();
  const common = { model: o.model, prompt: o.prompt, max_tokens: Number(f.get("max_tokens")) };
  await busy(e.target, () => Promise.all([
    stream({ ...common, strategy: "greedy" }, $("#greedy")),
    stream({ ...common, strategy: "sample", temperature: o.temperature, top_k: o.top_k,
      top_p: o.top_p, seed: Number(f.get("seed")) }, $("#sampled")),
  ]));
}

// ---- shared ----
async function busy(form, work) {
  const button = $('button[type="submit"]', form);
  if (button) button.disabled = true;
  status("Working…");
  try {
    await work();
    status("");
  } catch (err) {
    status(err.message, true);
  } finally {
    if (button) button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  setUpTabs();
  setUpCaption();
  $("#translate-form").addEventListener("submit", translate);
  // In the text box Enter is a new line; Ctrl+Enter (⌘+Enter) translates.
  $("#src").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      $("#translate-form").requestSubmit();
    }
  });
  $("#generate-form").addEventListener("submit", generate);
  for (const id of ["temperature", "top_k", "top_p", "prompt"]) {
    $("#" + id).addEventListener("input", distributionSoon);
  }
  $("#generate-form .model").addEventListener("change", distributionSoon);
  try {
    await loadModels();
    if ($("#generate-form .model").options.length) distributionSoon();
    document.body.dataset.ready = "true";
  } catch (err) {
    status(err.message, true);
  }
});
